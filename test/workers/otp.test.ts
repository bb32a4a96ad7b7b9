import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { api, expectError, uniqueIp, uniquePhone } from "./helpers.ts";

describe("POST /api/otp", () => {
  it("answers 201 with a 6-digit development code", async () => {
    const response = await api("/api/otp", { body: { phone: uniquePhone() } });
    expect(response.status).toBe(201);
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ sent: true, expiresInSeconds: 300 });
    expect(body.devCode).toMatch(/^\d{6}$/);
  });

  it("answers the same for a new number and for one with an account", async () => {
    const phone = uniquePhone();
    const first = await api("/api/otp", { body: { phone } });
    const { devCode } = (await first.json()) as { devCode: string };
    expect((await api("/api/auth/login", { body: { phone, code: devCode } })).status).toBe(200);
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
      await expectError(await api("/api/auth/login", { body: { phone, code: "123456" } }), 400, "validation_failed");
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

  it("throttles resends to the same phone", async () => {
    const phone = uniquePhone();
    expect((await api("/api/otp", { body: { phone } })).status).toBe(201);
    const again = await api("/api/otp", { body: { phone } });
    expect(again.status).toBe(429);
    const body = (await again.json()) as { error: { code: string; retryAfterMs: number; retryable: boolean } };
    expect(body.error).toMatchObject({ code: "rate_limited", retryable: true });
    expect(body.error.retryAfterMs).toBeGreaterThan(25_000);
  });

  it("limits codes per client address", async () => {
    const ip = uniqueIp();
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) statuses.push((await api("/api/otp", { body: { phone: uniquePhone() }, ip })).status);
    expect(statuses.slice(0, 10)).toEqual(Array(10).fill(201));
    expect(statuses.slice(10)).toEqual([429, 429]);
  });
});

describe("per-phone caps (SMS pumping)", () => {
  async function setSendHistory(phone: string, sentAt: number[]) {
    await runInDurableObject(env.PHONE.get(env.PHONE.idFromName(phone)), async (_instance, state) => {
      await state.storage.put("state", { sentAt });
    });
  }

  it("allows 5 codes per hour", async () => {
    const phone = uniquePhone();
    const now = Date.now();
    const minutesAgo = (m: number) => now - m * 60_000;
    await setSendHistory(phone, [minutesAgo(50), minutesAgo(40), minutesAgo(30), minutesAgo(20)]);
    expect((await api("/api/otp", { body: { phone } })).status).toBe(201); // the 5th this hour
    await setSendHistory(phone, [minutesAgo(50), minutesAgo(40), minutesAgo(30), minutesAgo(20), minutesAgo(10)]);
    const refused = await api("/api/otp", { body: { phone } });
    expect(refused.status).toBe(429);
    const { error } = (await refused.json()) as { error: { code: string; retryAfterMs: number } };
    expect(error.code).toBe("rate_limited");
    // free again when the oldest of the five is an hour old
    expect(error.retryAfterMs).toBeGreaterThan(9 * 60_000);
    expect(error.retryAfterMs).toBeLessThanOrEqual(10 * 60_000);
  });

  it("allows 10 codes per day", async () => {
    const phone = uniquePhone();
    const now = Date.now();
    const hoursAgo = (h: number) => now - h * 3_600_000;
    await setSendHistory(phone, [23, 21, 19, 17, 15, 13, 11, 9, 7].map(hoursAgo));
    expect((await api("/api/otp", { body: { phone } })).status).toBe(201); // the 10th today
    await setSendHistory(phone, [23, 21, 19, 17, 15, 13, 11, 9, 7, 5].map(hoursAgo));
    const refused = await api("/api/otp", { body: { phone } });
    expect(refused.status).toBe(429);
    const { error } = (await refused.json()) as { error: { retryAfterMs: number } };
    expect(Math.round(error.retryAfterMs / 3_600_000)).toBe(1); // the 23-hour-old one ages out
  });
});
