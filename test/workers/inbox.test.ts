import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ApiError } from "../../src/client/index.ts";
import { mintId } from "../../src/lib/minted-id.ts";
import { configFrom } from "../../src/lib/config.ts";
import { ChatSummary, Limits } from "../../src/protocol/index.ts";
import { api, apiClient, createDirect, createGroup, expectError, login, ownTables, restSend, type Session } from "./helpers.ts";

/** Entries arrive through the chat's fan-out (paced, asynchronous): poll for them. */
const settled = { timeout: 5_000 };

/** Every entry of the caller's GET /api/chats, page after page. */
async function allChats(session: Session): Promise<ChatSummary[]> {
  const client = apiClient(session);
  const chats: ChatSummary[] = [];
  let cursor: string | undefined;
  do {
    const page = await client.chats(cursor ? { limit: 200, cursor } : { limit: 200 });
    chats.push(...page.chats);
    cursor = page.nextCursor;
  } while (cursor);
  return chats;
}

/** The caller's entry for `chatId` in GET /api/chats (undefined while it is not there). */
async function entry(session: Session, chatId: string): Promise<ChatSummary | undefined> {
  return (await allChats(session)).find((chat) => chat.chatId === chatId);
}

async function send(session: Session, chatId: string, body: string): Promise<number> {
  const response = await restSend(session, chatId, crypto.randomUUID(), body);
  expect(response.status).toBe(201);
  return ((await response.json()) as { seq: number }).seq;
}

describe("unread counts", () => {
  it("count others' messages, never one's own or membership events", async () => {
    const [alice, bob, carol, dave] = await Promise.all([login(), login(), login(), login()]);
    const chatId = await createGroup(alice, [bob, carol]);
    await send(alice, chatId, "one");
    await send(alice, chatId, "two");
    const third = await send(alice, chatId, "three");
    const lastMessage = { seq: third, senderId: alice.user.userId, body: "three" };
    await expect.poll(() => entry(bob, chatId), settled).toMatchObject({ headSeq: third, readSeq: 1, unreadCount: 3, lastMessage });
    await expect.poll(() => entry(alice, chatId), settled).toMatchObject({ headSeq: third, readSeq: third, unreadCount: 0, lastMessage });

    // A membership event moves the head, not the count.
    const { seq: added } = await apiClient(alice).addMembers(chatId, [dave.user.userId]);
    await expect.poll(() => entry(bob, chatId), settled).toMatchObject({ headSeq: added, unreadCount: 3, lastMessage });
    // A new member sees neither what was said before them nor an unread count for it.
    await expect.poll(() => entry(dave, chatId), settled).toMatchObject({ headSeq: added, readSeq: added, unreadCount: 0 });
    expect((await entry(dave, chatId))?.lastMessage).toBeUndefined();

    // Sending reads up to one's own message (everything before it included).
    const reply = await send(bob, chatId, "got it");
    await expect.poll(() => entry(bob, chatId), settled).toMatchObject({ headSeq: reply, readSeq: reply, unreadCount: 0, lastMessage: { seq: reply, senderId: bob.user.userId, body: "got it" } });
    await expect.poll(() => entry(carol, chatId), settled).toMatchObject({ headSeq: reply, readSeq: 1, unreadCount: 4 });
    await expect.poll(() => entry(dave, chatId), settled).toMatchObject({ headSeq: reply, unreadCount: 1, lastMessage: { seq: reply } });
  });

  it("are cleared by a read on one device for every device, and a stale read does not move back", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const bobsLaptop = await login(bob.phone, "laptop");
    const chatId = await createDirect(alice, bob);
    const first = await send(alice, chatId, "a");
    await send(alice, chatId, "b");
    const head = await send(alice, chatId, "c");
    await expect.poll(() => entry(bob, chatId), settled).toMatchObject({ headSeq: head, unreadCount: 3 });

    // Part of the way: the messages after the read position are still unread.
    expect(await apiClient(bob).markRead(chatId, first)).toMatchObject({ chatId, headSeq: head, readSeq: first, unreadCount: 2 });
    expect(await entry(bobsLaptop, chatId)).toMatchObject({ readSeq: first, unreadCount: 2 });

    const read = await apiClient(bob).markRead(chatId, head);
    expect(read).toMatchObject({ chatId, headSeq: head, readSeq: head, unreadCount: 0, pinned: false, archived: false });
    // The other device's list says so at once (stored by the account when the read answered).
    expect(await entry(bobsLaptop, chatId)).toMatchObject({ readSeq: head, unreadCount: 0 });

    // A smaller seq (a device that was behind) is accepted and changes nothing.
    expect(await apiClient(bobsLaptop).markRead(chatId, first)).toMatchObject({ readSeq: head, unreadCount: 0 });
    expect(await entry(bob, chatId)).toMatchObject({ readSeq: head, unreadCount: 0 });

    // The chat keeps it: the next message counts from there.
    const next = await send(alice, chatId, "d");
    await expect.poll(() => entry(bobsLaptop, chatId), settled).toMatchObject({ headSeq: next, readSeq: head, unreadCount: 1 });
  });

  it("refuse a read beyond the head, of a non-member, of a former member and of a bad body", async () => {
    const [alice, bob, eve] = await Promise.all([login(), login(), login()]);
    const chatId = await createGroup(alice, [bob]);
    const head = await send(alice, chatId, "hi");
    const read = (session: Session, body: unknown) => api(`/api/chats/${chatId}/read`, { token: session.credentials, body });
    await expectError(await read(bob, { seq: head + 1 }), 400, "invalid_cursor");
    await expectError(await read(bob, { seq: 0 }), 400, "validation_failed");
    await expectError(await read(bob, { seq: 1.5 }), 400, "validation_failed");
    await expectError(await read(bob, { seq: 1, extra: true }), 400, "validation_failed");
    await expectError(await read(bob, {}), 400, "validation_failed");
    await expectError(await read(eve, { seq: 1 }), 403, "not_a_member");
    await apiClient(alice).removeMember(chatId, bob.user.userId);
    await expectError(await read(bob, { seq: 1 }), 403, "not_a_member");
    await expectError(await api("/api/chats/nope/read", { token: alice.credentials, body: { seq: 1 } }), 400, "validation_failed");
  });

  it("of an unknown chat are 404 and create no storage, in the chat or in the account's list", async () => {
    const alice = await login();
    const chatId = await mintId(configFrom(env).hmacSecret, "g");
    await expectError(await api(`/api/chats/${chatId}/read`, { token: alice.credentials, body: { seq: 1 } }), 404, "chat_not_found");
    await expectError(await api(`/api/chats/${chatId}/settings`, { token: alice.credentials, method: "PUT", body: { pinned: true } }), 404, "chat_not_found");
    const room = env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId));
    expect(await runInDurableObject(room, (_instance, state) => ownTables(state))).toEqual([]);
    expect(await entry(alice, chatId)).toBeUndefined();
    // A made-up id (not minted by the server) is refused before any object is addressed.
    const madeUp = `g_${"A".repeat(8)}${crypto.randomUUID().replace(/-/g, "").slice(0, 24)}`;
    await expectError(await api(`/api/chats/${madeUp}/read`, { token: alice.credentials, body: { seq: 1 } }), 404, "chat_not_found");
    await expectError(await api(`/api/chats/${madeUp}/settings`, { token: alice.credentials, method: "PUT", body: { archived: true } }), 404, "chat_not_found");
  });
});

