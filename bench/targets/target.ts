/**
 * A server under test. Scenarios only talk to this interface, so each runs the same
 * code against the Worker under wrangler dev and against the bare ws server.
 */
import type { BenchUser, ServerApi } from "../client.ts";
import type { ServerProcess } from "../lib/process-stats.ts";

export type TargetName = "workerd" | "bare";

export interface Target {
  readonly name: TargetName;
  /** One line for the report, e.g. "wrangler dev 4.164.0 (workerd 2026-11-17)". */
  readonly description: string;
  /** The REST API, for the Worker only (the bare server has no history or accounts). */
  readonly api: ServerApi | null;
  /** Processes whose CPU is reported per scenario (role -> pid). */
  readonly processes: readonly ServerProcess[];
  /** The process that holds the sockets: its resident memory is the idle-socket figure. */
  readonly memoryPid: number;
  /** The Worker's inspector (wrangler's proxy of it), for probes and profiles. */
  readonly inspectorPort?: number;
  /** Time spent creating users and chats (not part of any figure). */
  readonly setup: { users: number; userMs: number; chats: number; chatMs: number };

  socketUrl(chatId: string, after?: number): string;
  /** The device stream (`GET /chat`): every chat of the account on one socket. */
  streamUrl(): string;
  /** The first `count` users of this target's pool, logging in more when needed. */
  users(count: number): Promise<BenchUser[]>;
  /**
   * `count` users logged in now, outside the pool, so in no chat yet: for scenarios
   * whose figures depend on exactly which chats an account has.
   */
  freshUsers(count: number): Promise<BenchUser[]>;
  /** A group chat; `members[0]` creates it (and is its admin). */
  createGroup(members: readonly BenchUser[], name: string): Promise<string>;
  createDirect(a: BenchUser, b: BenchUser): Promise<string>;
  stop(): Promise<void>;
}
