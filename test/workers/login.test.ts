import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { PhoneNumber, TokenResponse } from "../../src/protocol/index.ts";
import { api, expectError, forgetOtpSends, login, uniqueIp, uniquePhone } from "./helpers.ts";

async function requestCode(phone: string): Promise<string> {
  const response = await api("/api/otp", { body: { phone } });
  expect(response.status).toBe(201);
  return ((await response.json()) as { devCode: string }).devCode;
}

const wrongCode = (code: string) => String((Number(code) + 1) % 1_000_000).padStart(6, "0");

describe("phone numbers", () => {
  it("have one canonical form: written with spaces, dashes, dots or parentheses, a number logs into the same account", async () => {
    const phone = uniquePhone(); // +1415NXXXXXX
    const [area, exchange, line] = [phone.slice(2, 5), phone.slice(5, 8), phone.slice(8)];
    const formatted = `+1 (${area}) ${exchange}-${line}`;
    const dotted = `+1.${area}.${exchange}.${line}`;
    // The code is requested with one spelling and used with another: both are one PhoneIdentity.
    const code = await requestCode(formatted);
    const first = TokenResponse.parse(await (await api("/api/auth/login", { body: { phone, code } })).json());
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
  it("creates the account on the first login and returns tokens for a new device", async () => {
    const phone = uniquePhone();
    const code = await requestCode(phone);
    const response = await api("/api/auth/login", { body: { phone, code, deviceName: "Pixel" } });
    expect(response.status).toBe(200);
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
    await runInDurableObject(env.PHONE.get(env.PHONE.idFromName(first.phone)), async (_instance, state) => {
      // Skip the 30 s resend throttle rather than wait for it.
      const stored = (await state.storage.get<{ sentAt: number[] }>("state"))!;
      stored.sentAt = [];
      await state.storage.put("state", stored);
    });
    const second = await login(first.phone, "laptop");
    expect(second.user.userId).toBe(first.user.userId);
    expect(second.device.deviceId).not.toBe(first.device.deviceId);
  });

  it("refuses a wrong code with 401, and after 5 wrong codes needs a new one", async () => {
    const phone = uniquePhone();
    const code = await requestCode(phone);
    const ip = uniqueIp();
    for (let i = 0; i < 4; i++) await expectError(await api("/api/auth/login", { body: { phone, code: wrongCode(code) }, ip }), 401, "invalid_code");
    await expectError(await api("/api/auth/login", { body: { phone, code: wrongCode(code) }, ip }), 429, "too_many_attempts");
    await expectError(await api("/api/auth/login", { body: { phone, code }, ip }), 401, "invalid_code");
  });

  it("refuses an expired code", async () => {
    const phone = uniquePhone();
    const code = await requestCode(phone);
    await runInDurableObject(env.PHONE.get(env.PHONE.idFromName(phone)), async (_instance, state) => {
      const stored = (await state.storage.get<{ pending: { expiresAt: number } }>("state"))!;
      stored.pending.expiresAt = Date.now() - 1;
      await state.storage.put("state", stored);
    });
    await expectError(await api("/api/auth/login", { body: { phone, code } }), 401, "code_expired");
  });

  it("refuses a code used twice", async () => {
    const phone = uniquePhone();
    const code = await requestCode(phone);
    expect((await api("/api/auth/login", { body: { phone, code } })).status).toBe(200);
    await expectError(await api("/api/auth/login", { body: { phone, code } }), 401, "invalid_code");
  });

  it("answers a number that never asked for a code exactly like a wrong code", async () => {
    await expectError(await api("/api/auth/login", { body: { phone: uniquePhone(), code: "123456" } }), 401, "invalid_code");
  });

  it("validates the body", async () => {
    await expectError(await api("/api/auth/login", { body: { phone: uniquePhone(), code: "12345" } }), 400, "validation_failed");
    await expectError(await api("/api/auth/login", { body: { phone: "555", code: "123456" } }), 400, "validation_failed");
    await expectError(await api("/api/auth/login", { body: "[1," }), 400, "invalid_json");
  });

  it("limits login attempts per client address", async () => {
    const ip = uniqueIp();
    const statuses: number[] = [];
    for (let i = 0; i < 31; i++) statuses.push((await api("/api/auth/login", { body: { phone: uniquePhone(), code: "000000" }, ip })).status);
    expect(statuses.slice(0, 30).every((s) => s === 401)).toBe(true);
    expect(statuses[30]).toBe(429);
  });
});
