/**
 * The real server: the Worker under `wrangler dev`, started the way a developer
 * does, with development vars, the send rate limit lifted, and a throwaway state
 * directory. wrangler dev runs two workerd processes: a proxy on the public port and
 * the user runtime (started with `--inspector-addr`) where the Worker and every
 * Durable Object run, on one JS thread.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { PROJECT_DIR, WranglerDev } from "../../tools/wrangler-dev.ts";
import { ServerApi, loginNewUser, mapPool, phoneNumbers, withRetries, type BenchUser } from "../client.ts";
import { openFileLimit, type ServerProcess } from "../lib/process-stats.ts";
import type { CreateChatRequest } from "../../src/client/index.ts";
import type { Target } from "./target.ts";

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
  readonly #server: WranglerDev;
  readonly #users: BenchUser[] = [];
  readonly #nextPhone = phoneNumbers();

  private constructor(server: WranglerDev) {
    this.#server = server;
    this.inspectorPort = server.inspectorPort;
    this.api = new ServerApi(server.url);
  }

  /**
   * Starts wrangler dev with development vars and the send rate limit lifted.
   * workerd died at ~1,900 client sockets with "accept: Too many open files" at the
   * default limit, so the open-file limit is raised (to the hard limit when 65,535 is
   * not allowed) for the whole tree.
   */
  static async start(options: WranglerDevOptions): Promise<WranglerDevTarget> {
    const startedAt = performance.now();
    const server = await WranglerDev.start({
      vars: {
        DEV_MODE: "true",
        OTP_SENDER: "console",
        SEND_RATE_PER_SECOND: "100000",
        SEND_BURST: "100000",
        ACCOUNT_SEND_RATE_PER_SECOND: "100000",
        ACCOUNT_SEND_BURST: "100000",
      },
      startTimeoutMs: options.startTimeoutMs,
      stateDirPrefix: "edgechat-bench-",
      openFiles: WANTED_OPEN_FILES,
    });
    const target = new WranglerDevTarget(server);
    try {
      await target.#findProcesses();
    } catch (error) {
      await target.stop();
      throw error;
    }
    target.launch.readySignal = server.readySignal;
    target.launch.startMs = Math.round(performance.now() - startedAt);
    return target;
  }

  /** The two workerd processes: the user runtime (the memory figure) and the proxy. */
  async #findProcesses(): Promise<void> {
    const { runtime, proxy } = await this.#server.runtimeProcesses();
    this.memoryPid = runtime;
    this.processes = [{ role: "workerd-runtime", pid: runtime }];
    if (proxy !== undefined) this.processes.push({ role: "workerd-proxy", pid: proxy });
    this.launch.openFileLimit = openFileLimit(runtime);
    this.launch.openFileLimitNote =
      this.launch.openFileLimit >= WANTED_OPEN_FILES
        ? `ulimit -n raised to ${this.launch.openFileLimit} for wrangler dev and workerd`
        : `ulimit -n ${WANTED_OPEN_FILES} refused (hard limit); raised to the hard limit ${this.launch.openFileLimit} for wrangler dev and workerd`;
    this.launch.workerdVersion = workerdVersion(runtime);
    this.description = `wrangler dev ${packageVersion("wrangler")} (workerd ${this.launch.workerdVersion}), --persist-to a temp dir`;
  }

  /** The user runtime again: wrangler restarts it if it dies, with a new pid. */
  refreshProcesses(): Promise<void> {
    return this.#findProcesses();
  }

  get alive(): boolean {
    return this.#server.alive;
  }

  get recentOutput(): string {
    return this.#server.output();
  }

  socketUrl(chatId: string, after?: number): string {
    return `ws://127.0.0.1:${this.#server.port}/chat/${chatId}${after === undefined ? "" : `?after=${after}`}`;
  }

  streamUrl(): string {
    return `ws://127.0.0.1:${this.#server.port}/chat`;
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
      this.setup.users += created.length;
      this.setup.userMs += performance.now() - startedAt;
    }
    const users = this.#users.slice(0, count);
    await this.#refreshOldTokens(users);
    return users;
  }

  async freshUsers(count: number): Promise<BenchUser[]> {
    const startedAt = performance.now();
    const phones = Array.from({ length: count }, () => this.#nextPhone());
    const created = await mapPool(phones, LOGIN_CONCURRENCY, (phone) => loginNewUser(this.api, phone));
    this.setup.users += created.length;
    this.setup.userMs += performance.now() - startedAt;
    return created;
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

  stop(): Promise<void> {
    return this.#server.stop();
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
