import { Limits, type TypingState } from "../protocol/index.ts";

/**
 * Which typing reports a chat forwards: a member's `typing` at most once per
 * `Limits.typingIntervalMs` (a client renews it every few seconds; a flood is not
 * passed on), and a `paused` only after a `typing` that has not expired. Memory only,
 * at most one entry per member who typed lately; nothing is stored.
 */
export class TypingThrottle {
  /** Per member: when their last `typing` was forwarded. */
  readonly #forwardedAt = new Map<string, number>();

  /** Whether this report goes to the other members. */
  admit(userId: string, state: TypingState, now: number): boolean {
    this.#prune(now);
    const last = this.#forwardedAt.get(userId);
    if (state === "paused") {
      this.#forwardedAt.delete(userId);
      return last !== undefined;
    }
    if (last !== undefined && now - last < Limits.typingIntervalMs) return false;
    this.#forwardedAt.set(userId, now);
    return true;
  }

  /** A message from the member ends their typing (clients clear it on the message itself). */
  sent(userId: string): void {
    this.#forwardedAt.delete(userId);
  }

  #prune(now: number): void {
    if (this.#forwardedAt.size < 64) return;
    for (const [userId, at] of this.#forwardedAt) if (now - at >= Limits.typingExpiresMs) this.#forwardedAt.delete(userId);
  }
}