describe("the last message", () => {
  it("of a former member is the latest within their periods, and after they are added back too", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createGroup(alice, [bob]);
    const before = await send(alice, chatId, "before");
    const { seq: removed } = await apiClient(alice).removeMember(chatId, bob.user.userId);
    const afterSeq = await send(alice, chatId, "after");
    // Bob's entry stops at his removal: he sees neither the later message nor its count.
    await expect.poll(() => entry(bob, chatId), settled).toMatchObject({
      membership: "removed",
      headSeq: removed,
      unreadCount: 1,
      lastMessage: { seq: before, senderId: alice.user.userId, body: "before" },
    });
    await expect.poll(() => entry(alice, chatId), settled).toMatchObject({ lastMessage: { seq: afterSeq, body: "after" } });

    // Added back into a quiet chat: the latest message he can see is still his old period's.
    const { seq: readded } = await apiClient(alice).addMembers(chatId, [bob.user.userId]);
    await expect.poll(() => entry(bob, chatId), settled).toMatchObject({
      membership: "member",
      headSeq: readded,
      readSeq: readded,
      unreadCount: 0,
      lastMessage: { seq: before, body: "before" },
    });
    const latest = await send(alice, chatId, "welcome back");
    await expect.poll(() => entry(bob, chatId), settled).toMatchObject({ headSeq: latest, unreadCount: 1, lastMessage: { seq: latest, body: "welcome back" } });
  });

  it("carries the body exactly as stored, and a page of big entries stops at maxPageBytes", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const body = "\u00e9\u{1f600}".repeat(10_000); // 60,000 bytes of UTF-8
    const chatIds: string[] = [];
    for (let index = 0; index < 5; index++) {
      const chatId = await createGroup(alice, [bob], "group", `Big ${index}`);
      chatIds.push(chatId);
      await send(alice, chatId, body);
    }
    await expect.poll(async () => (await allChats(bob)).filter((c) => c.lastMessage?.body === body).map((c) => c.chatId).sort(), settled).toEqual([...chatIds].sort());
    const first = await apiClient(bob).chats({ limit: 10 });
    expect(first.chats.length).toBe(4); // each entry is about 60 KiB; a fifth would pass 256 KiB
    expect(first.nextCursor).toBeDefined();
    const second = await apiClient(bob).chats({ limit: 10, cursor: first.nextCursor! });
    expect(second).toEqual({ chats: [expect.objectContaining({ chatId: chatIds[0], lastMessage: expect.objectContaining({ body }) })] });
  });
});

