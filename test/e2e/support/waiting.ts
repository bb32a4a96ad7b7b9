import type { ChatConnection, ChatEvent, ConnectionStatus } from "../../../src/client/index.ts";

/** Polls `condition` until it holds, failing with `what` after `timeoutMs`. */
export async function waitFor(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Collects what a connection delivers, for assertions. */
export function record(connection: ChatConnection): { events: ChatEvent[]; statuses: ConnectionStatus[] } {
  const events: ChatEvent[] = [];
  const statuses: ConnectionStatus[] = [];
  connection.on("event", (event) => events.push(event));
  connection.on("status", (status) => statuses.push(status));
  return { events, statuses };
}
