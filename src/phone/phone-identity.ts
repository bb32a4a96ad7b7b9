import { DurableObject } from "cloudflare:workers";
import { AppError } from "../lib/app-error.ts";
import { configFrom } from "../lib/config.ts";
import { base64url, constantTimeEqual, hmacHex, randomBytes, randomDigits } from "../lib/crypto.ts";
import { mintId } from "../lib/minted-id.ts";
import { attempt, succeed, type Outcome } from "../lib/result.ts";

/**
 * One login attempt: what `POST /api/otp` started and `POST /api/auth/login` finishes.
 * Each has its own code and its own wrong-guess counter, so guesses against one
 * attempt (an attacker's) never touch another (the owner's).
 */
type OtpAttempt = {
  /** The opaque id the requester got back; needed to use the code. */
  id: string;
  /** HMAC(secret, phone + attempt id + code): the code itself is never stored. */
  codeHash: string;
  expiresAt: number;
  /** At OTP_MAX_ATTEMPTS the attempt is dead: it answers `too_many_attempts` until it expires. */
  wrongGuesses: number;
};

/** What one phone number's object remembers. Small, so it lives in the key-value API. */
type PhoneState = {
  /** Set on the first successful login; never changes. */
  accountId?: string;
  /** Outstanding attempts, oldest first: at most MAX_OUTSTANDING_ATTEMPTS, none expired. */
  attempts: OtpAttempt[];
  /** When the last codes were sent to this number (any requester), oldest first: the slowing interval. */
  sentAt: number[];
  /**
   * Per requester (a keyed hash of the client address key, so no address is stored):
   * when it had codes sent to this number in the last 24 hours, for the hourly and
   * daily caps. At most MAX_REQUESTERS are remembered.
   */
  requesters: Record<string, number[]>;
};

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
const STATE_KEY = "state";
/**
 * Attempts kept per number. With the default intervals at most 8 codes can be issued
 * within an hour (30 s, then doubling), so no live attempt is pushed out by newer ones
 * unless the intervals are configured shorter; dead ones go first.
 */
const MAX_OUTSTANDING_ATTEMPTS = 8;
/** Requesters remembered per number: beyond it, the one quiet for longest is forgotten. */
const MAX_REQUESTERS = 32;
/** Send times kept per requester (enough for the caps as configured, within reason). */
const MAX_TIMES_PER_REQUESTER = 1000;
/** Send times kept per number: enough to count a streak up to its longest interval. */
const MAX_SENT_AT = 32;

export type IssuedCode = { code: string; attemptId: string; expiresInSeconds: number; resendAfterSeconds: number };
export type VerifiedPhone = { accountId: string; created: boolean };

const wrongCode = () => new AppError("invalid_code", 401, "the code is wrong, expired or was already used");

/**
 * One object per canonical E.164 number (`idFromName(phone)`): the login attempts,
 * the limits on sending codes to the number (the Rate Limiting binding only counts
 * 10 s and 60 s windows) and the account the number belongs to.
 *
 * Sending limits, designed so an attacker cannot lock the owner out:
 * - per requester (client address key) and number: OTP_MAX_PER_HOUR and
 *   OTP_MAX_PER_DAY codes;
 * - per number, whoever asks: the interval between two codes starts at
 *   OTP_RESEND_SECONDS and doubles with each code of the current streak (codes less
 *   than an hour, or twice the longest interval, apart), up to OTP_MAX_RESEND_SECONDS.
 *   It slows, it never locks.
 */
export class PhoneIdentity extends DurableObject<Env> {
  async requestCode(phone: string, requester: string, now = Date.now()): Promise<Outcome<IssuedCode>> {
    const config = configFrom(this.env);
    const otp = config.otp;
    const requesterKey = (await hmacHex(config.hmacSecret, `otp-requester\n${requester}`)).slice(0, 24);
    const attemptId = base64url(randomBytes(16));
    const code = randomDigits(6);
    const codeHash = await hmacHex(config.hmacSecret, attemptMessage(phone, attemptId, code));
    const state = await this.#state();
    pruneState(state, now);
    const mine = state.requesters[requesterKey] ?? [];
    const nextAllowed = Math.max(
      state.sentAt.length === 0 ? 0 : state.sentAt.at(-1)! + resendIntervalMs(state.sentAt, now, otp),
      capReleaseTime(mine, otp.maxPerHour, HOUR_MS),
      capReleaseTime(mine, otp.maxPerDay, DAY_MS),
    );
    if (nextAllowed > now) {
      return attempt(() => {
        throw new AppError("rate_limited", 429, "too many codes requested for this number", {
          retryAfterMs: nextAllowed - now,
        });
      });
    }
    state.sentAt = [...state.sentAt, now].slice(-MAX_SENT_AT);
    mine.push(now);
    delete state.requesters[requesterKey]; // re-added last: the most recently active
    state.requesters[requesterKey] = mine.slice(-Math.min(Math.max(otp.maxPerHour, otp.maxPerDay), MAX_TIMES_PER_REQUESTER));
    forgetQuietestRequesters(state);
    state.attempts.push({ id: attemptId, codeHash, expiresAt: now + otp.ttlSeconds * 1000, wrongGuesses: 0 });
    capAttempts(state, otp.maxAttempts);
    await this.ctx.storage.put(STATE_KEY, state);
    return succeed({
      code,
      attemptId,
      expiresInSeconds: otp.ttlSeconds,
      resendAfterSeconds: Math.ceil(resendIntervalMs(state.sentAt, now, otp) / 1000),
    });
  }

