import { env, evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { Chat, ChatList } from "../../src/protocol/index.ts";
import { api, createDirect, createGroup, expectError, history, login, restSend } from "./helpers.ts";

describe("direct chats", () => {
  it("the same pair always gets the same chat, whoever starts it", async () => {
    const alice = await login();
    const bob = await login();
    const first = await api("/api/chats", { token: alice.credentials, body: { kind: "direct", peerId: bob.user.userId } });
    expect(first.status).toBe(201);
    const chat = Chat.parse(await first.json());
    expect(chat.chatId).toMatch(/^d_/);
    expect(chat.members.map((m) => m.userId).sort()).toEqual([alice.user.userId, bob.user.userId].sort());
    const again = await api("/api/chats", { token: bob.credentials, body: { kind: "direct", peerId: alice.user.userId } });
    expect(again.status).toBe(200);
    expect(Chat.parse(await again.json()).chatId).toBe(chat.chatId);
    const carol = await login();
    expect(await createDirect(alice, carol)).not.toBe(chat.chatId);
  });

  it("appears in both members' chat lists", async () => {
    const alice = await login();
    const bob = await login();
    const chatId = await createDirect(alice, bob);
    for (const [me, peer] of [[alice, bob], [bob, alice]] as const) {
      const list = ChatList.parse(await (await api("/api/chats", { token: me.credentials })).json());
      expect(list.chats).toEqual([expect.objectContaining({ chatId, kind: "direct", peerId: peer.user.userId })]);
    }
  });

  it("refuses a chat with oneself or with an unknown account", async () => {
    const alice = await login();
    await expectError(await api("/api/chats", { token: alice.credentials, body: { kind: "direct", peerId: alice.user.userId } }), 400, "invalid_member");
    await expectError(await api("/api/chats", { token: alice.credentials, body: { kind: "direct", peerId: "u_AAAAAAAAAAAAAAAAAAAAAA" } }), 400, "invalid_member");
    await expectError(await api("/api/chats", { token: alice.credentials, body: { kind: "direct", peerId: "bob" } }), 400, "validation_failed");
  });
});

describe("groups", () => {
  it("are created with the creator as admin and a chat.created event at seq 1", async () => {
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    const response = await api("/api/chats", { token: alice.credentials, body: { kind: "group", name: "Hiking", description: "Sundays", memberIds: [bob.user.userId, carol.user.userId, bob.user.userId] } });
    expect(response.status).toBe(201);
    const chat = Chat.parse(await response.json());
    expect(chat).toMatchObject({ kind: "group", name: "Hiking", description: "Sundays", createdBy: alice.user.userId, headSeq: 1 });
    expect(chat.members).toHaveLength(3);
    expect(chat.members.find((m) => m.userId === alice.user.userId)?.role).toBe("admin");
    expect(chat.members.find((m) => m.userId === bob.user.userId)?.role).toBe("member");
    const page = await history(carol, chat.chatId);
    expect(page.events).toEqual([expect.objectContaining({ seq: 1, type: "chat.created", actorId: alice.user.userId })]);
    const list = ChatList.parse(await (await api("/api/chats", { token: carol.credentials })).json());
    expect(list.chats.map((c) => c.chatId)).toContain(chat.chatId);
  });

  it("validate name, members and kind", async () => {
    const alice = await login();
    await expectError(await api("/api/chats", { token: alice.credentials, body: { kind: "group", name: "x".repeat(129) } }), 400, "validation_failed");
    await expectError(await api("/api/chats", { token: alice.credentials, body: { kind: "group", name: "  " } }), 400, "validation_failed");
    await expectError(await api("/api/chats", { token: alice.credentials, body: { kind: "channel", name: "x" } }), 400, "validation_failed");
    await expectError(await api("/api/chats", { token: alice.credentials, body: { kind: "group", name: "x", memberIds: ["u_AAAAAAAAAAAAAAAAAAAAAA"] } }), 400, "invalid_member");
  });

  it("show their details to members only", async () => {
    const [alice, bob, eve] = await Promise.all([login(), login(), login()]);
    const chatId = await createGroup(alice, [bob]);
    expect((await api(`/api/chats/${chatId}`, { token: bob.credentials })).status).toBe(200);
    await expectError(await api(`/api/chats/${chatId}`, { token: eve.credentials }), 403, "not_a_member");
    await expectError(await api(`/api/chats/${chatId}/messages`, { token: eve.credentials }), 403, "not_a_member");
    await expectError(await restSend(eve, chatId, "c1", "hi"), 403, "not_a_member");
    await expectError(await api(`/api/chats/g_AAAAAAAAAAAAAAAAAAAAAA`, { token: eve.credentials }), 404, "chat_not_found");
    await expectError(await api(`/api/chats/nope`, { token: eve.credentials }), 400, "validation_failed");
  });

  it("in a broadcast chat only admins post", async () => {
    const [admin, reader] = await Promise.all([login(), login()]);
    const chatId = await createGroup(admin, [reader], "broadcast", "News");
    expect((await restSend(admin, chatId, "c1", "headline")).status).toBe(201);
    await expectError(await restSend(reader, chatId, "c1", "reply"), 403, "admins_only");
    expect((await history(reader, chatId)).headSeq).toBe(2);
  });
});

describe("chat lists", () => {
  it("are repaired by the chat's alarm when a member's account missed the chat", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createGroup(alice, [bob]);
    const bobsObject = env.USER.get(env.USER.idFromName(bob.user.userId));
    const chatObject = env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId));
    // As if the object had died between storing the chat and telling bob's account.
    await runInDurableObject(bobsObject, (_instance, state) => void state.storage.sql.exec("DELETE FROM chats"));
    await runInDurableObject(chatObject, (_instance, state) => {
      state.storage.sql.exec("UPDATE members SET notified_seq = 0 WHERE user_id = ?", bob.user.userId);
    });
    await evictDurableObject(chatObject);
    const listed = async () => ChatList.parse(await (await api("/api/chats", { token: bob.credentials })).json()).chats.map((c) => c.chatId);
    expect(await listed()).toEqual([]);
    expect(await runDurableObjectAlarm(chatObject)).toBe(true);
    expect(await listed()).toEqual([chatId]);
    // nothing left to do: the next alarm run finds no member behind
    expect(await runDurableObjectAlarm(chatObject)).toBe(false);
  });
});

