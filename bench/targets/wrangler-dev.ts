/**
 * The real server: the Worker under `wrangler dev`, started the way a developer
 * does, with development vars, the send rate limit lifted, and a throwaway state
 * directory. wrangler dev runs two workerd processes: a proxy on the public port and
 * the user runtime (started with `--inspector-addr`) where the Worker and every
 * Durable Object run, on one JS thread.
 */
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { freePort } from "../../test/e2e/support/dev-server.ts"; // shared with the e2e tests
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ServerApi, loginNewUser, mapPool, phoneNumbers, withRetries, type BenchUser } from "../client.ts";
import { commandLine, descendantPids, openFileLimit, type ServerProcess } from "../lib/process-stats.ts";
import { sleep } from "../lib/open-loop.ts";
import type { CreateChatRequest } from "../../src/client/index.ts";
import type { Target } from "./target.ts";

const PROJECT_DIR = new URL("../..", import.meta.url).pathname;
/** Asked for; the hard limit may be lower (then the hard limit is used, and reported). */
const WANTED_OPEN_FILES = 65_535;
/** Access tokens live at most 900 s: refresh those older than this before use. */
const TOKEN_REFRESH_AGE_MS = 10 * 60_000;
/** Concurrent logins while creating users (each is an OTP request then a login). */
const LOGIN_CONCURRENCY = 16;

export type WranglerDevOptions = { startTimeoutMs: number };

export class WranglerDevTarget implements Target {
  readonly name = "workerd" as const;
  description = "wrangler dev";
  readonly api: ServerApi;
  processes: ServerProcess[] = [];
  memoryPid = 0;
  readonly setup = { users: 0, userMs: 0, chats: 0, chatMs: 0 };
  /** The inspector (wrangler's proxy to the user runtime), for the eviction probe. */
  readonly inspectorPort: number;
  /** Figures about the launch itself, for the report. */
  readonly launch = {
    startMs: 0,
    readySignal: "",
    openFileLimit: Number.NaN,
    openFileLimitNote: "",
    workerdVersion: "",
    clientIpPassThrough: "not checked",
  };
  readonly #child: ChildProcess;
  readonly #stateDir: string;
  readonly #port: number;
  readonly #users: BenchUser[] = [];
  readonly #nextPhone = phoneNumbers();
  #output = "";

  private constructor(child: ChildProcess, port: number, inspectorPort: number, stateDir: string) {
    this.#child = child;
    this.#port = port;
    this.inspectorPort = inspectorPort;
    this.#stateDir = stateDir;
    this.api = new ServerApi(`http://127.0.0.1:${port}`);
    const keep = (chunk: Buffer): void => {
      this.#output = (this.#output + chunk.toString()).slice(-64 * 1024);
    };
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
  }

  static async start(options: WranglerDevOptions): Promise<WranglerDevTarget> {
    const startedAt = performance.now();
    const [port, inspectorPort] = [await freePort(), await freePort()];
    const stateDir = mkdtempSync(join(tmpdir(), "edgechat-bench-"));
    const wrangler = [
      "npx", "wrangler", "dev",
      "--port", String(port), "--ip", "127.0.0.1",
      // Its own inspector port: the default (9229) may be taken by a developer's session.
      "--inspector-port", String(inspectorPort),
      "--log-level", "warn",
      "--var", "DEV_MODE:true",
      "--var", "OTP_SENDER:console",
      "--var", "SEND_RATE_PER_SECOND:100000",
      "--var", "SEND_BURST:100000",
      "--var", "ACCOUNT_SEND_RATE_PER_SECOND:100000",
      "--var", "ACCOUNT_SEND_BURST:100000",
      "--persist-to", stateDir,
    ];
    // workerd died at ~1,900 client sockets with "accept: Too many open files" at the
    // default limit: raise it (to the hard limit when 65,535 is not allowed) for the
    // whole tree. `exec` keeps the process group ours to stop.
    const script = `ulimit -n ${WANTED_OPEN_FILES} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"`;
    const child = spawn("bash", ["-c", script, "bash", ...wrangler], {
      cwd: PROJECT_DIR,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true, // its own process group: stop() ends npx, wrangler and both workerd processes
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true", NO_COLOR: "1" },
    });
    const target = new WranglerDevTarget(child, port, inspectorPort, stateDir);
    try {
      await target.#waitUntilServing(options.startTimeoutMs);
      await target.#findProcesses();
    } catch (error) {
      await target.stop();
      throw error;
    }
    target.launch.startMs = Math.round(performance.now() - startedAt);
    return target;
  }

