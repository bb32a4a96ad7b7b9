import { env, evictDurableObject, runInDurableObject } from "cloudflare:test";
import { drizzle } from "drizzle-orm/durable-sqlite";
import { describe, expect, it } from "vitest";
import chatRoomMigrations from "../../migrations/chat-room/migrations.js";
import userMigrations from "../../migrations/user/migrations.js";
import { applyMigrations } from "../../src/db/apply-migrations.ts";
import { configFrom } from "../../src/lib/config.ts";
import { mintId } from "../../src/lib/minted-id.ts";

type Bundle = Parameters<typeof applyMigrations>[2];

/** The bundle as it was with its first `count` migrations: what an object created by an older version applied. */
function firstMigrations(bundle: Bundle, count: number): Bundle {
  const entries = (bundle.journal.entries as { tag: string }[]).slice(0, count);
  const all = bundle.migrations as Record<string, string>;
  const migrations = Object.fromEntries(entries.map((_entry, index) => {
    const key = `m${String(index).padStart(4, "0")}`;
    return [key, all[key]!];
  }));
  return { journal: { ...bundle.journal, entries }, migrations } as unknown as Bundle;
}

/** Creates an object's storage with the first `count` migrations, as an older version did, with `rows` written in it. */
async function createWithSchema(stub: DurableObjectStub, bundle: Bundle, count: number, rows: (sql: SqlStorage) => void): Promise<void> {
  await runInDurableObject(stub, async (_instance, state) => {
    await applyMigrations(drizzle(state.storage), state.storage, firstMigrations(bundle, count));
    rows(state.storage.sql);
  });
  await evictDurableObject(stub);
}

const createWithFirstSchema = (stub: DurableObjectStub, bundle: Bundle, rows: (sql: SqlStorage) => void) => createWithSchema(stub, bundle, 1, rows);