describe("chat settings", () => {
  it("pin, mute and archive round trip, on every device of the account", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const laptop = await login(alice.phone, "laptop");
    const chatId = await createDirect(alice, bob);
    const settings = apiClient(alice);
    expect(await settings.updateChatSettings(chatId, { pinned: true })).toMatchObject({ chatId, pinned: true, archived: false });
    const mutedUntil = Date.now() + 8 * 3_600_000;
    expect(await settings.updateChatSettings(chatId, { mutedUntil, archived: true })).toMatchObject({ pinned: true, mutedUntil, archived: true });
    expect(await entry(laptop, chatId)).toMatchObject({ pinned: true, mutedUntil, archived: true });
    // Settings are the account's own: the peer's entry does not change.
    expect(await entry(bob, chatId)).toMatchObject({ pinned: false, archived: false });
    expect((await entry(bob, chatId))?.mutedUntil).toBeUndefined();

    // A new message leaves an archived chat archived (and pinned, and muted).
    const seq = await send(bob, chatId, "are you there?");
    await expect.poll(() => entry(alice, chatId), settled).toMatchObject({ headSeq: seq, unreadCount: 1, pinned: true, mutedUntil, archived: true });

    // The list can be read by archived state.
    const other = await createGroup(alice, [bob]);
    expect((await settings.chats({ archived: true })).chats.map((c) => c.chatId)).toEqual([chatId]);
    expect((await settings.chats({ archived: false })).chats.map((c) => c.chatId)).toEqual([other]);

    const unmuted = await settings.updateChatSettings(chatId, { mutedUntil: null, pinned: false, archived: false });
    expect(unmuted).toMatchObject({ pinned: false, archived: false });
    expect(unmuted.mutedUntil).toBeUndefined();
    expect(await entry(laptop, chatId)).toEqual(unmuted);
  });

  it(`pin at most ${Limits.maxPinnedChats} chats`, async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chats = [];
    for (let index = 0; index < 4; index++) chats.push(await createGroup(alice, [bob], "group", `G${index}`));
    const client = apiClient(alice);
    for (const chatId of chats.slice(0, 3)) expect(await client.updateChatSettings(chatId, { pinned: true })).toMatchObject({ pinned: true });
    await expectError(await api(`/api/chats/${chats[3]}/settings`, { token: alice.credentials, method: "PUT", body: { pinned: true } }), 409, "too_many_pinned");
    expect(await entry(alice, chats[3]!)).toMatchObject({ pinned: false });
    // Pinning a pinned chat again, or changing another setting, is not a fourth pin.
    expect(await client.updateChatSettings(chats[0]!, { pinned: true, archived: true })).toMatchObject({ pinned: true, archived: true });
    await client.updateChatSettings(chats[1]!, { pinned: false });
    expect(await client.updateChatSettings(chats[3]!, { pinned: true })).toMatchObject({ pinned: true });
  });

  it("validate the body", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const put = (body: unknown) => api(`/api/chats/${chatId}/settings`, { token: alice.credentials, method: "PUT", body });
    await expectError(await put({}), 400, "validation_failed");
    await expectError(await put({ pinned: "yes" }), 400, "validation_failed");
    await expectError(await put({ mutedUntil: -1 }), 400, "validation_failed");
    await expectError(await put({ mutedUntil: 1.5 }), 400, "validation_failed");
    await expectError(await put({ archived: true, starred: true }), 400, "validation_failed");
    await expect(apiClient(alice).updateChatSettings(chatId, { mutedUntil: Number.MAX_SAFE_INTEGER })).resolves.toMatchObject({ mutedUntil: Number.MAX_SAFE_INTEGER });
    await expect(apiClient(alice).updateChatSettings("g_AAAAAAAAAAAAAAAAAAAAAA", { pinned: true })).rejects.toBeInstanceOf(ApiError);
  });
});
