import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { configFrom } from "../../src/lib/config.ts";
import { webhookSignature } from "../../src/lib/webhook.ts";
import { apiClient, createDirect, login } from "./helpers.ts";

/** Offline notifications with no webhook URL (this runtime's configuration), and their settings. */
describe("offline notifications: off and configuration", () => {
  it("stores and schedules nothing when no webhook URL is set", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const { seq } = await apiClient(alice).sendMessage(chatId, { clientId: crypto.randomUUID(), body: "anyone?" });
    // Bob's account has the message in its list: the fan-out reached it.
    for (;;) {
      const { chats } = await apiClient(bob).chats();
      if ((chats.find((chat) => chat.chatId === chatId)?.headSeq ?? 0) >= seq) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const keys = await runInDurableObject(env.USER.get(env.USER.idFromName(bob.user.userId)), (_instance, state) =>
      [...state.storage.kv.list()].map(([key]) => key),
    );
    expect(keys.filter((key) => key.startsWith("notify:") || key.includes("offline-notifications"))).toEqual([]);
  });

  const base = { JWT_SECRET: "j".repeat(32), HMAC_SECRET: "h".repeat(32) };

  it("is off by default, and needs a secret of 32 characters and an http(s) URL when on", () => {
    expect(configFrom({ ...base }).notify).toBeNull();
    const on = configFrom({ ...base, NOTIFY_WEBHOOK_URL: "https://push.example.com/hook", NOTIFY_WEBHOOK_SECRET: "s".repeat(32) });
    expect(on.notify).toEqual({ webhookUrl: "https://push.example.com/hook", webhookSecret: "s".repeat(32), afterMs: 10_000 });
    expect(() => configFrom({ ...base, NOTIFY_WEBHOOK_URL: "https://push.example.com/hook" })).toThrow(/NOTIFY_WEBHOOK_SECRET is not set/);
    expect(() => configFrom({ ...base, NOTIFY_WEBHOOK_URL: "https://push.example.com/hook", NOTIFY_WEBHOOK_SECRET: "short" })).toThrow(
      /NOTIFY_WEBHOOK_SECRET is shorter than 32/,
    );
    expect(() => configFrom({ ...base, NOTIFY_WEBHOOK_URL: "ftp://push.example.com/", NOTIFY_WEBHOOK_SECRET: "s".repeat(32) })).toThrow(/http or https/);
    expect(() => configFrom({ ...base, NOTIFY_WEBHOOK_URL: "https://x.example/", NOTIFY_WEBHOOK_SECRET: "s".repeat(32), NOTIFY_AFTER_MS: "-1" })).toThrow(
      /NOTIFY_AFTER_MS/,
    );
    // Development mode works without a secret, like the other secrets.
    const dev = configFrom({ DEV_MODE: "true", NOTIFY_WEBHOOK_URL: "http://127.0.0.1:9/hook", NOTIFY_AFTER_MS: "1500" });
    expect(dev.notify).toMatchObject({ webhookUrl: "http://127.0.0.1:9/hook", afterMs: 1500 });
    expect(dev.notify!.webhookSecret.length).toBeGreaterThanOrEqual(32);
  });

  it("signs with HMAC-SHA256 of the raw body, in lowercase hex (RFC 4231, test case 2)", async () => {
    expect(await webhookSignature("Jefe", "what do ya want for nothing?")).toBe(
      "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    );
  });
});
