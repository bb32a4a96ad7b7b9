import { abortAllDurableObjects, env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { configFrom } from "../../src/lib/config.ts";
import { User } from "../../src/user/user.ts";
import { ChatSummary, DeletedForEveryone, type ChatEvent, type SendResult } from "../../src/protocol/index.ts";
import {
  api,
  apiClient,
  connect,
  createDirect,
  createGroup,
  expectError,
  history,
  login,
  restSend,
  resumeStream,
  type Session,
  type TestSocket,
} from "./helpers.ts";

const deleteWindowMs = configFrom(env).deleteWindowMs;

async function send(session: Session, chatId: string, body: string, clientId: string = crypto.randomUUID(), replyToSeq?: number): Promise<SendResult> {
  const response = await restSend(session, chatId, clientId, body, replyToSeq);
  expect(response.status).toBe(201);
  return (await response.json()) as SendResult;
}

function deleteRequest(session: Session, chatId: string, seq: number | string, scope = "everyone"): Promise<Response> {
  return api(`/api/chats/${chatId}/messages/${seq}?for=${scope}`, { token: session.credentials, method: "DELETE" });
}

async function deleteForEveryone(session: Session, chatId: string, seq: number): Promise<DeletedForEveryone> {
  const response = await deleteRequest(session, chatId, seq);
  expect(response.status).toBe(200);
  return DeletedForEveryone.parse(await response.json());
}

const room = (chatId: string) => env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId));

/** Every event a socket received for `chatId`, in arrival order. */
const eventsOf = (socket: TestSocket, chatId: string): ChatEvent[] =>
  socket.frames.flatMap((frame) => (frame.type === "events" && frame.chatId === chatId ? frame.events : []));

/** The caller's entry for `chatId` in GET /api/chats. */
async function entry(session: Session, chatId: string): Promise<ChatSummary | undefined> {
  return (await apiClient(session).chats({ limit: 200 })).chats.find((chat) => chat.chatId === chatId);
}

/** Answers every `catching_up` with `sync` until `synced`, as a client does. */
async function syncUntilDone(socket: TestSocket): Promise<void> {
  let answered = 0;
  await socket.until(() => {
    const batches = socket.frames.filter((frame) => frame.type === "catching_up").length;
    while (answered < batches) socket.send({ type: "sync", id: `sync-${++answered}` });
    return socket.frames.some((frame) => frame.type === "synced");
  }, "synced");
}

let frameIds = 0;
async function ask(socket: TestSocket, frame: Record<string, unknown>) {
  const id = `d${++frameIds}`;
  socket.send({ ...frame, id });
  return socket.reply(id);
}

/** Carol saw `body` as alice's group's last message, then left: her list still previews it. */
async function formerMemberPreviewing(body: string) {
  const alice = await login();
  const carol = await login();
  const chatId = await createGroup(alice, [carol]);
  const last = await send(alice, chatId, body);
  expect((await api(`/api/chats/${chatId}/leave`, { token: carol.credentials, method: "POST" })).status).toBe(200);
  await expect.poll(() => entry(carol, chatId)).toMatchObject({ membership: "left", lastMessage: { seq: last.seq, body } });
  return { alice, carol, chatId, last };
}

/** Runs the chat's alarm (its earliest deadline), then reads the member's preview. */
async function previewAfterChatAlarm(member: Session, chatId: string) {
  await runDurableObjectAlarm(room(chatId));
  return (await entry(member, chatId))?.lastMessage;
}