  /**
   * Checks a code against one attempt. An unknown, expired or made-up attempt id
   * answers exactly like a wrong code, so nothing tells whether a code is outstanding
   * or whether the number has an account. The account is created on the number's
   * first successful login.
   */
  async verifyCode(phone: string, attemptId: string, code: string, now = Date.now()): Promise<Outcome<VerifiedPhone>> {
    const config = configFrom(this.env);
    // Minted before the checks (it needs an await), used only if this login creates the account.
    const newAccountId = await mintId(config.hmacSecret, "u");
    const codeHash = await hmacHex(config.hmacSecret, attemptMessage(phone, attemptId, code));
    const state = await this.#state();
    return attempt(() => {
      const entry = state.attempts.find((candidate) => candidate.expiresAt > now && constantTimeEqual(candidate.id, attemptId));
      if (!entry) throw wrongCode();
      if (entry.wrongGuesses >= config.otp.maxAttempts) {
        throw new AppError("too_many_attempts", 429, "too many wrong codes for this attempt: request a new code", {
          retryable: false,
        });
      }
      if (!constantTimeEqual(entry.codeHash, codeHash)) {
        entry.wrongGuesses += 1;
        void this.ctx.storage.put(STATE_KEY, state);
        throw wrongCode();
      }
      // Logged in: this attempt is used, and every other outstanding one ends with it.
      state.attempts = [];
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
    // Older objects stored one `pending` code and no attempts: that code cannot be used
    // without an attempt id, so it is simply dropped.
    const stored = await this.ctx.storage.get<Partial<PhoneState> & { pending?: unknown }>(STATE_KEY);
    const state: PhoneState = { attempts: stored?.attempts ?? [], sentAt: stored?.sentAt ?? [], requesters: stored?.requesters ?? {} };
    if (stored?.accountId !== undefined) state.accountId = stored.accountId;
    return state;
  }
}

function attemptMessage(phone: string, attemptId: string, code: string): string {
  return `otp\n${phone}\n${attemptId}\n${code}`;
}

/** Drops expired attempts and send times too old to count for anything. */
function pruneState(state: PhoneState, now: number): void {
  state.attempts = state.attempts.filter((entry) => entry.expiresAt > now);
  for (const [key, times] of Object.entries(state.requesters)) {
    const recent = times.filter((time) => time > now - DAY_MS);
    if (recent.length > 0) state.requesters[key] = recent;
    else delete state.requesters[key];
  }
}

/** Keeps at most MAX_REQUESTERS requesters: the ones whose last code is oldest go. */
function forgetQuietestRequesters(state: PhoneState): void {
  const keys = Object.keys(state.requesters);
  if (keys.length <= MAX_REQUESTERS) return;
  const byLastSend = keys.sort((a, b) => state.requesters[a]!.at(-1)! - state.requesters[b]!.at(-1)!);
  for (const key of byLastSend.slice(0, keys.length - MAX_REQUESTERS)) delete state.requesters[key];
}

/** Keeps at most MAX_OUTSTANDING_ATTEMPTS attempts: dead ones go first, then the oldest. */
function capAttempts(state: PhoneState, maxWrongGuesses: number): void {
  while (state.attempts.length > MAX_OUTSTANDING_ATTEMPTS) {
    const dead = state.attempts.findIndex((entry) => entry.wrongGuesses >= maxWrongGuesses);
    state.attempts.splice(dead === -1 ? 0 : dead, 1);
  }
}

/**
 * How many codes the number's current streak holds: codes each less than `quietMs`
 * after the one before, the last less than `quietMs` ago. 0 when the number was quiet.
 */
function streakLength(sentAt: number[], now: number, quietMs: number): number {
  const last = sentAt.at(-1);
  if (last === undefined || now - last >= quietMs) return 0;
  let length = 1;
  for (let i = sentAt.length - 1; i > 0 && sentAt[i]! - sentAt[i - 1]! < quietMs; i--) length += 1;
  return length;
}

/**
 * The minimum time from the number's last code to its next: OTP_RESEND_SECONDS after
 * the first code of a streak, doubling with each further code, at most
 * OTP_MAX_RESEND_SECONDS (never less than OTP_RESEND_SECONDS). A streak ends after an
 * hour with no code, or twice the longest interval if that is longer (so waiting out
 * the longest interval never starts a new streak).
 */
export function resendIntervalMs(sentAt: number[], now: number, otp: { resendSeconds: number; maxResendSeconds: number }): number {
  const capMs = Math.max(otp.maxResendSeconds, otp.resendSeconds) * 1000;
  const streak = streakLength(sentAt, now, Math.max(HOUR_MS, 2 * capMs));
  if (streak === 0) return 0;
  return Math.min(capMs, otp.resendSeconds * 1000 * 2 ** Math.min(streak - 1, 30));
}

/** When a cap of `limit` sends per `windowMs` frees a slot again (0 if one is free now). */
function capReleaseTime(sentAt: number[], limit: number, windowMs: number): number {
  if (sentAt.length < limit) return 0;
  const oldestCounted = sentAt[sentAt.length - limit]!;
  return oldestCounted + windowMs;
}
