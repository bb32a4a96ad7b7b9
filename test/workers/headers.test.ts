import { describe, expect, it } from "vitest";
import type { ErrorResponse } from "../../src/protocol/index.ts";
import { api, connect, createDirect, login, restSend, socketSend, awayFromRateWindowEdge } from "./helpers.ts";

const nosniff = (response: Response) => expect(response.headers.get("x-content-type-options"), `${response.status} ${response.url}`).toBe("nosniff");

/** Checks the 429's Retry-After against its body: whole seconds, rounded up, at least 1. */
async function expectRetryAfter(response: Response): Promise<number> {
  expect(response.status).toBe(429);
  const { error } = (await response.json()) as ErrorResponse;
  expect(error.code).toBe("rate_limited");
  expect(error.retryAfterMs).toBeGreaterThan(0);
  const header = response.headers.get("retry-after");
  expect(header).toMatch(/^\d+$/);
  expect(Number(header)).toBe(Math.max(1, Math.ceil(error.retryAfterMs! / 1000)));
  nosniff(response);
  return Number(header);
}

describe("response headers", () => {
  it("X-Content-Type-Options: nosniff on JSON answers, errors and 404s", async () => {
    const alice = await login();
    const responses = [
      await api("/healthz"), // 200
      await api("/api/me", { token: alice.credentials }), // 200
      await api("/api/chats", { token: alice.credentials, body: { kind: "group" } }), // 400 validation_failed
      await api("/api/chats", { token: alice.credentials, body: "{", headers: { "content-type": "application/json" } }), // 400 invalid_json
      await api("/api/chats", { token: alice.credentials, body: "x", headers: { "content-type": "text/plain" } }), // 415
      await api("/api/me"), // 401
      await api("/api/no-such-endpoint"), // 404
      await api("/nowhere"), // 404 outside /api
      await api("/api/me", { method: "PUT", token: alice.credentials }), // 404 method
      await api("/chat/g_eRWdC16tVD9B0OFB5ngj3g"), // 426 without an upgrade
      await api("/api/chats", { token: alice.credentials, body: "x".repeat(400_000) }), // 413
    ];
    expect(responses.map((r) => r.status)).toEqual([200, 200, 400, 400, 415, 401, 404, 404, 404, 426, 413]);
    for (const response of responses) nosniff(response);
    // no Retry-After where there is nothing to wait for
    for (const response of responses) expect(response.headers.get("retry-after")).toBeNull();
  });

  it("leave socket upgrades working", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const socket = await connect(chatId, alice.credentials);
    expect(await socketSend(socket, "c-1", "hello")).toMatchObject({ ok: true, result: { seq: 2 } });
  });

  it("Retry-After on a 429 from the lookup limiter (60 per minute per account)", async () => {
    await awayFromRateWindowEdge();
    const alice = await login();
    const statuses: number[] = [];
    let limited: Response | null = null;
    for (let i = 0; i < 61 && !limited; i++) {
      // alternate both endpoints that share the limit
      const path = i % 2 === 0 ? "/api/users/lookup?phone=%2B14155550123" : `/api/users/${alice.user.userId}`;
      const response = await api(path, { token: alice.credentials });
      statuses.push(response.status);
      if (response.status === 429) limited = response;
      else {
        nosniff(response);
        await response.body?.cancel();
      }
    }
    expect(statuses.filter((s) => s === 429)).toEqual([429]);
    expect(statuses).toHaveLength(61);
    expect(await expectRetryAfter(limited!)).toBe(60);
  });

  it("Retry-After on a 429 from the send rate, rounded up to whole seconds", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    // Empty the bucket (SEND_BURST 600 in the tests) over a socket, then send over REST.
    const socket = await connect(chatId, alice.credentials);
    for (let i = 0; i < 600; i++) socket.send({ type: "send", id: `f${i}`, clientId: `s${i}`, body: "x" });
    await socket.reply("f599");
    let limited: Response | null = null;
    for (let i = 0; i < 20 && !limited; i++) {
      const response = await restSend(alice, chatId, `r${i}`, "x");
      if (response.status === 429) limited = response;
      else await response.body?.cancel();
    }
    expect(limited, "no 429 after the burst").not.toBeNull();
    expect(await expectRetryAfter(limited!)).toBe(1); // the bucket refills one message a second
  });
});
