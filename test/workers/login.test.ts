import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { PhoneNumber, TokenResponse } from "../../src/protocol/index.ts";
import { api, expectError, forgetOtpSends, login, uniqueIp, uniquePhone } from "./helpers.ts";

type Issued = { code: string; attemptId: string };

/** Requests a code over HTTP (development mode returns it). */
async function requestCode(phone: string, ip = uniqueIp()): Promise<Issued> {
  const response = await api("/api/otp", { body: { phone }, ip });
  expect(response.status).toBe(201);
  const body = (await response.json()) as { devCode: string; attemptId: string };
  return { code: body.devCode, attemptId: body.attemptId };
}

const phoneStub = (phone: string) => env.PHONE.get(env.PHONE.idFromName(phone));

/**
 * A code requested straight from the number's object a minute ago (so the number's
 * 30 s interval allows another one over HTTP right away), as an attacker's request would be.
 */
async function earlierCode(phone: string, requester = "203.0.113.66"): Promise<Issued> {
  const outcome = await phoneStub(phone).requestCode(phone, requester, Date.now() - 60_000);
  if (!outcome.ok) throw new Error(`no code: ${outcome.error.code}`);
  return { code: outcome.value.code, attemptId: outcome.value.attemptId };
}

const loginWith = (phone: string, issued: Issued, ip?: string) =>
  api("/api/auth/login", { body: { phone, code: issued.code, attemptId: issued.attemptId }, ...(ip ? { ip } : {}) });

/** A code that is not `code` (the `n`th of several different wrong ones). */
const wrongCode = (code: string, n = 0) => String((Number(code) + 1 + n) % 1_000_000).padStart(6, "0");

describe("phone numbers", () => {
  it("have one canonical form: written with spaces, dashes, dots or parentheses, a number logs into the same account", async () => {
    const phone = uniquePhone(); // +1415NXXXXXX
    const [area, exchange, line] = [phone.slice(2, 5), phone.slice(5, 8), phone.slice(8)];
    const formatted = `+1 (${area}) ${exchange}-${line}`;
    const dotted = `+1.${area}.${exchange}.${line}`;
    // The code is requested with one spelling and used with another: both are one PhoneIdentity.
    const issued = await requestCode(formatted);
    const first = TokenResponse.parse(await (await loginWith(phone, issued)).json());
    expect(first.user.phone).toBe(phone);
    await forgetOtpSends(phone);
    const second = await login(dotted, "second");
    expect(second.user.userId).toBe(first.user.userId);
    expect(second.user.phone).toBe(phone);
    const found = await api(`/api/users/lookup?phone=${encodeURIComponent(formatted)}`, { token: second.credentials });
    expect(((await found.json()) as { user: { userId: string } }).user.userId).toBe(first.user.userId);
  });

  it("drop a UK trunk zero, so the variants of a valid number are one number", () => {
    for (const spelling of ["+447911123456", "+44 07911 123456", "+4407911123456", "+44 (0)7911 123456", "+44 7911-123-456"]) {
      expect(PhoneNumber.parse(spelling)).toBe("+447911123456");
    }
    expect(PhoneNumber.safeParse("+1555675").success).toBe(false);
    expect(PhoneNumber.safeParse("+4477009675736").success).toBe(false);
  });
});

