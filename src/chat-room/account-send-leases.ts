import { describeError, log } from "../lib/log.ts";

/** What a sender's User object grants: up to the tokens asked for, and when to ask again if none. */
export type SendGrant = { granted: number; retryAfterMs: number };

/** How long granted tokens may be spent; unspent ones then lapse (never handed back). */
const LEASE_TTL_MS = 10_000;
const MIN_LEASE = 16;
const MAX_LEASE = 1024;
/** Granted when the sender's object cannot be reached: the limit protects, it does not account. */
const FALLBACK_GRANT = MIN_LEASE;

type Lease = {
  /** May go below zero: a provisional send not yet paid for by a grant. */
  tokens: number;
  expiresAt: number;
  nextSize: number;
  /** While the account is out of tokens: when asking again can help. */
  retryAt: number;
  /** Spent before any grant arrived (the provisional first send): deducted from the next grant. */
  owed: number;
  renewal: Promise<void> | null;
};

/**
 * The per-account send limit, across every chat, on the hot path without a call per
 * message. Each account's User object keeps its token bucket; a chat leases tokens from
 * it in blocks and spends them locally, asking again only when a block runs out. A
 * busy sender's block doubles with each lease (up to 1,024), so the calls stay rare;
 * a quiet one's lapses after 10 s. Tokens held by a chat are gone from the account
 * bucket, so wherever an account sends, it is charged for every message.
 *
 * The first send of a new lease (a chat that just woke, or a sender quiet for 10 s)
 * does not wait for the account's object: it is stored at once with one provisional
 * token, and the lease requested alongside pays it back. So waking a chat costs no
 * extra hop; the price is that an account can be one message per chat per 10 s over
 * its limit before the debt shows.
 */
export class AccountSendLeases {
  readonly #lease: (userId: string, count: number) => Promise<SendGrant>;
  readonly #leases = new Map<string, Lease>();

  constructor(lease: (userId: string, count: number) => Promise<SendGrant>) {
    this.#lease = lease;
  }

  /** Whether `userId` holds `count` tokens now (or is told to wait: asking again would not help). */
  covers(userId: string, count: number, now: number): boolean {
    const lease = this.#current(userId, now);
    return lease.tokens >= count || lease.retryAt > now;
  }

  /** Leases what the senders of a batch lack (one call per sender short of tokens, in parallel). */
  async prepare(needed: Map<string, number>, now: number): Promise<void> {
    const calls: Promise<void>[] = [];
    for (const [userId, count] of needed) if (!this.covers(userId, count, now)) calls.push(this.#ensure(userId, count, now));
    if (calls.length > 0) await Promise.all(calls);
  }

  /** Waits for a lease already asked for, then asks for what is still missing. */
  async #ensure(userId: string, count: number, now: number): Promise<void> {
    const lease = this.#current(userId, now);
    if (lease.renewal) await lease.renewal;
    if (lease.tokens >= count || lease.retryAt > now) return;
    await this.#renew(userId, lease, Math.max(lease.nextSize, count - lease.tokens), now);
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

  #renew(userId: string, lease: Lease, size: number, now: number): Promise<void> {
    const asked = Math.min(MAX_LEASE, size + lease.owed);
    const renewal = this.#lease(userId, asked)
      .catch((error: unknown): SendGrant => {
        log.warn("could not lease sends from the sender's account", describeError(error));
        return { granted: FALLBACK_GRANT, retryAfterMs: 0 };
      })
      .then((grant) => {
        lease.tokens += grant.granted - lease.owed;
        lease.owed = 0;
        lease.expiresAt = now + LEASE_TTL_MS;
        lease.nextSize = Math.min(MAX_LEASE, size * 2);
        lease.retryAt = grant.granted > 0 ? 0 : now + grant.retryAfterMs;
      })
      .finally(() => {
        lease.renewal = null;
      });
    lease.renewal = renewal;
    return renewal;
  }

  #current(userId: string, now: number): Lease {
    const known = this.#leases.get(userId);
    if (known && (known.expiresAt > now || known.renewal)) return known;
    const lease: Lease = { tokens: 1, expiresAt: now + LEASE_TTL_MS, nextSize: MIN_LEASE, retryAt: 0, owed: 1, renewal: null };
    this.#leases.set(userId, lease);
    if (known && (known.tokens < 0 || known.retryAt > now)) {
      // A debt or a refusal outlives the lease it was made in: no provisional send.
      lease.tokens = Math.min(known.tokens, 0);
      lease.owed = 0;
      lease.retryAt = known.retryAt;
      if (lease.retryAt > now) return lease;
    }
    // One provisional token, paid back by the lease requested at once.
    void this.#renew(userId, lease, MIN_LEASE, now); // never rejects: failures grant the fallback
    return lease;
  }
}
