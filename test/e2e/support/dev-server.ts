import { WranglerDev } from "../../../tools/wrangler-dev.ts";

export { freePort } from "../../../tools/wrangler-dev.ts";

/** A running `wrangler dev`: `url`, `output()`, `stop()`, `stateDir`, `runtimeRss()` (bytes). */
export type DevServer = WranglerDev;

/**
 * Runs `wrangler dev` exactly as a developer does, with extra `--var` settings,
 * its own port and a throwaway state directory, and waits until it serves.
 */
export function startDevServer(vars: Record<string, string>): Promise<DevServer> {
  return WranglerDev.start({ vars, stateDirPrefix: "edgechat-e2e-" });
}