describe("POST /api/auth/login", () => {
  it("creates the account on the first login and returns tokens for a new device, not to be cached", async () => {
    const phone = uniquePhone();
    const { code, attemptId } = await requestCode(phone);
    const response = await api("/api/auth/login", { body: { phone, code, attemptId, deviceName: "Pixel" } });
    expect(response.status).toBe(200);
    expect(response.headers.get("cache-control")).toBe("no-store");
    const body = TokenResponse.parse(await response.json());
    expect(body.user.phone).toBe(phone);
    expect(body.device).toMatchObject({ name: "Pixel", current: true });
    expect(body.expiresIn).toBeLessThanOrEqual(900);
    const [header, payload] = body.credentials.split(".").slice(0, 2).map((part) => JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/"))));
    expect(header.alg).toBe("HS256");
    expect(payload).toMatchObject({ sub: body.user.userId, deviceId: body.device.deviceId });
    expect(payload.exp - payload.iat).toBeLessThanOrEqual(900);
  });

  it("logs the same phone into the same account as another device", async () => {
    const first = await login();
    await forgetOtpSends(first.phone); // rather than wait out the 30 s interval
    const second = await login(first.phone, "laptop");
    expect(second.user.userId).toBe(first.user.userId);
    expect(second.device.deviceId).not.toBe(first.device.deviceId);
  });

  it("needs the attempt id that came with the code", async () => {
    const phone = uniquePhone();
    const { code } = await requestCode(phone);
    await expectError(await api("/api/auth/login", { body: { phone, code } }), 400, "validation_failed");
  });

  it("keeps the owner's code working whatever an attacker guesses on another attempt", async () => {
    const phone = uniquePhone();
    const attacker = await earlierCode(phone); // the attacker asked first: the SMS went to the owner
    const owner = await requestCode(phone);
    const ip = uniqueIp();
    for (let i = 0; i < 5; i++) {
      await expectError(await loginWith(phone, { code: wrongCode(attacker.code, i), attemptId: attacker.attemptId }, ip), 401, "invalid_code");
    }
    await expectError(await loginWith(phone, { code: wrongCode(attacker.code, 5), attemptId: attacker.attemptId }, ip), 429, "too_many_attempts");
    // Guessing with made-up attempt ids touches no attempt either.
    for (let i = 0; i < 10; i++) {
      await expectError(await loginWith(phone, { code: wrongCode(owner.code, i), attemptId: `forged${i}`.padEnd(22, "x") }, ip), 401, "invalid_code");
    }
    const response = await loginWith(phone, owner);
    expect(response.status).toBe(200);
  });

  it("answers an attempt's 6th wrong guess with too_many_attempts, and the attempt stays dead", async () => {
    const phone = uniquePhone();
    const issued = await requestCode(phone);
    const ip = uniqueIp();
    for (let i = 0; i < 5; i++) {
      await expectError(await loginWith(phone, { ...issued, code: wrongCode(issued.code, i) }, ip), 401, "invalid_code");
    }
    const sixth = await loginWith(phone, { ...issued, code: wrongCode(issued.code, 5) }, ip);
    expect(sixth.status).toBe(429);
    expect(((await sixth.json()) as { error: { code: string; retryable: boolean } }).error).toMatchObject({ code: "too_many_attempts", retryable: false });
    await expectError(await loginWith(phone, issued, ip), 429, "too_many_attempts"); // even the right code
  });

  it("answers a forged, unknown or other number's attempt id, an expired code and a number with no code exactly like a wrong code", async () => {
    const phone = uniquePhone();
    const issued = await requestCode(phone);
    const bodies: unknown[] = [];
    const refused = async (response: Response) => {
      expect(response.status).toBe(401);
      bodies.push(((await response.json()) as { error: unknown }).error);
    };
    await refused(await loginWith(phone, { ...issued, code: wrongCode(issued.code) }));
    await refused(await loginWith(phone, { ...issued, attemptId: "AAAAAAAAAAAAAAAAAAAAAA" }));
    await refused(await loginWith(phone, { ...issued, attemptId: issued.attemptId.slice(0, -1) }));
    const other = uniquePhone();
    await refused(await loginWith(other, issued)); // an attempt belongs to its number
    await refused(await loginWith(uniquePhone(), { code: "123456", attemptId: "AAAAAAAAAAAAAAAAAAAAAA" }));
    expect(new Set(bodies.map((body) => JSON.stringify(body))).size).toBe(1);
    expect(bodies[0]).toMatchObject({ code: "invalid_code", retryable: false });
    // Expired: the object's clock is moved past OTP_TTL_SECONDS.
    const late = await phoneStub(phone).verifyCode(phone, issued.attemptId, issued.code, Date.now() + 301_000);
    expect(late).toMatchObject({ ok: false, status: 401, error: bodies[0] });
    expect((await loginWith(phone, issued)).status).toBe(200); // on time, the same code still works
  });

  it("refuses a code used twice, and a login ends the number's other attempts", async () => {
    const phone = uniquePhone();
    const earlier = await earlierCode(phone);
    const issued = await requestCode(phone);
    expect((await loginWith(phone, issued)).status).toBe(200);
    await expectError(await loginWith(phone, issued), 401, "invalid_code");
    await expectError(await loginWith(phone, earlier), 401, "invalid_code");
  });

  it("validates the body", async () => {
    const attemptId = "AAAAAAAAAAAAAAAAAAAAAA";
    await expectError(await api("/api/auth/login", { body: { phone: uniquePhone(), code: "12345", attemptId } }), 400, "validation_failed");
    await expectError(await api("/api/auth/login", { body: { phone: "555", code: "123456", attemptId } }), 400, "validation_failed");
    await expectError(await api("/api/auth/login", { body: { phone: uniquePhone(), code: "123456", attemptId: "" } }), 400, "validation_failed");
    await expectError(await api("/api/auth/login", { body: { phone: uniquePhone(), code: "123456", attemptId: "x".repeat(65) } }), 400, "validation_failed");
    await expectError(await api("/api/auth/login", { body: "[1," }), 400, "invalid_json");
  });

  it("limits login attempts per client address", async () => {
    const ip = uniqueIp();
    const statuses: number[] = [];
    for (let i = 0; i < 31; i++) {
      statuses.push((await api("/api/auth/login", { body: { phone: uniquePhone(), code: "000000", attemptId: "AAAAAAAAAAAAAAAAAAAAAA" }, ip })).status);
    }
    expect(statuses.slice(0, 30).every((s) => s === 401)).toBe(true);
    expect(statuses[30]).toBe(429);
  });
});
