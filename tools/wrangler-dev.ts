/**
 * Starts the Worker under `wrangler dev` the way a developer does, for the end-to-end
 * tests and the benchmark: its own ports, extra `--var` settings, a throwaway state
 * directory, and a stop that ends every process it started. wrangler dev runs two
 * workerd processes: a proxy on the public port and the user runtime (started with
 * `--inspector-addr`), where the Worker and every Durable Object run on one JS thread.
 * Linux only for the process lookups (/proc).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The project root, where wrangler.toml is. */
export const PROJECT_DIR = new URL("..", import.meta.url).pathname;
/** Output kept for error messages (the end of it). */
const OUTPUT_LIMIT = 64 * 1024;

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

export type WranglerDevOptions = {
  /** `--var` settings, over wrangler.toml's. */
  vars: Record<string, string>;
  /** How long to wait for it to serve (default 90 s). */
  startTimeoutMs?: number;
  /** The start of the state directory's name, under the system's temp directory. */
  stateDirPrefix?: string;
  /**
   * Raise the open-file limit (`ulimit -n`) of wrangler dev and workerd to this, or
   * to the hard limit when this is not allowed. Unset: the inherited limit.
   */
  openFiles?: number;
};

/** The workerd processes of a running `wrangler dev` (undefined while not found). */
export type WorkerdProcesses = { runtime: number | undefined; proxy: number | undefined };

export class WranglerDev {
  readonly url: string;
  readonly port: number;
  /** wrangler's inspector port (its proxy to the user runtime's inspector). */
  readonly inspectorPort: number;
  /** Where the runtime keeps this server's state (one SQLite file per Durable Object). */
  readonly stateDir: string;
  /** What showed it was serving, for reports. */
  readySignal = "";
  readonly #child: ChildProcess;
  #output = "";

  private constructor(child: ChildProcess, port: number, inspectorPort: number, stateDir: string) {
    this.#child = child;
    this.port = port;
    this.inspectorPort = inspectorPort;
    this.stateDir = stateDir;
    this.url = `http://127.0.0.1:${port}`;
    const keep = (chunk: Buffer): void => {
      this.#output = (this.#output + chunk.toString()).slice(-OUTPUT_LIMIT);
    };
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
  }

  /** Starts `wrangler dev` and waits until it serves; stops it again if it does not. */
  static async start(options: WranglerDevOptions): Promise<WranglerDev> {
    const [port, inspectorPort] = [await freePort(), await freePort()];
    const stateDir = mkdtempSync(join(tmpdir(), options.stateDirPrefix ?? "edgechat-dev-"));
    const wrangler = [
      "npx", "wrangler", "dev",
      "--port", String(port), "--ip", "127.0.0.1",
      // Its own inspector port: the default (9229) may be taken by a developer's session.
      "--inspector-port", String(inspectorPort),
      "--persist-to", stateDir,
      "--log-level", "warn",
    ];
    for (const [key, value] of Object.entries(options.vars)) wrangler.push("--var", `${key}:${value}`);
    // `exec` keeps the process (and so the process group) ours to stop.
    const [command, ...args] =
      options.openFiles === undefined
        ? wrangler
        : ["bash", "-c", `ulimit -n ${options.openFiles} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"`, "bash", ...wrangler];
    const child = spawn(command!, args, {
      cwd: PROJECT_DIR,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true, // its own process group: stop() ends npx, wrangler and both workerd processes
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true", NO_COLOR: "1" },
    });
    const server = new WranglerDev(child, port, inspectorPort, stateDir);
    try {
      await server.#waitUntilServing(options.startTimeoutMs ?? 90_000);
    } catch (error) {
      await server.stop();
      throw error;
    }
    return server;
  }

  /** The end of what wrangler dev printed. */
  output(): string {
    return this.#output;
  }

  get alive(): boolean {
    return this.#child.exitCode === null;
  }

  /**
   * The workerd processes in this server's process group, told apart by their flags.
   * Looked up each time: wrangler restarts the runtime, with a new pid, if it dies.
   */
  workerdProcesses(): WorkerdProcesses {
    const workerds = groupPids(this.#child.pid!).filter((pid) => /\bworkerd serve\b/.test(commandLine(pid)));
    const runtime = workerds.find((pid) => commandLine(pid).includes("--inspector-addr"));
    return { runtime, proxy: workerds.find((pid) => pid !== runtime) };
  }

  /** The workerd processes, once the runtime is there (waiting up to `timeoutMs`). */
  async runtimeProcesses(timeoutMs = 5_000): Promise<WorkerdProcesses & { runtime: number }> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const found = this.workerdProcesses();
      if (found.runtime !== undefined) return { runtime: found.runtime, proxy: found.proxy };
      if (performance.now() > deadline) throw new Error(`no workerd runtime (the process with --inspector-addr) under wrangler dev:\n${this.#output}`);
      await sleep(100);
    }
  }

  /** Resident memory of the runtime that runs the Worker and its objects, in bytes. */
  runtimeRss(): number {
    const { runtime } = this.workerdProcesses();
    if (runtime === undefined) throw new Error(`no workerd runtime in process group ${this.#child.pid}`);
    const kib = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${runtime}/status`, "utf8"))?.[1];
    if (!kib) throw new Error(`no VmRSS for process ${runtime}`);
    return Number(kib) * 1024;
  }

  /** Ends every process of the server (SIGTERM, then SIGKILL) and removes its state. */
  async stop(): Promise<void> {
    const pid = this.#child.pid;
    if (pid !== undefined && this.#child.exitCode === null) {
      const exited = new Promise((resolve) => this.#child.once("exit", resolve));
      signalGroup(pid, "SIGTERM");
      const timer = setTimeout(() => signalGroup(pid, "SIGKILL"), 5_000);
      await Promise.race([exited, sleep(8_000)]);
      clearTimeout(timer);
    }
    // workerd may outlive npx for a moment: make sure our group is gone.
    if (pid !== undefined) signalGroup(pid, "SIGKILL");
    rmSync(this.stateDir, { recursive: true, force: true });
  }

  /**
   * "Ready on http://..." is an info line, so `--log-level warn` hides it: waits for
   * whichever comes first, the line or a 200 from /healthz.
   */
  async #waitUntilServing(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      if (this.#child.exitCode !== null) throw new Error(`wrangler dev exited with ${this.#child.exitCode}:\n${this.#output}`);
      if (/\bReady on\b/.test(this.#output)) {
        this.readySignal = '"Ready" line';
        return;
      }
      try {
        const response = await fetch(`${this.url}/healthz`, { signal: AbortSignal.timeout(2_000) });
        if (response.ok) {
          this.readySignal = "GET /healthz 200 (the Ready line is hidden at --log-level warn)";
          return;
        }
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    throw new Error(`wrangler dev did not serve within ${timeoutMs} ms:\n${this.#output}`);
  }
}

/** The processes of a process group, from /proc. */
function groupPids(groupId: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // The command name (field 2) may hold spaces: split after its closing parenthesis.
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]) === groupId) pids.push(Number(entry));
    } catch {
      // the process ended meanwhile
    }
  }
  return pids;
}

/** The command line of a process, or "" when it is gone. */
function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ").trim();
  } catch {
    return "";
  }
}

/** Signals our own process group (we started it detached), never anything else. */
function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
