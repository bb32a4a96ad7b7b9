/**
 * A token bucket per key, in memory (a sender's sends, a device's catch-up bytes, an
 * account's sends). It resets when the object is evicted, which only ever makes it
 * more lenient for a moment: it protects against floods, it is not an accounting system.
 */
export class TokenBuckets {
  readonly #ratePerMs: number;
  readonly #burst: number;
  readonly #buckets = new Map<string, { tokens: number; updatedAt: number }>();

  constructor(ratePerSecond: number, burst: number) {
    this.#ratePerMs = ratePerSecond / 1000;
    this.#burst = burst;
  }

  /** 0 when `key` has a whole token now, else the milliseconds until it will. */
  waitMs(key: string, now: number): number {
    const tokens = this.#refill(key, now).tokens;
    return tokens >= 1 ? 0 : Math.ceil((1 - tokens) / this.#ratePerMs);
  }

  /** Takes `amount` tokens (the balance may go below zero: a big page waits longer after). */
  take(key: string, now: number, amount = 1): void {
    this.#refill(key, now).tokens -= amount;
  }

  /** Takes up to `requested` whole tokens at once; none left means retry after `retryAfterMs`. */
  grant(key: string, now: number, requested: number): { granted: number; retryAfterMs: number } {
    const bucket = this.#refill(key, now);
    const granted = Math.max(0, Math.min(requested, Math.floor(bucket.tokens)));
    bucket.tokens -= granted;
    return { granted, retryAfterMs: granted > 0 ? 0 : this.waitMs(key, now) };
  }

  #refill(key: string, now: number): { tokens: number; updatedAt: number } {
    let bucket = this.#buckets.get(key);
    if (!bucket) {
      bucket = { tokens: this.#burst, updatedAt: now };
      this.#buckets.set(key, bucket);
    }
    bucket.tokens = Math.min(this.#burst, bucket.tokens + (now - bucket.updatedAt) * this.#ratePerMs);
    bucket.updatedAt = now;
    return bucket;
  }
}
