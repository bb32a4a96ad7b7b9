import { env, evictDurableObject, runInDurableObject } from "cloudflare:test";
import { drizzle } from "drizzle-orm/durable-sqlite";
import { describe, expect, it } from "vitest";
import chatRoomMigrations from "../../migrations/chat-room/migrations.js";
import userMigrations from "../../migrations/user/migrations.js";
import { applyMigrations } from "../../src/db/apply-migrations.ts";
import { configFrom } from "../../src/lib/config.ts";
import { mintId } from "../../src/lib/minted-id.ts";

type Bundle = Parameters<typeof applyMigrations>[2];

/** The bundle as it was before its later migrations: what an object created by an older version applied. */
function firstMigrationOnly(bundle: Bundle): Bundle {
  const [first] = bundle.journal.entries as { tag: string }[];
  return { journal: { ...bundle.journal, entries: [first] }, migrations: { m0000: (bundle.migrations as Record<string, string>).m0000! } } as unknown as Bundle;
}

/** Creates an object's storage with the first schema, as the previous version did, with `rows` written in it. */
async function createWithFirstSchema(stub: DurableObjectStub, bundle: Bundle, rows: (sql: SqlStorage) => void): Promise<void> {
  await runInDurableObject(stub, async (_instance, state) => {
    await applyMigrations(drizzle(state.storage), state.storage, firstMigrationOnly(bundle));
    rows(state.storage.sql);
  });
  await evictDurableObject(stub);
}

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
});
