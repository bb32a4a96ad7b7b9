import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { api, expectError, uniqueIp, uniquePhone, awayFromRateWindowEdge } from "./helpers.ts";

describe("POST /api/otp", () => {
  it("answers 201 with a 6-digit development code", async () => {
    const response = await api("/api/otp", { body: { phone: uniquePhone() } });
    expect(response.status).toBe(201);
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ sent: true, expiresInSeconds: 300, resendAfterSeconds: 30 });
    expect(body.devCode).toMatch(/^\d{6}$/);
    expect(body.attemptId).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(response.headers.get("cache-control")).toBe("no-store");
  });

  it("answers the same for a new number and for one with an account", async () => {
    const phone = uniquePhone();
    const first = await api("/api/otp", { body: { phone } });
    const { devCode, attemptId } = (await first.json()) as { devCode: string; attemptId: string };
    expect((await api("/api/auth/login", { body: { phone, code: devCode, attemptId } })).status).toBe(200);
    const fresh = await api("/api/otp", { body: { phone: uniquePhone() } });
    const known = await api("/api/otp", { body: { phone } }); // throttled: resend is 30 s
    expect(fresh.status).toBe(201);
    expect(known.status).toBe(429);
    const freshKeys = Object.keys((await fresh.json()) as object).sort();
    const anotherFresh = await api("/api/otp", { body: { phone: uniquePhone() } });
    expect(Object.keys((await anotherFresh.json()) as object).sort()).toEqual(freshKeys);
  });

  it.each([
    ["no plus sign", "14155550123"],
    ["letters", "+1415555abcd"],
    ["too short", "+12345"],
    ["too long", "+1234567890123456"],
    ["leading zero country", "+0415555012"],
    ["not a number of its country", "+1555675"],
    ["an extension", "+1 415 555 0123 ext. 5"],
    ["national form", "(415) 555-0123"],
  ])("refuses an invalid phone number (%s)", async (_label, phone) => {
    await expectError(await api("/api/otp", { body: { phone } }), 400, "validation_failed");
  });

  it("refuses a number that is not valid however it is written: no second account through a leading zero", async () => {
    // +44 7700 9675736 is not a valid UK number; the trunk-prefix variants canonicalise to
    // it (or to another invalid number), so all three are refused alike, never three accounts.
    for (const phone of ["+4477009675736", "+44077009675736", "+440077009675736", "+1555675"]) {
      await expectError(await api("/api/otp", { body: { phone } }), 400, "validation_failed");
      await expectError(await api("/api/auth/login", { body: { phone, code: "123456", attemptId: "A".repeat(22) } }), 400, "validation_failed");
    }
  });

  it("refuses malformed JSON, a wrong content type, missing and extra fields", async () => {
    await expectError(await api("/api/otp", { body: "{not json" }), 400, "invalid_json");
    await expectError(await api("/api/otp", { body: JSON.stringify({ phone: uniquePhone() }), headers: { "content-type": "text/plain" } }), 415, "unsupported_media_type");
    await expectError(await api("/api/otp", { body: {} }), 400, "validation_failed");
    await expectError(await api("/api/otp", { body: { phone: uniquePhone(), admin: true } }), 400, "validation_failed");
    await expectError(await api("/api/otp", { body: { phone: 14155550123 } }), 400, "validation_failed");
  });

  it("refuses an oversized body with 413", async () => {
    await expectError(await api("/api/otp", { body: { phone: "+1".padEnd(500_000, "5") } }), 413, "too_large");
  });

  it("throttles resends to the same phone, whoever asks", async () => {
    const phone = uniquePhone();
    expect((await api("/api/otp", { body: { phone } })).status).toBe(201);
    const again = await api("/api/otp", { body: { phone }, ip: uniqueIp() });
    expect(again.status).toBe(429);
    const body = (await again.json()) as { error: { code: string; retryAfterMs: number; retryable: boolean } };
    expect(body.error).toMatchObject({ code: "rate_limited", retryable: true });
    expect(body.error.retryAfterMs).toBeGreaterThan(25_000);
  });

  it("limits codes per client address", async () => {
    await awayFromRateWindowEdge();
    const ip = uniqueIp();
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) statuses.push((await api("/api/otp", { body: { phone: uniquePhone() }, ip })).status);
    expect(statuses.slice(0, 10)).toEqual(Array(10).fill(201));
    expect(statuses.slice(10)).toEqual([429, 429]);
  });
});

const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 0, 1, 9, 0, 0);
const phoneStub = (phone: string) => env.PHONE.get(env.PHONE.idFromName(phone));

/** One code request straight to the number's object, at a chosen time, from a chosen requester. */
async function requestAt(phone: string, requester: string, now: number) {
  const outcome = await phoneStub(phone).requestCode(phone, requester, now);
  return outcome.ok ? { ok: true as const, ...outcome.value } : { ok: false as const, code: outcome.error.code, retryAfterMs: outcome.error.retryAfterMs ?? 0 };
}

async function storedState(phone: string) {
  return runInDurableObject(phoneStub(phone), async (_instance, state) =>
    state.storage.get<{ attempts: unknown[]; sentAt: number[]; requesters: Record<string, number[]> }>("state"),
  );
}

let requesterCounter = 0;
const newRequester = () => `198.18.${(++requesterCounter >> 8) & 255}.${requesterCounter & 255}`;

