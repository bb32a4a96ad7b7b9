import { describeError, log } from "../lib/log.ts";
import type { ChatIndexUpdate } from "../protocol/index.ts";
import type { EventLog } from "./event-log.ts";
import type { Membership, PeriodRow } from "./membership.ts";

/** How long after a commit the alarm checks that every member's account heard of it. */
export const FAN_OUT_RETRY_MS = 10_000;

export type AccountFanOutOptions = {
  log: () => EventLog;
  membership: () => Membership;
  /** Tells one account's User object about the chat (merged there by max(headSeq)). */
  notify: (userId: string, update: ChatIndexUpdate) => Promise<void>;
  /** Makes the retry deadline due no later than `at` (the object's scheduler). */
  retryNoLaterThan: (at: number) => void;
};

/**
 * Brings every member's User object up to the chat's head: its chat list entry (head
 * seq, name, member count, last activity, and whether the account is still a member).
 *
 * After each commit the pushes start at once, one call per account behind the head,
 * carrying the whole range it missed (the entry at the head). Commits that land while
 * a round is in flight are coalesced into the next round, so a busy chat makes one
 * call per account per round, not per message. Progress is one watermark per
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

  constructor(options: AccountFanOutOptions) {
    this.#options = options;
  }

  /** Called in the turn of every commit that changed the chat (synchronous: the deadline commits with it). */
  committed(now: number): void {
    this.#options.retryNoLaterThan(now + FAN_OUT_RETRY_MS);
    if (this.#round) this.#again = true;
    else void this.#start();
  }

  /**
   * Runs a round that starts after this call (waiting for the one in flight, if any).
   * Resolves true when it left no account behind.
   */
  async push(): Promise<boolean> {
    while (this.#round) await this.#round;
    return this.#start();
  }

  /** The alarm's job: one more round; if an account is still behind, try again later. */
  async retry(now: number): Promise<void> {
    if (!(await this.push())) this.#options.retryNoLaterThan(now + FAN_OUT_RETRY_MS);
  }

  #start(): Promise<boolean> {
    this.#again = false;
    const round = this.#runRound()
      .catch((error: unknown) => {
        log.error("fan-out round failed; the alarm retries", describeError(error));
        return false;
      })
      .finally(() => {
        this.#round = null;
        // Commits landed during the round: one more round covers them all.
        if (this.#again) void this.#start();
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
    const members = chat.kind === "direct" ? [...membership.members()] : [];
    const base = { chatId: chat.chatId, kind: chat.kind, name: chat.name, memberCount: membership.memberCount, lastActivityAt: events.headCreatedAt };
    const updates = targets.map((period): ChatIndexUpdate => {
      const update: ChatIndexUpdate = { ...base, headSeq: period.leftSeq ?? headSeq, membership: "member" };
      if (period.leftSeq !== null) update.membership = events.typeAt(period.leftSeq) === "member.removed" ? "removed" : "left";
      if (chat.kind === "direct") {
        const peer = members.find((member) => member.userId !== period.userId);
        if (peer) update.peerId = peer.userId;
      }
      return update;
    });
    const results = await Promise.allSettled(targets.map((period, index) => this.#options.notify(period.userId, updates[index]!)));
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
    return failed.size === 0 && membership.behind(events.headSeq).length === 0;
  }
}
