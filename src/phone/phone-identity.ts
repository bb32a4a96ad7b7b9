import { DurableObject } from "cloudflare:workers";
import { AppError } from "../lib/app-error.ts";
import { configFrom } from "../lib/config.ts";
import { constantTimeEqual, hmacHex, randomDigits } from "../lib/crypto.ts";
import { mintId } from "../lib/minted-id.ts";
import { attempt, type Outcome } from "../lib/result.ts";

/** What one phone number's object remembers. Small, so it lives in the key-value API. */
type PhoneState = {
  /** Set on the first successful login; never changes. */
  accountId?: string;
  /** The outstanding code: only its HMAC is stored. */
  pending?: { codeHash: string; expiresAt: number; wrongAttempts: number };
  /** When codes were sent in the last 24 hours, for the resend throttle and the caps. */
  sentAt: number[];
};

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
const STATE_KEY = "state";

export type IssuedCode = { code: string; expiresInSeconds: number; resendAfterSeconds: number };
export type VerifiedPhone = { accountId: string; created: boolean };

/**
 * One object per E.164 number (`idFromName(phone)`): the OTP state, the per-phone
 * hourly and daily caps (the Rate Limiting binding only counts 10 s and 60 s
 * windows) and the account the number belongs to.
 */
export class PhoneIdentity extends DurableObject<Env> {
  async requestCode(phone: string, now = Date.now()): Promise<Outcome<IssuedCode>> {
    const config = configFrom(this.env).otp;
    const state = await this.#state();
    const sentAt = state.sentAt.filter((time) => time > now - DAY_MS);
    const lastSent = sentAt.at(-1);
    const nextAllowed = Math.max(
      lastSent === undefined ? 0 : lastSent + config.resendSeconds * 1000,
      capReleaseTime(sentAt, config.maxPerHour, HOUR_MS),
      capReleaseTime(sentAt, config.maxPerDay, DAY_MS),
    );
    if (nextAllowed > now) {
      return attempt(() => {
        throw new AppError("rate_limited", 429, "too many codes requested for this number", {
          retryAfterMs: nextAllowed - now,
        });
      });
    }
    const code = randomDigits(6);
    sentAt.push(now);
    state.sentAt = sentAt;
    state.pending = {
      codeHash: await hmacHex(configFrom(this.env).hmacSecret, `${phone}:${code}`),
      expiresAt: now + config.ttlSeconds * 1000,
      wrongAttempts: 0,
    };
    await this.ctx.storage.put(STATE_KEY, state);
    return {
      ok: true,
      value: { code, expiresInSeconds: config.ttlSeconds, resendAfterSeconds: config.resendSeconds },
    };
  }

  /** Checks a code once. The account is created on the number's first successful login. */
  async verifyCode(phone: string, code: string, now = Date.now()): Promise<Outcome<VerifiedPhone>> {
    const config = configFrom(this.env);
    // Minted before the checks (it needs an await), used only if this login creates the account.
    const newAccountId = await mintId(config.hmacSecret, "u");
    const codeHash = await hmacHex(config.hmacSecret, `${phone}:${code}`);
    const state = await this.#state();
    const pending = state.pending;
    return attempt(() => {
      // A number that never asked for a code answers exactly like a wrong code, so
      // login does not reveal which numbers have accounts.
      if (!pending) throw new AppError("invalid_code", 401, "the code is wrong or was already used");
      if (pending.expiresAt <= now) {
        delete state.pending;
        void this.ctx.storage.put(STATE_KEY, state);
        throw new AppError("code_expired", 401, "the code expired: request a new one");
      }
      if (!constantTimeEqual(pending.codeHash, codeHash)) {
        pending.wrongAttempts += 1;
        const exhausted = pending.wrongAttempts >= config.otp.maxAttempts;
        if (exhausted) delete state.pending;
        void this.ctx.storage.put(STATE_KEY, state);
        if (exhausted) {
          throw new AppError("too_many_attempts", 429, "too many wrong codes: request a new one", {
            retryable: false,
          });
        }
        throw new AppError("invalid_code", 401, "the code is wrong or was already used");
      }
      delete state.pending;
      const created = state.accountId === undefined;
      state.accountId ??= newAccountId;
      void this.ctx.storage.put(STATE_KEY, state);
      return { accountId: state.accountId, created };
    });
  }

  /** The account of this number, if it has logged in at least once. */
  async accountId(): Promise<string | null> {
    return (await this.#state()).accountId ?? null;
  }

  async #state(): Promise<PhoneState> {
    return (await this.ctx.storage.get<PhoneState>(STATE_KEY)) ?? { sentAt: [] };
  }
}

/** When a cap of `limit` sends per `windowMs` frees a slot again (0 if one is free now). */
function capReleaseTime(sentAt: number[], limit: number, windowMs: number): number {
  if (sentAt.length < limit) return 0;
  const oldestCounted = sentAt[sentAt.length - limit]!;
  return oldestCounted + windowMs;
}
