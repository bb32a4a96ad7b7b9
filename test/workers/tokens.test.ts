import { env, runInDurableObject } from "cloudflare:test";
import { sign } from "hono/jwt";
import { describe, expect, it } from "vitest";
import { app } from "../../src/app.ts";
import { DeviceList, Me, TokenResponse } from "../../src/protocol/index.ts";
import { api, expectError, forgetOtpSends, login, awayFromRateWindowEdge } from "./helpers.ts";

const testSecret = (env as unknown as { JWT_SECRET: string }).JWT_SECRET;

describe("access tokens", () => {
  it("are required on every API route", async () => {
    for (const path of ["/api/me", "/api/devices", "/api/chats", "/api/users/lookup?phone=%2B14155550123"]) {
      await expectError(await api(path), 401, "unauthorized");
    }
  });

  it("refuses tampered, foreign, unsigned and expired tokens", async () => {
    const session = await login();
    const [header, payload, signature] = session.credentials.split(".");
    const claims = JSON.parse(atob(payload!.replace(/-/g, "+").replace(/_/g, "/")));
    const forged = btoa(JSON.stringify({ ...claims, sub: "u_someoneelse0000000000" })).replace(/=+$/, "");
    await expectError(await api("/api/me", { token: `${header}.${forged}.${signature}` }), 401, "invalid_token");
    await expectError(await api("/api/me", { token: `${session.credentials.slice(0, -2)}xx` }), 401, "invalid_token");
    await expectError(await api("/api/me", { token: await sign(claims, "another-secret-another-secret-another", "HS256") }), 401, "invalid_token");
    const none = `${btoa(JSON.stringify({ alg: "none", typ: "JWT" })).replace(/=+$/, "")}.${payload}.`;
    await expectError(await api("/api/me", { token: none }), 401, "invalid_token");
    await expectError(await api("/api/me", { token: await sign(claims, testSecret, "HS512") }), 401, "invalid_token");
    const now = Math.floor(Date.now() / 1000);
    await expectError(await api("/api/me", { token: await sign({ ...claims, iat: now - 1000, exp: now - 100 }, testSecret, "HS256") }), 401, "token_expired");
    await expectError(await api("/api/me", { token: "not-a-jwt" }), 401, "invalid_token");
    expect((await api("/api/me", { token: session.credentials })).status).toBe(200);
  });

  it("fail closed when the signing secret is missing outside development", async () => {
    const productionEnv = { ...env, DEV_MODE: undefined, JWT_SECRET: undefined, OTP_SENDER: "webhook" };
    const response = await app.request("/api/otp", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ phone: "+14155550100" }) }, productionEnv);
    expect(response.status).toBe(500);
    const body = (await response.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("misconfigured");
    expect(body.error.message).toContain("JWT_SECRET is not set");
  });

  it("never return a development code outside development mode", async () => {
    const productionEnv = { ...env, DEV_MODE: undefined, OTP_SENDER: "console" };
    const response = await app.request("/api/otp", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ phone: "+14155550101" }) }, productionEnv);
    expect(response.status).toBe(500);
    const text = await response.text();
    expect(text).toContain("misconfigured");
    expect(text).not.toContain("devCode");
  });
});