  /**
   * "Ready on http://..." is an info line, so `--log-level warn` hides it: wait for
   * whichever comes first, the line or a 200 from /healthz.
   */
  async #waitUntilServing(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      if (this.#child.exitCode !== null) throw new Error(`wrangler dev exited with ${this.#child.exitCode}:\n${this.#output}`);
      if (/\bReady on\b/.test(this.#output)) {
        this.launch.readySignal = '"Ready" line';
        return;
      }
      try {
        const response = await fetch(`${this.api.baseUrl}/healthz`, { signal: AbortSignal.timeout(2_000) });
        if (response.ok) {
          this.launch.readySignal = "GET /healthz 200 (the Ready line is hidden at --log-level warn)";
          return;
        }
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    throw new Error(`wrangler dev did not serve within ${timeoutMs} ms:\n${this.#output}`);
  }

  /** The two workerd processes under our process group, told apart by their flags. */
  async #findProcesses(): Promise<void> {
    for (let attempt = 0; attempt < 50; attempt++) {
      const workerds = descendantPids(this.#child.pid!).filter((pid) => /\bworkerd serve\b/.test(commandLine(pid)));
      const userRuntime = workerds.find((pid) => commandLine(pid).includes("--inspector-addr"));
      const proxy = workerds.find((pid) => pid !== userRuntime);
      if (userRuntime !== undefined) {
        this.memoryPid = userRuntime;
        this.processes = [{ role: "workerd-runtime", pid: userRuntime }];
        if (proxy !== undefined) this.processes.push({ role: "workerd-proxy", pid: proxy });
        this.launch.openFileLimit = openFileLimit(userRuntime);
        this.launch.openFileLimitNote =
          this.launch.openFileLimit >= WANTED_OPEN_FILES
            ? `ulimit -n raised to ${this.launch.openFileLimit} for wrangler dev and workerd`
            : `ulimit -n ${WANTED_OPEN_FILES} refused (hard limit); raised to the hard limit ${this.launch.openFileLimit} for wrangler dev and workerd`;
        this.launch.workerdVersion = workerdVersion(userRuntime);
        this.description = `wrangler dev ${packageVersion("wrangler")} (workerd ${this.launch.workerdVersion}), --persist-to a temp dir`;
        return;
      }
      await sleep(100);
    }
    throw new Error("could not find the workerd user runtime (the process with --inspector-addr) under wrangler dev");
  }

  /** The user runtime again: wrangler restarts it if it dies, with a new pid. */
  refreshProcesses(): Promise<void> {
    return this.#findProcesses();
  }

  get alive(): boolean {
    return this.#child.exitCode === null;
  }

  get recentOutput(): string {
    return this.#output;
  }

  socketUrl(chatId: string, after?: number): string {
    return `ws://127.0.0.1:${this.#port}/chat/${chatId}${after === undefined ? "" : `?after=${after}`}`;
  }

  /**
   * Checks that the per-IP limit counts `cf-connecting-ip` (so distinct headers
   * really are distinct clients): 11 OTP requests from one address must end in a
   * 429 on the 11th (the limit is 10 per minute), and another address must pass.
   */
  async verifyClientIpPassThrough(): Promise<void> {
    const oneAddress = this.api.client({ clientIp: this.api.nextClientIp() });
    const statuses: number[] = [];
    for (let i = 0; i < 11; i++) {
      try {
        await oneAddress.requestOtp(this.#nextPhone());
        statuses.push(201);
      } catch (error) {
        statuses.push((error as { status?: number }).status ?? 0);
      }
    }
    const other = await this.api.client().requestOtp(this.#nextPhone()).then(() => 201, (error) => (error as { status?: number }).status ?? 0);
    const ok = statuses.slice(0, 10).every((s) => s === 201) && statuses[10] === 429 && other === 201;
    this.launch.clientIpPassThrough = ok
      ? "verified: 10 OTP requests from one cf-connecting-ip passed, the 11th got 429, another address passed"
      : `NOT verified: statuses ${statuses.join(",")} then ${other} from another address`;
  }

  async users(count: number): Promise<BenchUser[]> {
    if (this.#users.length < count) {
      const startedAt = performance.now();
      const phones = Array.from({ length: count - this.#users.length }, () => this.#nextPhone());
      const created = await mapPool(phones, LOGIN_CONCURRENCY, (phone) => loginNewUser(this.api, phone));
      this.#users.push(...created);
      this.setup.users = this.#users.length;
      this.setup.userMs += performance.now() - startedAt;
    }
    const users = this.#users.slice(0, count);
    await this.#refreshOldTokens(users);
    return users;
  }

  async #refreshOldTokens(users: BenchUser[]): Promise<void> {
    const stale = users.filter((user) => performance.now() - user.issuedAt > TOKEN_REFRESH_AGE_MS);
    if (stale.length === 0) return;
    const startedAt = performance.now();
    await mapPool(stale, LOGIN_CONCURRENCY, async (user) => {
      const session = await withRetries("token refresh", 3, () => user.api!.refresh());
      user.credentials = session.credentials;
      user.issuedAt = performance.now();
    });
    this.setup.userMs += performance.now() - startedAt;
  }

  async createGroup(members: readonly BenchUser[], name: string): Promise<string> {
    const [creator, ...others] = members;
    if (!creator) throw new Error("a group needs a creator");
    return this.#createChat(creator, { kind: "group", name, memberIds: others.map((m) => m.userId) });
  }

  createDirect(a: BenchUser, b: BenchUser): Promise<string> {
    return this.#createChat(a, { kind: "direct", peerId: b.userId });
  }

  async #createChat(creator: BenchUser, request: CreateChatRequest): Promise<string> {
    const startedAt = performance.now();
    const chat = await withRetries("chat creation", 3, () => creator.api!.createChat(request));
    this.setup.chats++;
    this.setup.chatMs += performance.now() - startedAt;
    return chat.chatId;
  }

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
    rmSync(this.#stateDir, { recursive: true, force: true });
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

function workerdVersion(pid: number): string {
  try {
    const binary = readlinkSync(`/proc/${pid}/exe`);
    return execFileSync(binary, ["--version"], { encoding: "utf8", timeout: 5_000 }).trim().replace(/^workerd\s+/, "");
  } catch {
    return "unknown";
  }
}

export function packageVersion(name: string): string {
  try {
    return (JSON.parse(readFileSync(join(PROJECT_DIR, "node_modules", name, "package.json"), "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
}
