import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiClient } from "../../src/client/index.ts";
import { UndeliveredWebhook } from "../../src/protocol/index.ts";
import { loggedInClient } from "./support/clients.ts";
import { OpenConnections } from "./support/connections.ts";
import { startDevServer, type DevServer } from "./support/dev-server.ts";
import { waitFor } from "./support/waiting.ts";

/**
 * Offline notifications through wrangler dev: the Worker POSTs its webhooks to a real
 * HTTP receiver on this machine, which checks each signature as a push bridge would.
 */

const SECRET = "e2e-notify-secret-0123456789abcdef0123456789";
const NOTIFY_AFTER_MS = 1500;

type Hook = { body: string; headers: IncomingHttpHeaders; status: number; valid: boolean };

/** A push bridge's check: the HMAC of the raw body, compared in constant time. */
function signatureValid(body: string, header: string | string[] | undefined): boolean {
  const expected = Buffer.from(`sha256=${createHmac("sha256", SECRET).update(body).digest("hex")}`);
  const given = Buffer.from(typeof header === "string" ? header : "");
  return given.length === expected.length && timingSafeEqual(given, expected);
}

describe("offline notifications through wrangler dev", () => {
  let server: DevServer;
  let receiver: Server;
  /** Webhooks received, per recipient (the body's userId). */
  const hooks = new Map<string, Hook[]>();
  /** Statuses to answer per recipient, in order (then 200). */
  const scripts = new Map<string, number[]>();
  const connections = new OpenConnections();
  let addresses = 0;

  beforeAll(async () => {
    receiver = createServer((request, response) => {
      let body = "";
      request.setEncoding("utf8");
      request.on("data", (chunk: string) => (body += chunk));
      request.on("end", () => {
        const userId = String((JSON.parse(body) as { userId?: unknown }).userId);
        const status = scripts.get(userId)?.shift() ?? 200;
        const valid = request.method === "POST" && request.url === "/hook" && signatureValid(body, request.headers["x-edgechat-signature"]);
        hooks.set(userId, [...(hooks.get(userId) ?? []), { body, headers: request.headers, status, valid }]);
        response.writeHead(status).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
    const { port } = receiver.address() as AddressInfo;
    server = await startDevServer({
      DEV_MODE: "true",
      OTP_SENDER: "console",
      FAN_OUT_INTERVAL_MS: "50",
      NOTIFY_WEBHOOK_URL: `http://127.0.0.1:${port}/hook`,
      NOTIFY_WEBHOOK_SECRET: SECRET,
      NOTIFY_AFTER_MS: String(NOTIFY_AFTER_MS),
    });
  });
  afterAll(async () => {
    connections.closeAll();
    await server?.stop();
    await new Promise((resolve) => receiver?.close(resolve));
  });

  async function user(name: string) {
    const api = await loggedInClient(server.url, name, `10.88.0.${++addresses}`);
    return { api, userId: api.session!.user.userId };
  }

  const received = (userId: string) => hooks.get(userId) ?? [];

  /** Waits until `api`'s chat list has the chat up to `seq`: its account has been told of those messages. */
  async function told(api: ApiClient, chatId: string, seq: number): Promise<void> {
    for (;;) {
      const { chats } = await api.chats();
      if ((chats.find((chat) => chat.chatId === chatId)?.headSeq ?? 0) >= seq) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  const send = (api: ApiClient, chatId: string, body: string) => api.sendMessage(chatId, { clientId: crypto.randomUUID(), body });
  const bodyOf = (hook: Hook) => UndeliveredWebhook.parse(JSON.parse(hook.body));

  it("an offline recipient gets exactly one signed webhook for a burst of 3, with no message text, and the next only after catching up", async () => {
    const [alice, bob] = await Promise.all([user("alice"), user("bob")]);
    const chat = await alice.api.createChat({ kind: "direct", peerId: bob.userId });

    // Bob has no device connected. Three messages at once: one burst.
    const acks = await Promise.all(["the first private text", "the second private text", "the third private text"].map((text) => send(alice.api, chat.chatId, text)));
    const latest = acks.reduce((a, b) => (a.seq > b.seq ? a : b));

    await waitFor(() => received(bob.userId).length > 0, "bob's webhook");
    const [hook] = received(bob.userId);
    expect(hook!.valid).toBe(true);
    expect(hook!.headers["content-type"]).toBe("application/json");
    const body = bodyOf(hook!);
    expect(body).toEqual({
      type: "messages.undelivered",
      notificationId: expect.any(String),
      userId: bob.userId,
      chatId: chat.chatId,
      senderId: alice.userId,
      count: 3,
      seq: latest.seq,
      at: latest.createdAt,
      sentAt: expect.any(Number),
    });
    expect(hook!.headers["x-edgechat-timestamp"]).toBe(String(body.sentAt));
    expect(hook!.body).not.toMatch(/private text/);

    // A fourth message while bob is still away belongs to the same burst. Its look is
    // due NOTIFY_AFTER_MS after it; bob catches up after that…
    const fourth = await send(alice.api, chat.chatId, "a fourth private text");
    await told(bob.api, chat.chatId, fourth.seq);
    await waitFor(() => Date.now() > fourth.createdAt + NOTIFY_AFTER_MS, "the fourth message's delay");
    await bob.api.reportDelivered(chat.chatId, fourth.seq);
    // …and a fifth, which again reaches no device, starts a new burst: the second webhook is for it alone.
    const fifth = await send(alice.api, chat.chatId, "a fifth private text");
    await waitFor(() => received(bob.userId).length > 1, "bob's second webhook");
    expect(received(bob.userId).map((hook) => hook.valid)).toEqual([true, true]);
    expect(received(bob.userId).map((hook) => [bodyOf(hook).seq, bodyOf(hook).count])).toEqual([
      [latest.seq, 3],
      [fifth.seq, 1],
    ]);
    expect(received(alice.userId)).toEqual([]);
  });

  it("an online recipient whose device reports delivery gets no webhook", async () => {
    const [alice, carol] = await Promise.all([user("alice"), user("carol")]);
    const chat = await alice.api.createChat({ kind: "direct", peerId: carol.userId });

    // Carol is online: her device stream receives the messages and reports each as delivered.
    const carolSide = connections.stream({ api: carol.api, heartbeatMs: 1000 });
    await waitFor(() => carolSide.stream.status === "live", "carol's stream live");
    const reports: Promise<unknown>[] = [];
    carolSide.stream.on("event", (chatId, event) => {
      if (event.type === "message") reports.push(carol.api.reportDelivered(chatId, event.seq));
    });
    const acks = await Promise.all(["one", "two", "three"].map((text) => send(alice.api, chat.chatId, text)));
    await waitFor(() => carolSide.of(chat.chatId).filter((event) => event.type === "message").length === 3, "the messages on carol's stream");
    await Promise.all(reports);
    expect(await alice.api.messageStatus(chat.chatId, Math.max(...acks.map((ack) => ack.seq)))).toMatchObject({ status: "delivered" });

    // Carol goes offline and one more message reaches none of her devices. Her account
    // keeps one planned look per chat, so the look that notifies about this message is
    // the one planned for the first three or comes after it: had the first three gone
    // undelivered, a webhook for them would be here first, or this one would count 4.
    carolSide.stream.close();
    const later = await send(alice.api, chat.chatId, "still there?");
    await waitFor(() => received(carol.userId).length > 0, "carol's webhook once offline");
    expect(received(carol.userId).map((hook) => [bodyOf(hook).seq, bodyOf(hook).count])).toEqual([[later.seq, 1]]);
    expect(received(alice.userId)).toEqual([]);
  });

  it("a receiver that answers 500 first gets the same notification again", async () => {
    const [alice, bob] = await Promise.all([user("alice"), user("bob")]);
    scripts.set(bob.userId, [500]);
    const chat = await alice.api.createChat({ kind: "direct", peerId: bob.userId });
    const ack = await alice.api.sendMessage(chat.chatId, { clientId: crypto.randomUUID(), body: "ping" });

    await waitFor(() => received(bob.userId).length >= 2, "the retry");
    const [first, retry] = received(bob.userId);
    expect([first!.status, retry!.status]).toEqual([500, 200]);
    expect(first!.valid && retry!.valid).toBe(true);
    const [a, b] = [first, retry].map((hook) => UndeliveredWebhook.parse(JSON.parse(hook!.body)));
    expect(b!.notificationId).toBe(a!.notificationId);
    expect(b).toMatchObject({ count: 1, seq: ack.seq, senderId: alice.userId });
  });
});
