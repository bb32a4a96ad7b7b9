import { describeError, log } from "../lib/log.ts";
import { recordFanOutDone } from "../lib/fan-out-probe.ts";
import { fanOutInterval } from "./fan-out-pacing.ts";
import type { ChatIndexUpdate } from "../protocol/index.ts";
import type { EventLog } from "./event-log.ts";
import type { Membership, PeriodRow } from "./membership.ts";

/** How long after a commit the alarm checks that every member's account heard of it (past the longest interval). */
export const FAN_OUT_RETRY_MS = 15_000;
/**
 * Accounts called at once. Each call is work queued on the runtime's one thread
 * (waking the account's object, its write); a few at a time keeps that queue short,
 * so frames of live chats never wait behind a whole round (measured: 32 at once cost a
 * 100-member chat's deliveries p99 77 ms at 100 msg/s, when a round woke 100 accounts).
 */
const CALLS_PER_CHUNK = 4;

export type AccountFanOutOptions = {
  log: () => EventLog;
  membership: () => Membership;
  /** Tells one account's User object about the chat (merged there by max(headSeq), then max(readSeq)). */
  notify: (userId: string, update: ChatIndexUpdate) => Promise<void>;
  /** Builds members' entries as of the head of the turn it is called in (see chatIndexEntries). */
  entries: () => (period: PeriodRow) => ChatIndexUpdate;
  /** Makes the retry deadline due no later than `at` (the object's scheduler). */
  retryNoLaterThan: (at: number) => void;
  /** `FAN_OUT_INTERVAL_MS`. */
  minIntervalMs: number;
};

/**
 * Brings every member's User object up to the chat's head: its chat list entry (head
 * seq, name, member count, last activity, whether the account is still a member, its
 * last visible message, read position and unread count: see chat-index-entry.ts).
 *
 * After each commit the pushes start at once (or, in a busy chat, once `fanOutInterval`
 * has passed since the last round started), one call per account behind the head, carrying the whole range it missed
 * (the entry at the head). Commits that land while a round is in flight or waiting
 * share the next round, so a busy chat makes one call per account per round, not per
 * message. Progress is one watermark per
 * membership period (`notifiedSeq`), advanced when the account acknowledges.
 *
 * Nothing is lost if the object dies mid-round: every commit also makes the retry
 * deadline due (in the same write, so it survives a crash), and the alarm runs a round
 * for the accounts still behind, again and again until none is.
 */
export class AccountFanOut {
  readonly #options: AccountFanOutOptions;
  /** The round in flight, if any. */
  #round: Promise<boolean> | null = null;
  /** A commit landed during the round in flight: run another after it. */
  #again = false;
  /** An urgent change is waiting: the next round does not wait for the interval. */
  #urgent = false;
  #lastStartedAt = Number.NEGATIVE_INFINITY;
  /** The next round, waiting for the chat's interval since the last one started. */
  #timer: ReturnType<typeof setTimeout> | null = null;

  constructor(options: AccountFanOutOptions) {
    this.#options = options;
  }

  /**
   * Called in the turn of every commit that changed the chat (synchronous: the deadline
   * commits with it). `urgent`: a membership change or rename, pushed without waiting
   * for the interval.
   */
  committed(now: number, urgent = false): void {
    this.#options.retryNoLaterThan(now + Math.max(FAN_OUT_RETRY_MS, 2 * this.#interval()));
    if (urgent) this.#urgent = true;
    this.#request(now);
  }

  #interval(): number {
    return fanOutInterval(this.#options.minIntervalMs, this.#options.membership().memberCount);
  }

  /** A round soon: now, after the one in flight, or when the minimum interval has passed. */
  #request(now = Date.now()): void {
    if (this.#round) {
      this.#again = true;
      return;
    }
    if (this.#timer && !this.#urgent) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    const wait = this.#urgent ? 0 : this.#lastStartedAt + this.#interval() - now;
    if (wait <= 0) {
      void this.#start();
      return;
    }
    // If the object is evicted before this fires, the stored deadline runs the round.
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.#start();
    }, wait);
  }

  /**
   * Runs a round that starts after this call (waiting for the one in flight, if any).
   * Resolves true when it left no account behind.
   */
  async push(): Promise<boolean> {
    while (this.#round) await this.#round;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    return this.#start();
  }

  /** The alarm's job: one more round; if an account is still behind, try again later. */
  async retry(now: number): Promise<void> {
    if (!(await this.push())) this.#options.retryNoLaterThan(now + FAN_OUT_RETRY_MS);
  }

  #start(): Promise<boolean> {
    this.#again = false;
    this.#urgent = false;
    this.#lastStartedAt = Date.now();
    const round = this.#runRound()
      .catch((error: unknown) => {
        log.error("fan-out round failed; the alarm retries", describeError(error));
        return false;
      })
      .finally(() => {
        this.#round = null;
        // Commits landed during the round: one more round covers them all.
        if (this.#again) this.#request();
      });
    this.#round = round;
    return round;
  }

  async #runRound(): Promise<boolean> {
    const membership = this.#options.membership();
    const chat = membership.chat;
    if (!chat) return true;
    const events = this.#options.log();
    const headSeq = events.headSeq;
    const targets = membership.behind(headSeq);
    if (targets.length === 0) return true;
    // The entries are taken in this turn, with the head they describe.
    const updates = targets.map(this.#options.entries());
    const results: PromiseSettledResult<void>[] = [];
    for (let start = 0; start < targets.length; start += CALLS_PER_CHUNK) {
      const chunk = targets.slice(start, start + CALLS_PER_CHUNK);
      results.push(...(await Promise.allSettled(chunk.map((period, index) => this.#options.notify(period.userId, updates[start + index]!)))));
    }
    const told: PeriodRow[] = [];
    const failed = new Set<string>();
    results.forEach((result, index) => {
      const period = targets[index]!;
      if (result.status === "fulfilled") told.push(period);
      else {
        failed.add(period.userId);
        log.warn("could not update a member's chat list; the alarm retries", { userId: period.userId, ...describeError(result.reason) });
      }
    });
    membership.markNotified(told, headSeq, failed);
    // Everyone acknowledged this round's head; commits made meanwhile are the next round's.
    const reachedHead = failed.size === 0 && membership.behind(headSeq).length === 0;
    if (reachedHead) recordFanOutDone(chat.chatId, headSeq, Date.now());
    return reachedHead && events.headSeq === headSeq;
  }
}
