import { TokenBuckets } from "../lib/token-buckets.ts";
import { Limits, type TypingState } from "../protocol/index.ts";

/** Notices per member and chat: one a second on average, a few in a row (typing, paused, typing). */
const NOTICES_PER_SECOND = 1;
const NOTICE_BURST = 3;

/**
 * Which typing reports a chat forwards. A member's `typing` goes on when they were not
 * shown typing, or when the last one forwarded is older than `Limits.typingIntervalMs`
 * (a client renews it every few seconds); a `paused` only when they are shown typing.
 * Every forwarded notice also takes a token of the member's budget, so alternating
 * `typing` and `paused` cannot flood the other members either. Memory only, at most one
 * entry per member who typed lately; nothing is stored.
 */
export class TypingThrottle {
  /** Per member: when their last `typing` was forwarded, while they are shown typing. */
  readonly #typingSince = new Map<string, number>();
  readonly #budget = new TokenBuckets(NOTICES_PER_SECOND, NOTICE_BURST);

  /** Whether this report goes to the other members. */
  admit(userId: string, state: TypingState, now: number): boolean {
    this.#prune(now);
    const last = this.#typingSince.get(userId);
    const shown = last !== undefined && now - last < Limits.typingExpiresMs;
    if (state === "paused" ? !shown : shown && now - last < Limits.typingIntervalMs) return false;
    if (this.#budget.waitMs(userId, now) > 0) return false;
    this.#budget.take(userId, now);
    if (state === "paused") this.#typingSince.delete(userId);
    else this.#typingSince.set(userId, now);
    return true;
  }

  /** A message from the member ends their typing (clients clear it on the message itself). */
  sent(userId: string): void {
    this.#typingSince.delete(userId);
  }

  #prune(now: number): void {
    if (this.#typingSince.size < 64) return;
    for (const [userId, at] of this.#typingSince) if (now - at >= Limits.typingExpiresMs) this.#typingSince.delete(userId);
  }
}