describe("REST send and history", () => {
  it("stores a message once per clientId and reports a retry as a duplicate", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const first = await restSend(alice, chatId, "c-1", "hello");
    expect(first.status).toBe(201);
    const ack = (await first.json()) as { seq: number; messageId: string; createdAt: number; duplicate: boolean };
    expect(ack).toMatchObject({ seq: 2, duplicate: false });
    const retry = await restSend(alice, chatId, "c-1", "hello");
    expect(retry.status).toBe(200);
    expect(await retry.json()).toEqual({ ...ack, duplicate: true });
    await expectError(await restSend(alice, chatId, "c-1", "something else"), 409, "idempotency_conflict");
    const page = await history(bob, chatId);
    expect(page.events.filter((e) => e.type === "message")).toHaveLength(1);
  });

  it("recognises a retry by the request's hash, so it keeps its original ack once the stored text is gone", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    await restSend(bob, chatId, "c-0", "question?");
    const first = await restSend(alice, chatId, "c-1", "to be deleted", 2);
    const ack = (await first.json()) as { seq: number };
    // The stored content goes, as a delete for everyone will remove it.
    const stub = env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId));
    await runInDurableObject(stub, (_instance, state) => {
      state.storage.sql.exec("UPDATE events SET body = NULL, reply_to_seq = NULL WHERE seq = ?", ack.seq);
    });
    const retry = await restSend(alice, chatId, "c-1", "to be deleted", 2);
    expect(retry.status).toBe(200);
    expect(await retry.json()).toMatchObject({ seq: ack.seq, duplicate: true });
    await expectError(await restSend(alice, chatId, "c-1", "to be deleted"), 409, "idempotency_conflict");
    await expectError(await restSend(alice, chatId, "c-1", "something else", 2), 409, "idempotency_conflict");
  });

  it("accepts replies to earlier messages only", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    await restSend(alice, chatId, "c-1", "question?");
    expect((await restSend(bob, chatId, "c-1", "answer", 2)).status).toBe(201);
    await expectError(await restSend(bob, chatId, "c-2", "to chat.created", 1), 400, "invalid_reply");
    await expectError(await restSend(bob, chatId, "c-3", "to the future", 99), 400, "invalid_reply");
    const page = await history(alice, chatId);
    expect(page.events.at(-1)).toMatchObject({ seq: 3, replyToSeq: 2 });
  });

  it("validates message bodies", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    await expectError(await restSend(alice, chatId, "c-1", ""), 400, "validation_failed");
    await expectError(await restSend(alice, chatId, "c-2", "é".repeat(32 * 1024 + 1)), 400, "validation_failed"); // 64 KiB + 2 bytes of UTF-8
    expect((await restSend(alice, chatId, "c-3", "é".repeat(32 * 1024))).status).toBe(201); // exactly 64 KiB
    await expectError(await restSend(alice, chatId, "x".repeat(65), "hi"), 400, "validation_failed");
    await expectError(await api(`/api/chats/${chatId}/messages`, { token: alice.credentials, body: { clientId: "c-4", body: "hi", extra: 1 } }), 400, "validation_failed");
    expect((await history(alice, chatId)).headSeq).toBe(2);
  });

  it("paginates history by seq with before, after and a capped limit", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    for (let i = 1; i <= 25; i++) expect((await restSend(alice, chatId, `c-${i}`, `m${i}`)).status).toBe(201);
    // head is 26: seq 1 is chat.created
    const latest = await history(bob, chatId, "?limit=10");
    expect(latest.events.map((e) => e.seq)).toEqual([17, 18, 19, 20, 21, 22, 23, 24, 25, 26]);
    expect(latest).toMatchObject({ hasMore: true, headSeq: 26 });
    const older = await history(bob, chatId, "?before=17&limit=10");
    expect(older.events.map((e) => e.seq)).toEqual([7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
    const oldest = await history(bob, chatId, "?before=7&limit=10");
    expect(oldest.events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(oldest.hasMore).toBe(false);
    const newer = await history(bob, chatId, "?after=20&limit=3");
    expect(newer.events.map((e) => e.seq)).toEqual([21, 22, 23]);
    expect(newer.hasMore).toBe(true);
    const tail = await history(bob, chatId, "?after=23");
    expect(tail.events.map((e) => e.seq)).toEqual([24, 25, 26]);
    expect(tail.hasMore).toBe(false);
    // walking back from the head visits every event once
    const seen: number[] = [];
    let before: number | undefined;
    for (;;) {
      const page = await history(bob, chatId, `?limit=7${before ? `&before=${before}` : ""}`);
      seen.unshift(...page.events.map((e) => e.seq));
      if (!page.hasMore) break;
      before = page.events[0]!.seq;
    }
    expect(seen).toEqual(Array.from({ length: 26 }, (_, i) => i + 1));
    await expectError(await api(`/api/chats/${chatId}/messages?limit=201`, { token: bob.credentials }), 400, "validation_failed");
    await expectError(await api(`/api/chats/${chatId}/messages?before=5&after=2`, { token: bob.credentials }), 400, "validation_failed");
    await expectError(await api(`/api/chats/${chatId}/messages?after=-1`, { token: bob.credentials }), 400, "validation_failed");
    await expectError(await api(`/api/chats/${chatId}/messages?cursor=1`, { token: bob.credentials }), 400, "validation_failed");
    for (const bad of ["after=", "after=1e2", "before=2.5", "limit=", "limit=0"]) {
      await expectError(await api(`/api/chats/${chatId}/messages?${bad}`, { token: bob.credentials }), 400, "validation_failed");
    }
  });

  it("limits each sender's rate, and still answers retries of stored messages", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const statuses: number[] = [];
    // Burst is 600 in the tests' configuration, refilled at 1/s.
    for (let i = 0; i < 700 && !statuses.includes(429); i++) statuses.push((await restSend(alice, chatId, `c-${i}`, "x")).status);
    expect(statuses.at(-1)).toBe(429);
    expect(statuses.length).toBeGreaterThanOrEqual(600);
    const retry = await restSend(alice, chatId, "c-0", "x");
    expect(retry.status).toBe(200);
    // another sender in the same chat is not affected
    expect((await restSend(bob, chatId, "b-1", "hi")).status).toBe(201);
  }, 30_000); // 600 sequential requests
});