describe("objects created by the previous schema", () => {
  it("keep their chat and members when the chat's object upgrades to membership periods", async () => {
    const secret = configFrom(env).hmacSecret;
    const [chatId, alice, bob] = await Promise.all([mintId(secret, "g"), mintId(secret, "u"), mintId(secret, "u")]);
    const stub = env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId));
    await createWithFirstSchema(stub, chatRoomMigrations, (sql) => {
      sql.exec("INSERT INTO chat (chat_id, kind, name, description, created_by, created_at) VALUES (?, 'group', 'Old', '', ?, 1000)", chatId, alice);
      sql.exec("INSERT INTO members (user_id, role, joined_seq, left_seq, notified_seq) VALUES (?, 'admin', 1, NULL, 1), (?, 'member', 1, NULL, 1)", alice, bob);
      sql.exec("INSERT INTO events (seq, type, created_at, actor_id, data) VALUES (1, 'chat.created', 1000, ?, '{}')", alice);
      sql.exec("INSERT INTO events (seq, type, created_at, actor_id, actor_device_id, client_id, message_id, body) VALUES (2, 'message', 2000, ?, 'dv_x', 'c1', 'm1', 'hello')", bob);
    });
    const chat = await stub.getChat(bob);
    expect(chat).toMatchObject({ ok: true, value: { chatId, name: "Old", headSeq: 2, members: [{ userId: alice, role: "admin", joinedSeq: 1 }, { userId: bob, role: "member", joinedSeq: 1 }] } });
    // and the upgraded table takes a second period
    expect(await stub.leave(bob)).toMatchObject({ ok: true, value: { seq: 3 } });
    expect(await stub.fanOutStateRows()).toBe(2);
  });

  it("keep their chat list when the account's object upgrades, ordered by when each chat was added", async () => {
    const secret = configFrom(env).hmacSecret;
    const [userId, first, second] = await Promise.all([mintId(secret, "u"), mintId(secret, "g"), mintId(secret, "g")]);
    const stub = env.USER.get(env.USER.idFromName(userId));
    await createWithFirstSchema(stub, userMigrations, (sql) => {
      sql.exec("INSERT INTO profile (user_id, phone, created_at) VALUES (?, '+14155550100', 1000)", userId);
      sql.exec("INSERT INTO chats (chat_id, kind, name, added_at) VALUES (?, 'group', 'First', 1000), (?, 'group', 'Second', 2000)", first, second);
    });
    const list = await stub.listChats({ limit: 10 });
    expect(list.chats).toMatchObject([
      { chatId: second, name: "Second", lastActivityAt: 2000, headSeq: 0, membership: "member" },
      { chatId: first, name: "First", lastActivityAt: 1000, headSeq: 0, membership: "member" },
    ]);
    expect(await stub.me()).toMatchObject({ userId, groupAdd: "everyone" });
  });

  it("number the chat's messages and start read positions at the head when the chat's object upgrades to read positions", async () => {
    const secret = configFrom(env).hmacSecret;
    const [chatId, alice, bob, carol] = await Promise.all([mintId(secret, "g"), mintId(secret, "u"), mintId(secret, "u"), mintId(secret, "u")]);
    // Sends lease tokens from the sender's account: alice has one.
    await env.USER.get(env.USER.idFromName(alice)).ensureAccount(alice, "+14155550101");
    const stub = env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId));
    await createWithSchema(stub, chatRoomMigrations, 2, (sql) => {
      sql.exec("INSERT INTO chat (chat_id, kind, name, description, created_by, created_at) VALUES (?, 'group', 'Old', '', ?, 1000)", chatId, alice);
      sql.exec(
        "INSERT INTO members (user_id, role, joined_seq, left_seq, notified_seq) VALUES (?, 'admin', 1, NULL, 5), (?, 'member', 1, NULL, 5), (?, 'member', 1, 4, 4)",
        alice, bob, carol,
      );
      sql.exec("INSERT INTO events (seq, type, created_at, actor_id, data) VALUES (1, 'chat.created', 1000, ?, '{}')", alice);
      const message = "INSERT INTO events (seq, type, created_at, actor_id, actor_device_id, client_id, message_id, body) VALUES (?, 'message', ?, ?, 'dv_x', ?, ?, ?)";
      sql.exec(message, 2, 2000, alice, "c2", "m2", "hello");
      sql.exec(message, 3, 3000, bob, "c3", "m3", "hi");
      sql.exec("INSERT INTO events (seq, type, created_at, actor_id, data) VALUES (4, 'member.left', 4000, ?, '{}')", carol);
      sql.exec(message, 5, 5000, alice, "c5", "m5", "bye carol");
    });
    // Reading the upgraded chat: everything stored before counts as read.
    expect(await stub.markRead(bob, 2)).toMatchObject({ ok: true, value: { headSeq: 5, readSeq: 5, unreadCount: 0, lastMessage: { seq: 5, senderId: alice, body: "bye carol" } } });
    const stored = await runInDurableObject(stub, (_instance, state) => ({
      numbers: state.storage.sql.exec<{ seq: number; message_no: number | null }>("SELECT seq, message_no FROM events ORDER BY seq").toArray(),
      reads: state.storage.sql.exec<{ user_id: string; read_seq: number }>("SELECT user_id, read_seq FROM members ORDER BY user_id").toArray(),
    }));
    expect(stored.numbers).toEqual([
      { seq: 1, message_no: null },
      { seq: 2, message_no: 1 },
      { seq: 3, message_no: 2 },
      { seq: 4, message_no: null },
      { seq: 5, message_no: 3 },
    ]);
    expect(new Map(stored.reads.map((row) => [row.user_id, row.read_seq]))).toEqual(new Map([[alice, 5], [bob, 5], [carol, 4]]));
    // The numbering continues: one new message is one unread for bob.
    expect(await stub.send({ userId: alice, deviceId: "dv_x" }, { clientId: "c6", body: "news" })).toMatchObject({ ok: true, value: { seq: 6 } });
    expect(await stub.markRead(bob, 5)).toMatchObject({ ok: true, value: { headSeq: 6, readSeq: 5, unreadCount: 1, lastMessage: { seq: 6, body: "news" } } });
  });

  it("count what members had read as delivered and seen when the chat's object upgrades to receipts", async () => {
    const secret = configFrom(env).hmacSecret;
    const [chatId, alice, bob, carol] = await Promise.all([mintId(secret, "g"), mintId(secret, "u"), mintId(secret, "u"), mintId(secret, "u")]);
    const stub = env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId));
    await createWithSchema(stub, chatRoomMigrations, 3, (sql) => {
      sql.exec("INSERT INTO chat (chat_id, kind, name, description, created_by, created_at) VALUES (?, 'group', 'Old', '', ?, 1000)", chatId, alice);
      sql.exec(
        "INSERT INTO members (user_id, role, joined_seq, left_seq, notified_seq, read_seq) VALUES (?, 'admin', 1, NULL, 4, 4), (?, 'member', 1, NULL, 4, 3), (?, 'member', 1, NULL, 4, 2)",
        alice, bob, carol,
      );
      sql.exec("INSERT INTO events (seq, type, created_at, actor_id, data) VALUES (1, 'chat.created', 1000, ?, '{}')", alice);
      const message = "INSERT INTO events (seq, type, created_at, actor_id, actor_device_id, client_id, message_id, body, message_no) VALUES (?, 'message', ?, ?, 'dv_x', ?, ?, ?, ?)";
      sql.exec(message, 2, 2000, alice, "c2", "m2", "one", 1);
      sql.exec(message, 3, 3000, alice, "c3", "m3", "two", 2);
      sql.exec(message, 4, 4000, alice, "c4", "m4", "three", 3);
    });
    // Bob had read up to 3, Carol up to 2: seen (and delivered) that far, with no times recorded.
    expect(await stub.messageStatus(alice, 2)).toMatchObject({ ok: true, value: { status: "seen", recipients: 2, seen: 2, members: [{ deliveredAt: null, seenAt: null }, { deliveredAt: null, seenAt: null }] } });
    expect(await stub.messageStatus(alice, 3)).toMatchObject({ ok: true, value: { status: "sent", delivered: 1, seen: 1 } });
    expect(await stub.reportDelivered(carol, 4)).toMatchObject({ ok: true, value: { deliveredSeq: 4, seenSeq: 2 } });
  });

  it("compare retries of messages stored before request hashes with their stored content", async () => {
    const secret = configFrom(env).hmacSecret;
    const [chatId, alice, bob] = await Promise.all([mintId(secret, "g"), mintId(secret, "u"), mintId(secret, "u")]);
    await env.USER.get(env.USER.idFromName(alice)).ensureAccount(alice, "+14155550104");
    const stub = env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId));
    await createWithSchema(stub, chatRoomMigrations, 4, (sql) => {
      sql.exec("INSERT INTO chat (chat_id, kind, name, description, created_by, created_at) VALUES (?, 'group', 'Old', '', ?, 1000)", chatId, alice);
      sql.exec("INSERT INTO members (user_id, role, joined_seq, left_seq, notified_seq, read_seq, delivered_seq, seen_seq) VALUES (?, 'admin', 1, NULL, 2, 2, 2, 2), (?, 'member', 1, NULL, 2, 1, 1, 1)", alice, bob);
      sql.exec("INSERT INTO events (seq, type, created_at, actor_id, data) VALUES (1, 'chat.created', 1000, ?, '{}')", alice);
      sql.exec("INSERT INTO events (seq, type, created_at, actor_id, actor_device_id, client_id, message_id, body, message_no) VALUES (2, 'message', 2000, ?, 'dv_x', 'c2', 'm2', 'hello', 1)", alice);
    });
    const sender = { userId: alice, deviceId: "dv_x" };
    expect(await stub.send(sender, { clientId: "c2", body: "hello" })).toMatchObject({ ok: true, value: { seq: 2, messageId: "m2", duplicate: true } });
    expect(await stub.send(sender, { clientId: "c2", body: "hullo" })).toMatchObject({ ok: false, error: { code: "idempotency_conflict" } });
    // New messages are stored with their hash.
    expect(await stub.send(sender, { clientId: "c3", body: "new" })).toMatchObject({ ok: true, value: { seq: 3, duplicate: false } });
    const hashes = await runInDurableObject(stub, (_instance, state) =>
      state.storage.sql.exec<{ seq: number; request_hash: string | null }>("SELECT seq, request_hash FROM events WHERE type = 'message' ORDER BY seq").toArray(),
    );
    expect(hashes).toEqual([{ seq: 2, request_hash: null }, { seq: 3, request_hash: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/) }]);
  });

  it("keep their chat list when the account's object upgrades to the inbox, with no settings and nothing read", async () => {
    const secret = configFrom(env).hmacSecret;
    const [userId, chatId] = await Promise.all([mintId(secret, "u"), mintId(secret, "g")]);
    const stub = env.USER.get(env.USER.idFromName(userId));
    await createWithSchema(stub, userMigrations, 2, (sql) => {
      sql.exec("INSERT INTO profile (user_id, phone, created_at) VALUES (?, '+14155550102', 1000)", userId);
      sql.exec(
        "INSERT INTO chats (chat_id, kind, name, added_at, head_seq, member_count, last_activity_at, membership) VALUES (?, 'group', 'Kept', 1000, 7, 3, 2000, 'member')",
        chatId,
      );
    });
    const [kept] = (await stub.listChats({ limit: 10 })).chats;
    expect(kept).toEqual({
      chatId, kind: "group", name: "Kept", addedAt: 1000, headSeq: 7, memberCount: 3, lastActivityAt: 2000, membership: "member",
      readSeq: 0, unreadCount: 0, deliveredUpTo: 0, seenUpTo: 0, pinned: false, archived: false,
    });
    // The chat's next word lands even at the same head (its read position is newer).
    await stub.chatChanged({ chatId, kind: "group", name: "Kept", headSeq: 7, memberCount: 3, lastActivityAt: 2000, membership: "member", readSeq: 7, unreadCount: 0, deliveredUpTo: 0, seenUpTo: 0 });
    expect(await stub.updateChatSettings(chatId, { pinned: true })).toMatchObject({ ok: true, value: { headSeq: 7, readSeq: 7, pinned: true } });
  });

  it("keep their profile when the account's object upgrades to presence, with last seen shown", async () => {
    const secret = configFrom(env).hmacSecret;
    const userId = await mintId(secret, "u");
    const stub = env.USER.get(env.USER.idFromName(userId));
    await createWithSchema(stub, userMigrations, 4, (sql) => {
      sql.exec("INSERT INTO profile (user_id, phone, display_name, group_add, created_at) VALUES (?, '+14155550103', 'Old', 'contacts', 1000)", userId);
    });
    expect(await stub.me()).toEqual({ userId, phone: "+14155550103", displayName: "Old", about: "", groupAdd: "contacts", hideLastSeen: false, createdAt: 1000 });
    expect(await stub.updateProfile({ hideLastSeen: true })).toMatchObject({ displayName: "Old", groupAdd: "contacts", hideLastSeen: true });
  });
});
