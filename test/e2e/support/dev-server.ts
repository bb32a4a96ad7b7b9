import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A free TCP port on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

export type DevServer = {
  url: string;
  output: () => string;
  stop: () => Promise<void>;
  /** Where the runtime keeps this server's state (one SQLite file per Durable Object). */
  stateDir: string;
  /** Resident memory of the runtime that runs the Worker and its objects, in bytes. */
  runtimeRss: () => number;
};

/**
 * Runs `wrangler dev` exactly as a developer does, with extra `--var` settings,
 * its own port and a throwaway state directory, and waits until it serves.
 */
export async function startDevServer(vars: Record<string, string>): Promise<DevServer> {
  const [port, inspectorPort] = [await freePort(), await freePort()];
  const stateDir = mkdtempSync(join(tmpdir(), "edgechat-e2e-"));
  const args = ["wrangler", "dev", "--port", String(port), "--ip", "127.0.0.1", "--inspector-port", String(inspectorPort), "--persist-to", stateDir, "--log-level", "warn"];
  for (const [key, value] of Object.entries(vars)) args.push("--var", `${key}:${value}`);
  const child = spawn("npx", args, { cwd: new URL("../../..", import.meta.url).pathname, stdio: ["ignore", "pipe", "pipe"], detached: true, env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" } });
  let output = "";
  child.stdout!.on("data", (chunk) => (output += chunk));
  child.stderr!.on("data", (chunk) => (output += chunk));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    await killTree(child);
    rmSync(stateDir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`wrangler dev exited with ${child.exitCode}:\n${output}`);
    try {
      const response = await fetch(`${url}/healthz`);
      if (response.ok) return { url, output: () => output, stop, stateDir, runtimeRss: () => residentBytes(runtimePid(child.pid!)) };
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`wrangler dev did not serve within 90 s:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/**
 * `wrangler dev` runs two workerd processes: a proxy on the public port and the user
 * runtime, the one started with `--inspector-addr`. Found among this server's process group.
 */
function runtimePid(groupId: number): number {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const processGroup = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
      const command = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      if (processGroup === groupId && command.includes("workerd") && command.includes("--inspector-addr")) return Number(entry);
    } catch {
      // the process ended meanwhile
    }
  }
  throw new Error(`no workerd runtime in process group ${groupId}`);
}

function residentBytes(pid: number): number {
  const kib = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  if (!kib) throw new Error(`no VmRSS for process ${pid}`);
  return Number(kib) * 1024;
}

async function killTree(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.pid === undefined) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  try {
    process.kill(-child.pid, "SIGTERM"); // the whole group: npx, wrangler and both workerd processes
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      // gone
    }
  }, 5000);
  await exited;
  clearTimeout(timer);
}