describe("refresh tokens", () => {
  it("rotate on use: the new one works; once it was used, the old one is refused and revokes the device", async () => {
    const session = await login();
    const refreshed = await api("/api/auth/refresh", { body: { refreshToken: session.refreshToken } });
    expect(refreshed.status).toBe(200);
    expect(refreshed.headers.get("cache-control")).toBe("no-store");
    const next = TokenResponse.parse(await refreshed.json());
    expect(next.refreshToken).not.toBe(session.refreshToken);
    expect(next.refreshToken).toMatch(new RegExp(`^rt1\\.${session.user.userId}\\.[A-Za-z0-9_-]{43}$`));
    expect(next.device.deviceId).toBe(session.device.deviceId);
    expect((await api("/api/me", { token: next.credentials })).status).toBe(200);
    const after = TokenResponse.parse(await (await api("/api/auth/refresh", { body: { refreshToken: next.refreshToken } })).json());

    // The replacement was used: the old token again, even within the grace period, is theft.
    await expectError(await api("/api/auth/refresh", { body: { refreshToken: session.refreshToken } }), 401, "refresh_token_reused");
    await expectError(await api("/api/me", { token: after.credentials }), 401, "device_revoked");
    await expectError(await api("/api/auth/refresh", { body: { refreshToken: after.refreshToken } }), 401, "device_revoked");
  });

  it("answer two concurrent refreshes with one token with the same pair, and keep the device logged in", async () => {
    const session = await login();
    const responses = await Promise.all([0, 1].map(() => api("/api/auth/refresh", { body: { refreshToken: session.refreshToken } })));
    expect(responses.map((r) => r.status)).toEqual([200, 200]);
    const [first, second] = await Promise.all(responses.map(async (r) => TokenResponse.parse(await r.json())));
    expect(second!.credentials).toBe(first!.credentials);
    expect(second!.refreshToken).toBe(first!.refreshToken);
    expect(first!.refreshToken).not.toBe(session.refreshToken);
    // A phone that lost the answer retries later (within the grace period): the same pair again.
    const retried = TokenResponse.parse(await (await api("/api/auth/refresh", { body: { refreshToken: session.refreshToken } })).json());
    expect({ credentials: retried.credentials, refreshToken: retried.refreshToken }).toEqual({ credentials: first!.credentials, refreshToken: first!.refreshToken });
    expect((await api("/api/me", { token: first!.credentials })).status).toBe(200);
    const next = await api("/api/auth/refresh", { body: { refreshToken: first!.refreshToken } });
    expect(next.status).toBe(200);
    expect((await api("/api/me", { token: TokenResponse.parse(await next.json()).credentials })).status).toBe(200);
  });

  it("treat a retry after the 60 s grace period as reuse and revoke the device", async () => {
    const session = await login();
    const user = env.USER.get(env.USER.idFromName(session.user.userId));
    const rotatedAt = Date.now();
    const first = await user.rotateRefreshToken(session.user.userId, session.refreshToken, rotatedAt);
    expect(first.ok).toBe(true);
    const withinGrace = await user.rotateRefreshToken(session.user.userId, session.refreshToken, rotatedAt + 60_000);
    expect(withinGrace).toEqual(first);
    const late = await user.rotateRefreshToken(session.user.userId, session.refreshToken, rotatedAt + 60_001);
    expect(late).toMatchObject({ ok: false, status: 401, error: { code: "refresh_token_reused" } });
    await expectError(await api("/api/me", { token: session.credentials }), 401, "device_revoked");
    if (first.ok) await expectError(await api("/api/auth/refresh", { body: { refreshToken: first.value.refreshToken } }), 401, "device_revoked");
  });

  it("refuse unknown and malformed tokens", async () => {
    const session = await login();
    await expectError(await api("/api/auth/refresh", { body: { refreshToken: "garbage" } }), 401, "invalid_refresh_token");
    const unknown = session.refreshToken.slice(0, -4) + "AAAA";
    await expectError(await api("/api/auth/refresh", { body: { refreshToken: unknown } }), 401, "invalid_refresh_token");
    await expectError(await api("/api/auth/refresh", { body: {} }), 400, "validation_failed");
    // well-formed, for an account that does not exist
    const madeUp = `rt1.u_${"A".repeat(22)}.${"B".repeat(43)}`;
    await expectError(await api("/api/auth/refresh", { body: { refreshToken: madeUp } }), 401, "invalid_refresh_token");
  });
});