describe("delete for everyone", () => {
  it("by its sender: every member sees it go, live and from any cursor, and its content leaves storage", async () => {
    const alice = await login();
    const bob = await login();
    const chatId = await createGroup(alice, [bob]);
    const first = await send(alice, chatId, "hello");
    const { socket: bobStream } = await resumeStream(bob.credentials, { [chatId]: first.seq });
    await syncUntilDone(bobStream);
    const bobSocket = await connect(chatId, bob.credentials);
    const secret = await send(alice, chatId, "the secret", "c-secret", first.seq);
    await bobSocket.until(() => bobSocket.events().find((event) => event.seq === secret.seq), "the message");

    const deleted = await deleteForEveryone(alice, chatId, secret.seq);
    expect(deleted).toEqual({ for: "everyone", chatId, seq: secret.seq, deletedSeq: secret.seq + 1, duplicate: false });
    const deleteEvent = { type: "message.deleted", seq: deleted.deletedSeq, createdAt: expect.any(Number), actorId: alice.user.userId, targetSeq: secret.seq, senderId: alice.user.userId };
    for (const socket of [bobSocket, bobStream]) {
      await socket.until(() => eventsOf(socket, chatId).find((event) => event.seq === deleted.deletedSeq), "message.deleted");
      expect(eventsOf(socket, chatId).find((event) => event.seq === deleted.deletedSeq)).toEqual(deleteEvent);
    }

    // History: the tombstone keeps who sent it and when, nothing of what it said.
    const page = await api(`/api/chats/${chatId}/messages?after=${first.seq}`, { token: bob.credentials });
    const { events, headSeq } = (await page.json()) as { events: unknown[]; headSeq: number };
    expect(headSeq).toBe(deleted.deletedSeq);
    expect(events).toStrictEqual([
      {
        type: "message",
        seq: secret.seq,
        createdAt: secret.createdAt,
        messageId: secret.messageId,
        senderId: alice.user.userId,
        senderDeviceId: alice.device.deviceId,
        clientId: "c-secret",
        deletedSeq: deleted.deletedSeq,
      },
      { ...deleteEvent, createdAt: (events[1] as { createdAt: number }).createdAt },
    ]);
    const row = await runInDurableObject(room(chatId), (_instance, state) =>
      state.storage.sql.exec("SELECT body, attachments, reply_to_seq, deleted_seq, request_hash FROM events WHERE seq = ?", secret.seq).one(),
    );
    expect(row).toMatchObject({ body: null, attachments: null, reply_to_seq: null, deleted_seq: deleted.deletedSeq });
    expect(row.request_hash).toEqual(expect.any(String));

    // Devices that were away: a chat socket and a stream resuming from before the message.
    const late = await login(bob.phone, "laptop");
    const lateSocket = await connect(chatId, late.credentials, first.seq);
    await lateSocket.until(() => lateSocket.events().length >= 2, "the catch-up");
    expect(lateSocket.events()).toEqual(events);
    const { socket: lateStream } = await resumeStream(late.credentials, { [chatId]: first.seq });
    await syncUntilDone(lateStream);
    expect(eventsOf(lateStream, chatId)).toEqual(events);
  });

  it("updates every member's chat-list preview at once (a former member's too), and the delete is not unread", async () => {
    const alice = await login();
    const bob = await login();
    const carol = await login();
    const chatId = await createGroup(alice, [bob, carol]);
    await send(alice, chatId, "one");
    const last = await send(alice, chatId, "two");
    await expect.poll(() => entry(bob, chatId)).toMatchObject({ unreadCount: 2, lastMessage: { seq: last.seq, body: "two" } });
    expect((await api(`/api/chats/${chatId}/leave`, { token: carol.credentials, method: "POST" })).status).toBe(200);
    await expect.poll(() => entry(carol, chatId)).toMatchObject({ membership: "left", lastMessage: { seq: last.seq, body: "two" } });

    const { deletedSeq } = await deleteForEveryone(alice, chatId, last.seq);
    const preview = { seq: last.seq, senderId: alice.user.userId, createdAt: last.createdAt, deleted: true };
    for (const session of [alice, bob]) {
      await expect.poll(() => entry(session, chatId)).toMatchObject({ headSeq: deletedSeq });
      expect((await entry(session, chatId))?.lastMessage).toStrictEqual(preview);
    }
    expect(await entry(bob, chatId)).toMatchObject({ unreadCount: 2 });
    expect(await entry(alice, chatId)).toMatchObject({ unreadCount: 0 });
    await expect.poll(async () => (await entry(carol, chatId))?.lastMessage).toStrictEqual(preview);
    expect(await entry(carol, chatId)).toMatchObject({ membership: "left", headSeq: deletedSeq - 1 });
  });

  it("a former member's preview is cleared even when their account fails the first notice: the chat's alarm retries it", async () => {
    const { alice, carol, chatId, last } = await formerMemberPreviewing("soon gone");

    // Carol's account fails the chat's first notice of this delete.
    const original = User.prototype.messageDeleted;
    let failed = 0;
    User.prototype.messageDeleted = function (this: User, notifiedChatId: string, seq: number) {
      if (notifiedChatId === chatId && failed === 0) {
        failed++;
        throw new Error("account unavailable");
      }
      return original.call(this, notifiedChatId, seq);
    };
    try {
      await deleteForEveryone(alice, chatId, last.seq);
      await expect.poll(() => failed).toBe(1);
      expect((await entry(carol, chatId))?.lastMessage).toMatchObject({ body: "soon gone" });
      // The chat's alarm runs its deadlines (the fan-out's first, then the retry).
      await expect.poll(() => previewAfterChatAlarm(carol, chatId), { timeout: 5000 }).toStrictEqual({
        seq: last.seq,
        senderId: alice.user.userId,
        createdAt: last.createdAt,
        deleted: true,
      });
      expect(failed).toBe(1);
      // Nothing is left waiting once the notice went through.
      await runInDurableObject(room(chatId), (_instance, state) => {
        expect([...state.storage.kv.list({ prefix: "former-preview:" })]).toEqual([]);
      });
    } finally {
      User.prototype.messageDeleted = original;
    }
  });

  it("a former member's preview is cleared even when the chat is reset before the notice is answered", async () => {
    const { alice, carol, chatId, last } = await formerMemberPreviewing("gone with the reset");

    // Carol's account never answers the first notice; meanwhile the chat's object is reset.
    const original = User.prototype.messageDeleted;
    let calls = 0;
    User.prototype.messageDeleted = function (this: User, notifiedChatId: string, seq: number) {
      if (notifiedChatId === chatId && calls++ === 0) return new Promise<void>(() => undefined);
      return original.call(this, notifiedChatId, seq);
    };
    try {
      await deleteForEveryone(alice, chatId, last.seq);
      await expect.poll(() => calls).toBe(1);
      await abortAllDurableObjects();
      expect((await entry(carol, chatId))?.lastMessage).toMatchObject({ body: "gone with the reset" });
      // The notice was stored with its retry in the delete's turn: the chat's alarm sends it again.
      await expect.poll(() => previewAfterChatAlarm(carol, chatId), { timeout: 5000 }).toStrictEqual({
        seq: last.seq,
        senderId: alice.user.userId,
        createdAt: last.createdAt,
        deleted: true,
      });
    } finally {
      User.prototype.messageDeleted = original;
    }
  });

  it("deleting twice is harmless: the same answer, duplicate, and no new event", async () => {
    const alice = await login();
    const bob = await login();
    const chatId = await createDirect(alice, bob);
    const message = await send(alice, chatId, "oops");
    const first = await deleteForEveryone(alice, chatId, message.seq);
    expect(await deleteForEveryone(alice, chatId, message.seq)).toEqual({ ...first, duplicate: true });
    // Past the window too: it only says what already happened.
    expect(await room(chatId).deleteForEveryone(alice.user.userId, message.seq, message.createdAt + deleteWindowMs + 1)).toEqual({
      ok: true,
      value: { ...first, duplicate: true },
    });
    expect((await history(bob, chatId)).headSeq).toBe(first.deletedSeq);
  });

  it("refuses someone else's message (a direct chat's peer, a group's member) and a sender past the window", async () => {
    const alice = await login();
    const bob = await login();
    const direct = await createDirect(alice, bob);
    const group = await createGroup(alice, [bob]);
    for (const chatId of [direct, group]) {
      const message = await send(alice, chatId, "mine");
      await expectError(await deleteRequest(bob, chatId, message.seq), 403, "forbidden");
    }
    const bobs = await send(bob, group, "bob's");
    const late = await room(group).deleteForEveryone(bob.user.userId, bobs.seq, bobs.createdAt + deleteWindowMs + 1);
    expect(late).toMatchObject({ ok: false, status: 403, error: { code: "delete_window_passed", retryable: false } });
    // At the window's last moment it is still allowed.
    expect(await room(group).deleteForEveryone(bob.user.userId, bobs.seq, bobs.createdAt + deleteWindowMs)).toMatchObject({ ok: true });
  });

  it("lets an admin of a group or a broadcast delete any message, at any time", async () => {
    const alice = await login();
    const bob = await login();
    const group = await createGroup(alice, [bob]);
    const bobs = await send(bob, group, "off topic");
    const deleted = await deleteForEveryone(alice, group, bobs.seq);
    const page = await history(bob, group, `?after=${bobs.seq}`);
    expect(page.events[0]).toMatchObject({ type: "message.deleted", seq: deleted.deletedSeq, actorId: alice.user.userId, senderId: bob.user.userId, targetSeq: bobs.seq });

    const broadcast = await createGroup(alice, [bob], "broadcast", "News");
    expect((await api(`/api/chats/${broadcast}/members/${bob.user.userId}/role`, { token: bob.credentials, method: "PUT", body: { role: "admin" } })).status).toBe(403);
    expect((await api(`/api/chats/${broadcast}/members/${bob.user.userId}/role`, { token: alice.credentials, method: "PUT", body: { role: "admin" } })).status).toBe(200);
    const news = await send(bob, broadcast, "news");
    expect(await room(broadcast).deleteForEveryone(alice.user.userId, news.seq, news.createdAt + 10 * deleteWindowMs)).toMatchObject({
      ok: true,
      value: { seq: news.seq, duplicate: false },
    });
  });

  it("refuses a former member, and answers not_found for what is not a message", async () => {
    const alice = await login();
    const bob = await login();
    const chatId = await createGroup(alice, [bob]);
    const bobs = await send(bob, chatId, "bye");
    const { deletedSeq } = await deleteForEveryone(alice, chatId, (await send(alice, chatId, "x")).seq);
    for (const seq of [1, deletedSeq, deletedSeq + 1, 999_999]) await expectError(await deleteRequest(alice, chatId, seq), 404, "not_found");
    await expectError(await deleteRequest(alice, chatId, "abc"), 400, "validation_failed");
    await expectError(await deleteRequest(alice, chatId, bobs.seq, "nobody"), 400, "validation_failed");
    await expectError(await api(`/api/chats/${chatId}/messages/${bobs.seq}`, { token: alice.credentials, method: "DELETE" }), 400, "validation_failed");

    expect((await api(`/api/chats/${chatId}/leave`, { token: bob.credentials, method: "POST" })).status).toBe(200);
    await expectError(await deleteRequest(bob, chatId, bobs.seq), 403, "not_a_member");
    const outsider = await login();
    await expectError(await deleteRequest(outsider, chatId, bobs.seq), 403, "not_a_member");
  });

  it("a retried send of a deleted message gets its original ack; a deleted message cannot be replied to", async () => {
    const alice = await login();
    const bob = await login();
    const chatId = await createDirect(alice, bob);
    const original = await send(alice, chatId, "take this back", "c-retry");
    await deleteForEveryone(alice, chatId, original.seq);
    const retry = await restSend(alice, chatId, "c-retry", "take this back");
    expect(retry.status).toBe(200);
    expect(await retry.json()).toEqual({ ...original, duplicate: true });
    await expectError(await restSend(bob, chatId, "c-reply", "what was it?", original.seq), 400, "invalid_reply");
  });

  it("a retried send of a deleted message stored before request hashes were kept still gets its original ack", async () => {
    const alice = await login();
    const bob = await login();
    const chatId = await createDirect(alice, bob);
    const quoted = await send(bob, chatId, "quote me");
    const original = await send(alice, chatId, "an old message", "c-legacy", quoted.seq);
    // As stored before the request hash column existed.
    await runInDurableObject(room(chatId), (_instance, state) => {
      state.storage.sql.exec("UPDATE events SET request_hash = NULL WHERE seq = ?", original.seq);
    });
    await deleteForEveryone(alice, chatId, original.seq);
    const retry = await restSend(alice, chatId, "c-legacy", "an old message", quoted.seq);
    expect(retry.status).toBe(200);
    expect(await retry.json()).toEqual({ ...original, duplicate: true });
    // Other content under the same clientId is still a conflict.
    await expectError(await restSend(alice, chatId, "c-legacy", "something else", quoted.seq), 409, "idempotency_conflict");
    await expectError(await restSend(alice, chatId, "c-legacy", "an old message"), 409, "idempotency_conflict");
  });

  it("works from a chat socket and from a device stream", async () => {
    const alice = await login();
    const bob = await login();
    const chatId = await createGroup(alice, [bob]);
    const one = await send(alice, chatId, "one");
    const two = await send(alice, chatId, "two");
    const socket = await connect(chatId, alice.credentials);
    expect(await ask(socket, { type: "delete", seq: one.seq, for: "everyone" })).toMatchObject({
      ok: true,
      result: { for: "everyone", chatId, seq: one.seq, duplicate: false },
    });
    // As for a send: the deleting socket gets its reply, then the event.
    await socket.until(() => socket.events().find((event) => event.type === "message.deleted"), "its own delete event");
    const replyAt = socket.frames.findIndex((frame) => frame.type === "reply");
    const eventAt = socket.frames.findIndex((frame) => frame.type === "events");
    expect(replyAt).toBeGreaterThan(0);
    expect(replyAt).toBeLessThan(eventAt);
    expect(await ask(socket, { type: "delete", seq: 1, for: "everyone" })).toMatchObject({ ok: false, error: { code: "not_found" } });
    const { socket: stream } = await resumeStream(alice.credentials);
    expect(await ask(stream, { type: "delete", chatId, seq: two.seq, for: "everyone" })).toMatchObject({
      ok: true,
      result: { for: "everyone", chatId, seq: two.seq, duplicate: false },
    });
    expect(await ask(stream, { type: "delete", chatId, seq: two.seq, for: "all" })).toMatchObject({ ok: false, error: { code: "validation_failed" } });
    const events = (await history(bob, chatId, `?after=${two.seq}`)).events;
    expect(events.map((event) => [event.type, "targetSeq" in event ? event.targetSeq : null])).toEqual([
      ["message.deleted", one.seq],
      ["message.deleted", two.seq],
    ]);
  });
});
