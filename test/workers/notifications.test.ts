import { env, evictDurableObject, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { UndeliveredWebhook } from "../../src/protocol/index.ts";
import { apiClient, createDirect, createGroup, login, resumeStream, type Session } from "./helpers.ts";
import { PUSH_BRIDGE_HOST } from "./push-bridge.ts";

/**
 * Offline notifications, in a runtime configured with a webhook URL (vitest.config.ts,
 * project workers-notifications): NOTIFY_AFTER_MS is 2 s and the push bridge is a
 * recorder in Node that every outbound fetch reaches.
 */

const SECRET = "test-notify-secret-0123456789abcdef0123";

type Received = { body: string; signature: string | null; timestamp: string | null; contentType: string | null; status: number };

async function received(userId: string): Promise<Received[]> {
  return (await fetch(`http://${PUSH_BRIDGE_HOST}/received?userId=${encodeURIComponent(userId)}`)).json();
}

/** The bridge answers the next hooks for `userId` with these statuses (then 200). */
async function script(userId: string, statuses: number[]): Promise<void> {
  await fetch(`http://${PUSH_BRIDGE_HOST}/script`, { method: "POST", body: JSON.stringify({ userId, statuses }) });
}

async function poll<T>(read: () => Promise<T>, done: (value: T) => boolean, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** What the recipient's account stored for a chat's notifications (undefined: nothing). */
async function record(userId: string, chatId: string) {
  return runInDurableObject(env.USER.get(env.USER.idFromName(userId)), (_instance, state) =>
    state.storage.kv.get<{ dueAt: number | null; handledSeq: number; notifiedSeq: number; attempts: number }>(`notify:${chatId}`),
  );
}

/**
 * Waits until `session`'s account has been told of the chat up to `seq` and has nothing
 * planned for it any more: every look it planned for those messages has happened.
 */
async function settled(session: Session, chatId: string, seq: number): Promise<void> {
  await poll(
    async () => {
      const { chats } = await apiClient(session).chats();
      const entry = chats.find((chat) => chat.chatId === chatId);
      const stored = await record(session.user.userId, chatId);
      return (entry?.headSeq ?? 0) >= seq && (stored === undefined || stored.dueAt === null);
    },
    (done) => done,
    `${session.user.userId}'s notifications for ${chatId} up to ${seq} to settle`,
  );
}

async function send(session: Session, chatId: string, body: string) {
  return apiClient(session).sendMessage(chatId, { clientId: crypto.randomUUID(), body });
}

async function expectSigned(hook: Received): Promise<UndeliveredWebhook> {
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(SECRET), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(hook.body)));
  const hex = [...mac].map((byte) => byte.toString(16).padStart(2, "0")).join("");
  expect(hook.signature).toBe(`sha256=${hex}`);
  expect(hook.contentType).toBe("application/json");
  const body = UndeliveredWebhook.parse(JSON.parse(hook.body));
  expect(hook.timestamp).toBe(String(body.sentAt));
  return body;
}