describe("devices", () => {
  it("lists the account's devices and revokes one at once", async () => {
    const phone = (await login()).phone;
    const resetThrottle = () => forgetOtpSends(phone);
    await resetThrottle();
    const phoneSession = await login(phone, "phone");
    await resetThrottle();
    const laptop = await login(phone, "laptop");

    const list = DeviceList.parse(await (await api("/api/devices", { token: phoneSession.credentials })).json());
    const names = list.devices.map((d) => d.name);
    expect(names).toEqual(expect.arrayContaining(["phone", "laptop"]));
    expect(list.devices.find((d) => d.current)?.deviceId).toBe(phoneSession.device.deviceId);

    const revoke = await api(`/api/devices/${laptop.device.deviceId}`, { method: "DELETE", token: phoneSession.credentials });
    expect(revoke.status).toBe(204);
    await expectError(await api("/api/me", { token: laptop.credentials }), 401, "device_revoked");
    await expectError(await api("/api/auth/refresh", { body: { refreshToken: laptop.refreshToken } }), 401, "device_revoked");
    const after = DeviceList.parse(await (await api("/api/devices", { token: phoneSession.credentials })).json());
    expect(after.devices.map((d) => d.deviceId)).not.toContain(laptop.device.deviceId);

    await expectError(await api(`/api/devices/${laptop.device.deviceId}`, { method: "DELETE", token: phoneSession.credentials }), 404, "not_found");
    await expectError(await api("/api/devices/not-a-device", { method: "DELETE", token: phoneSession.credentials }), 400, "validation_failed");
  });

  it("show when each device was last active, updated by its requests at most once a minute", async () => {
    const session = await login();
    const user = env.USER.get(env.USER.idFromName(session.user.userId));
    const longAgo = Date.now() - 5 * 60_000;
    await runInDurableObject(user, (_instance, state) => {
      state.storage.sql.exec("UPDATE devices SET last_active_at = ? WHERE device_id = ?", longAgo, session.device.deviceId);
    });
    expect((await api("/api/me", { token: session.credentials })).status).toBe(200);
    const list = DeviceList.parse(await (await api("/api/devices", { token: session.credentials })).json());
    const device = list.devices.find((d) => d.deviceId === session.device.deviceId)!;
    expect(device.lastActiveAt).toBeGreaterThan(Date.now() - 10_000);
  });

  it("cannot revoke another account's device", async () => {
    const alice = await login();
    const bob = await login();
    await expectError(await api(`/api/devices/${bob.device.deviceId}`, { method: "DELETE", token: alice.credentials }), 404, "not_found");
    expect((await api("/api/me", { token: bob.credentials })).status).toBe(200);
  });

  it("logout revokes the current device", async () => {
    const session = await login();
    expect((await api("/api/auth/logout", { method: "POST", token: session.credentials })).status).toBe(204);
    await expectError(await api("/api/me", { token: session.credentials }), 401, "device_revoked");
  });
});

describe("profile and lookup", () => {
  it("reads and updates the caller's profile", async () => {
    const session = await login();
    const me = Me.parse(await (await api("/api/me", { token: session.credentials })).json());
    expect(me).toMatchObject({ userId: session.user.userId, phone: session.phone, displayName: "" });
    const patched = await api("/api/me", { method: "PATCH", token: session.credentials, body: { displayName: "Ada", about: "hi" } });
    expect(patched.status).toBe(200);
    expect(Me.parse(await patched.json())).toMatchObject({ displayName: "Ada", about: "hi" });
    await expectError(await api("/api/me", { method: "PATCH", token: session.credentials, body: { displayName: "" } }), 400, "validation_failed");
    await expectError(await api("/api/me", { method: "PATCH", token: session.credentials, body: { displayName: "x".repeat(65) } }), 400, "validation_failed");
    await expectError(await api("/api/me", { method: "PATCH", token: session.credentials, body: {} }), 400, "validation_failed");
    await expectError(await api("/api/me", { method: "PATCH", token: session.credentials, body: { phone: "+14155550123" } }), 400, "validation_failed");
  });

  it("finds a user by phone, without revealing the phone or private fields", async () => {
    const alice = await login();
    const bob = await login();
    await api("/api/me", { method: "PATCH", token: bob.credentials, body: { displayName: "Bob" } });
    const found = await api(`/api/users/lookup?phone=${encodeURIComponent(bob.phone)}`, { token: alice.credentials });
    expect(found.status).toBe(200);
    const body = (await found.json()) as { user: Record<string, unknown> };
    expect(body.user).toMatchObject({ userId: bob.user.userId, displayName: "Bob" });
    expect(body.user).not.toHaveProperty("phone");
    await expectError(await api(`/api/users/lookup?phone=%2B12025550100`, { token: alice.credentials }), 404, "not_found");
    await expectError(await api(`/api/users/lookup?phone=555`, { token: alice.credentials }), 400, "validation_failed");
    const byId = await api(`/api/users/${bob.user.userId}`, { token: alice.credentials });
    expect(byId.status).toBe(200);
  });

  it("limits lookups per account", async () => {
    await awayFromRateWindowEdge();
    const alice = await login();
    const statuses: number[] = [];
    for (let i = 0; i < 61; i++) statuses.push((await api(`/api/users/lookup?phone=%2B1202555${String(i).padStart(4, "0")}`, { token: alice.credentials })).status);
    expect(statuses.slice(0, 60).every((s) => s === 404)).toBe(true);
    expect(statuses[60]).toBe(429);
  });
});

describe("operations", () => {
  it("answers /healthz and unknown routes with JSON", async () => {
    expect(await (await api("/healthz")).json()).toEqual({ ok: true });
    await expectError(await api("/api/nothing-here"), 404, "not_found");
  });

  it("tags every response with a request id", async () => {
    const response = await api("/healthz");
    expect(response.headers.get("x-request-id")).toMatch(/.{8,}/);
  });
});
