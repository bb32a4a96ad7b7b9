/**
 * A token bucket per sender, in memory. It resets when the object is evicted, which
 * only ever makes it more lenient for a moment: it protects the chat from a flood,
 * it is not an accounting system.
 */
export class SendRateLimiter {
  readonly #ratePerMs: number;
  readonly #burst: number;
  readonly #buckets = new Map<string, { tokens: number; updatedAt: number }>();

  constructor(ratePerSecond: number, burst: number) {
    this.#ratePerMs = ratePerSecond / 1000;
    this.#burst = burst;
  }

  /** 0 when `key` may send now, else the milliseconds until it may. */
  waitMs(key: string, now: number): number {
    const tokens = this.#refill(key, now).tokens;
    return tokens >= 1 ? 0 : Math.ceil((1 - tokens) / this.#ratePerMs);
  }

  take(key: string, now: number): void {
    this.#refill(key, now).tokens -= 1;
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