describe("offline notifications", () => {
  it("sends an offline recipient one signed webhook per burst, without content, and another only after their devices caught up", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    // Three messages at once: one burst.
    const sent = await Promise.all(["first secret text", "second secret text", "third secret text"].map((text) => send(alice, chatId, text)));
    const latest = sent.reduce((a, b) => (a.seq > b.seq ? a : b));

    const [hook] = await poll(() => received(bob.user.userId), (hooks) => hooks.length > 0, "bob's webhook");
    const body = await expectSigned(hook!);
    expect(body).toEqual({
      type: "messages.undelivered",
      notificationId: expect.any(String),
      userId: bob.user.userId,
      chatId,
      senderId: alice.user.userId,
      count: 3,
      seq: latest.seq,
      at: latest.createdAt,
      sentAt: expect.any(Number),
    });
    expect(hook!.body).not.toContain("secret");
    await settled(bob, chatId, latest.seq);
    // Alice is the sender: nothing for her.
    expect(await received(alice.user.userId)).toEqual([]);

    // More while Bob's devices still have nothing: the same burst, no second webhook.
    const more = await send(alice, chatId, "fourth secret text");
    await settled(bob, chatId, more.seq);
    expect(await record(bob.user.userId, chatId)).toMatchObject({ dueAt: null, notifiedSeq: latest.seq, handledSeq: more.seq });
    expect(await received(bob.user.userId)).toHaveLength(1);

    // A device of Bob's catches up; a later message that again reaches none is a new burst.
    await apiClient(bob).reportDelivered(chatId, more.seq);
    const next = await send(alice, chatId, "fifth secret text");
    const hooks = await poll(() => received(bob.user.userId), (list) => list.length > 1, "bob's second webhook");
    const second = await expectSigned(hooks[1]!);
    expect(second).toMatchObject({ count: 1, seq: next.seq, senderId: alice.user.userId });
    expect(second.notificationId).not.toBe(body.notificationId);
    await settled(bob, chatId, next.seq);
    expect(await received(bob.user.userId)).toHaveLength(2);
  });

  it("sends nothing to a recipient whose device reports delivery, and nothing for a muted chat", async () => {
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    const chatId = await createGroup(alice, [bob, carol]);
    await apiClient(carol).updateChatSettings(chatId, { mutedUntil: Date.now() + 3_600_000 });
    // Bob is online: his device reports what it receives, as the SDK does.
    const { socket } = await resumeStream(bob.credentials, { [chatId]: 1 });
    const sent = await Promise.all(["one", "two", "three"].map((text) => send(alice, chatId, text)));
    const last = Math.max(...sent.map((result) => result.seq));
    await socket.until(() => socket.events().find((event) => event.seq === last), "the messages on bob's stream");
    socket.send({ type: "delivered", id: "d1", chatId, seq: last });
    expect(await socket.reply("d1")).toMatchObject({ ok: true, result: { deliveredSeq: last } });

    await settled(bob, chatId, last);
    await settled(carol, chatId, last);
    expect(await received(bob.user.userId)).toEqual([]);
    // Carol's account planned nothing: the chat was muted.
    expect(await record(carol.user.userId, chatId)).toBeUndefined();
    expect(await received(carol.user.userId)).toEqual([]);
  });

  it("retries a webhook the bridge failed with the same notification id, and gives up at once on a 4xx", async () => {
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    await script(bob.user.userId, [500]);
    await script(carol.user.userId, [400]);
    const chatId = await createGroup(alice, [bob, carol]);
    const { seq } = await send(alice, chatId, "are you there?");

    const hooks = await poll(() => received(bob.user.userId), (list) => list.length > 1, "bob's retried webhook");
    expect(hooks.map((hook) => hook.status)).toEqual([500, 200]);
    const [first, retry] = await Promise.all(hooks.map(expectSigned));
    expect(retry!.notificationId).toBe(first!.notificationId);
    expect(retry!.sentAt).toBeGreaterThan(first!.sentAt);
    await settled(bob, chatId, seq);
    expect(await received(bob.user.userId)).toHaveLength(2);

    await settled(carol, chatId, seq);
    const refused = await received(carol.user.userId);
    expect(refused.map((hook) => hook.status)).toEqual([400]);
    // Given up: the burst counts as notified, so the next message of it does not call again.
    expect(await record(carol.user.userId, chatId)).toMatchObject({ dueAt: null, notifiedSeq: seq, attempts: 0 });
  });

  it("forgets a chat the recipient left, and keeps no state once their devices caught up", async () => {
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    const chatId = await createGroup(alice, [bob, carol]);
    const { seq } = await send(alice, chatId, "hello");
    await apiClient(bob).leaveChat(chatId);
    await settled(bob, chatId, seq);
    expect(await record(bob.user.userId, chatId)).toBeUndefined();

    await poll(() => received(carol.user.userId), (list) => list.length > 0, "carol's webhook");
    await settled(carol, chatId, seq);
    // Carol's device catches up, and then has the next message too before the delay.
    await apiClient(carol).reportDelivered(chatId, seq + 1);
    const reply = await send(alice, chatId, "welcome back");
    await apiClient(carol).reportDelivered(chatId, reply.seq);
    await settled(carol, chatId, reply.seq);
    expect(await record(carol.user.userId, chatId)).toBeUndefined();
    expect(await received(carol.user.userId)).toHaveLength(1);
  });

  it("does not notify a message that arrived just before a planned look and reaches a device within the delay", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const first = await send(alice, chatId, "one");
    await apiClient(bob).reportDelivered(chatId, first.seq);
    // The look planned for the first message runs about 2 s after it (NOTIFY_AFTER_MS): a
    // second message lands a moment before, and its device reports it soon after.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, first.createdAt + 2_000 - 150 - Date.now())));
    const second = await send(alice, chatId, "two");
    await new Promise((resolve) => setTimeout(resolve, 400));
    await apiClient(bob).reportDelivered(chatId, second.seq);
    await settled(bob, chatId, second.seq);
    expect(await received(bob.user.userId)).toEqual([]);
  });

  it("heals a look whose deadline was lost (the object reset in the middle of it) at the chat's next message", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    await send(alice, chatId, "one");
    const stub = env.USER.get(env.USER.idFromName(bob.user.userId));
    await poll(() => record(bob.user.userId, chatId), (stored) => stored?.dueAt != null, "a look planned");
    // The deadline goes, as when a reset cut a run short after deleting it.
    await runInDurableObject(stub, async (_instance, state) => {
      state.storage.kv.delete("deadline:offline-notifications");
      await state.storage.deleteAlarm();
    });
    await evictDurableObject(stub);
    const second = await send(alice, chatId, "two");
    const hooks = await poll(() => received(bob.user.userId), (list) => list.length > 0, "bob's webhook");
    expect((await expectSigned(hooks[0]!)).count).toBe(2);
    await settled(bob, chatId, second.seq);
  });
});
