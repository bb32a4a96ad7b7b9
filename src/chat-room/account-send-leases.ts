import { describeError, log } from "../lib/log.ts";

/** What a sender's User object grants: up to the tokens asked for, and when to ask again if none. */
export type SendGrant = { granted: number; retryAfterMs: number };

/** How long granted tokens may be spent; unspent ones then lapse (never handed back). */
const LEASE_TTL_MS = 10_000;
const MIN_LEASE = 16;
const MAX_LEASE = 1024;
/** Granted when the sender's object cannot be reached: the limit protects, it does not account. */
const FALLBACK_GRANT = MIN_LEASE;

type Lease = { tokens: number; expiresAt: number; nextSize: number; retryAt: number };

/**
 * The per-account send limit, across every chat, on the hot path without a call per
 * message. Each account's User object keeps its token bucket; a chat leases tokens from
 * it in blocks and spends them locally, asking again only when a block runs out. A
 * busy sender's block doubles with each lease (up to 1,024), so the calls stay rare;
 * a quiet one's lapses after 10 s. Tokens held by a chat are gone from the account
 * bucket, so an account never stores more than its bucket allows, wherever it sends.
 */
export class AccountSendLeases {
  readonly #lease: (userId: string, count: number) => Promise<SendGrant>;
  readonly #leases = new Map<string, Lease>();

  constructor(lease: (userId: string, count: number) => Promise<SendGrant>) {
    this.#lease = lease;
  }

  /** Leases what the senders of a batch lack (one call per sender short of tokens, in parallel). */
  async prepare(needed: Map<string, number>, now: number): Promise<void> {
    const calls: Promise<void>[] = [];
    for (const [userId, count] of needed) {
      const lease = this.#current(userId, now);
      if (lease.tokens >= count || lease.retryAt > now) continue;
      const size = Math.min(MAX_LEASE, Math.max(lease.nextSize, count - lease.tokens));
      calls.push(this.#renew(userId, size, now));
    }
    if (calls.length > 0) await Promise.all(calls);
  }

  /** Whether `userId` holds `count` tokens now (or is told to wait: asking again would not help). */
  covers(userId: string, count: number, now: number): boolean {
    const lease = this.#current(userId, now);
    return lease.tokens >= count || lease.retryAt > now;
  }

  /** 0 when `userId` may store a message now, else milliseconds until its account may. */
  waitMs(userId: string, now: number): number {
    const lease = this.#current(userId, now);
    if (lease.tokens >= 1) return 0;
    return Math.max(1, lease.retryAt - now);
  }

  take(userId: string): void {
    const lease = this.#leases.get(userId);
    if (lease) lease.tokens -= 1;
  }

  async #renew(userId: string, size: number, now: number): Promise<void> {
    let grant: SendGrant;
    try {
      grant = await this.#lease(userId, size);
    } catch (error) {
      log.warn("could not lease sends from the sender's account", describeError(error));
      grant = { granted: FALLBACK_GRANT, retryAfterMs: 0 };
    }
    const lease = this.#current(userId, now);
    lease.tokens += grant.granted;
    lease.expiresAt = now + LEASE_TTL_MS;
    lease.nextSize = Math.min(MAX_LEASE, size * 2);
    lease.retryAt = grant.granted > 0 ? 0 : now + grant.retryAfterMs;
  }

  #current(userId: string, now: number): Lease {
    let lease = this.#leases.get(userId);
    if (!lease || lease.expiresAt <= now) {
      lease = { tokens: 0, expiresAt: now + LEASE_TTL_MS, nextSize: MIN_LEASE, retryAt: lease && lease.retryAt > now ? lease.retryAt : 0 };
      this.#leases.set(userId, lease);
    }
    return lease;
  }
}