describe("sending limits per number (slow the attacker, never lock the owner out)", () => {
  it("space codes to one number by an interval that doubles with each code and stops at OTP_MAX_RESEND_SECONDS", async () => {
    const phone = uniquePhone();
    let now = T0;
    const intervals: number[] = [];
    for (let i = 0; i < 8; i++) {
      const sent = await requestAt(phone, newRequester(), now);
      expect(sent.ok).toBe(true);
      if (!sent.ok) return;
      intervals.push(sent.resendAfterSeconds);
      // One millisecond early is refused, from any address, with the exact wait.
      const early = await requestAt(phone, newRequester(), now + sent.resendAfterSeconds * 1000 - 1);
      expect(early).toEqual({ ok: false, code: "rate_limited", retryAfterMs: 1 });
      now += sent.resendAfterSeconds * 1000;
    }
    expect(intervals).toEqual([30, 60, 120, 240, 480, 900, 900, 900]);
    // An hour without a code ends the streak: back to the first interval.
    const later = await requestAt(phone, newRequester(), now + HOUR);
    expect(later).toMatchObject({ ok: true, resendAfterSeconds: 30 });
  });

  it("let the owner get a code after an attacker asked from five addresses, within the interval", async () => {
    const phone = uniquePhone();
    let now = T0;
    for (let i = 0; i < 5; i++) {
      const sent = await requestAt(phone, newRequester(), now);
      expect(sent.ok).toBe(true);
      if (sent.ok) now += sent.resendAfterSeconds * 1000;
    }
    // Before the change, five codes in an hour locked the number for about an hour.
    const owner = newRequester();
    const tooSoon = await requestAt(phone, owner, now - 60_000);
    expect(tooSoon).toMatchObject({ ok: false, code: "rate_limited", retryAfterMs: 60_000 });
    expect(await requestAt(phone, owner, now)).toMatchObject({ ok: true });
  });

  it("hold an attacker rotating addresses to about 4 codes an hour, and the owner never waits more than 15 minutes", async () => {
    const phone = uniquePhone();
    const sends: number[] = [];
    let now = T0;
    let worstOwnerWait = 0;
    while (now < T0 + 5 * HOUR) {
      // The attacker takes every slot the moment it opens, each time from a new address…
      const sent = await requestAt(phone, newRequester(), now);
      expect(sent.ok).toBe(true);
      if (!sent.ok) return;
      sends.push(now);
      // …and the owner, asking just after, is told to wait at most the capped interval.
      const owner = await requestAt(phone, newRequester(), now + 1);
      expect(owner.ok).toBe(false);
      if (!owner.ok) worstOwnerWait = Math.max(worstOwnerWait, owner.retryAfterMs);
      now += sent.resendAfterSeconds * 1000;
    }
    expect(worstOwnerWait).toBe(900_000 - 1);
    const perHour = [0, 1, 2, 3, 4].map((h) => sends.filter((t) => t >= T0 + h * HOUR && t < T0 + (h + 1) * HOUR).length);
    expect(perHour).toEqual([8, 4, 4, 4, 4]); // 30 s, then doubling: a burst of 8 in the first hour, then 4 an hour
  });

  it("cap codes per requester and number: the attacker's address is refused while another address still gets a code", async () => {
    const phone = uniquePhone();
    const attacker = newRequester();
    let now = T0;
    for (let i = 0; i < 5; i++) {
      const sent = await requestAt(phone, attacker, now);
      expect(sent.ok).toBe(true);
      if (sent.ok) now += sent.resendAfterSeconds * 1000;
    }
    // The interval allows a 6th code now, but not for this address: OTP_MAX_PER_HOUR is 5.
    const refused = await requestAt(phone, attacker, now);
    expect(refused).toMatchObject({ ok: false, code: "rate_limited", retryAfterMs: T0 + HOUR - now });
    expect(await requestAt(phone, newRequester(), now)).toMatchObject({ ok: true });
  });

  it("cap codes per requester and number per day (OTP_MAX_PER_DAY)", async () => {
    const phone = uniquePhone();
    const requester = newRequester();
    const step = HOUR + 1_000; // an hour apart: no streak, no hourly cap
    for (let i = 0; i < 10; i++) expect(await requestAt(phone, requester, T0 + i * step)).toMatchObject({ ok: true });
    const now = T0 + 10 * step;
    expect(await requestAt(phone, requester, now)).toMatchObject({ ok: false, code: "rate_limited", retryAfterMs: T0 + 24 * HOUR - now });
    expect(await requestAt(phone, newRequester(), now)).toMatchObject({ ok: true });
  });

  it("keep the stored state bounded: expired attempts go, at most 32 requesters are remembered", async () => {
    const phone = uniquePhone();
    for (let i = 0; i < 40; i++) await requestAt(phone, newRequester(), T0 + i * HOUR * 0.4);
    const state = await storedState(phone);
    expect(Object.keys(state!.requesters).length).toBeLessThanOrEqual(32);
    expect(state!.attempts.length).toBe(1); // 300 s codes, 24 minutes apart: only the last is live
    expect(state!.sentAt.length).toBeLessThanOrEqual(32);
  });

  it("read a number's state stored before attempts existed", async () => {
    const phone = uniquePhone();
    await runInDurableObject(phoneStub(phone), async (_instance, state) => {
      await state.storage.put("state", { accountId: "u_legacyAccount000000000", pending: { codeHash: "x", expiresAt: T0 + 1, wrongAttempts: 0 }, sentAt: [T0 - HOUR] });
    });
    expect(await requestAt(phone, newRequester(), T0)).toMatchObject({ ok: true, resendAfterSeconds: 30 });
    expect(await phoneStub(phone).accountId()).toBe("u_legacyAccount000000000");
  });
});
