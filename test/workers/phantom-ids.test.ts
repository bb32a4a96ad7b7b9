import { env, runInDurableObject } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { instanceStarts } from "../../src/lib/instance-starts.ts";
import { mintId } from "../../src/lib/minted-id.ts";
import { api, createGroup, expectError, login, openSocket, ownTables } from "./helpers.ts";

/**
 * A request about an id that does not exist creates no storage anywhere. Under the
 * runtime, merely addressing an object gives it a database, so made-up ids must not
 * reach an object at all; ids that look real but have no data must not write.
 */

const HMAC_SECRET = "test-hmac-secret-0123456789abcdef012345678"; // vitest.config.ts
const madeUp = (prefix: string) => `${prefix}_${"A".repeat(8)}${crypto.randomUUID().replace(/-/g, "").slice(0, 24)}`;

describe("made-up ids wake no object", () => {
  it("a made-up chat id is 404 chat_not_found on every route and socket, and no ChatRoom starts", async () => {
    const alice = await login();
    const starts = instanceStarts("ChatRoom");
    for (const chatId of [madeUp("g"), madeUp("d")]) {
      await expectError(await api(`/api/chats/${chatId}`, { token: alice.credentials }), 404, "chat_not_found");
      await expectError(await api(`/api/chats/${chatId}/messages`, { token: alice.credentials }), 404, "chat_not_found");
      await expectError(
        await api(`/api/chats/${chatId}/messages`, { token: alice.credentials, body: { clientId: "c1", body: "hi" } }),
        404,
        "chat_not_found",
      );
      for (const scope of ["everyone", "me"]) {
        await expectError(await api(`/api/chats/${chatId}/messages/2?for=${scope}`, { token: alice.credentials, method: "DELETE" }), 404, "chat_not_found");
      }
      const { socket } = await openSocket(chatId, alice.credentials);
      expect((await socket!.closeEvent()).code).toBe(4004);
    }
    expect(instanceStarts("ChatRoom")).toBe(starts);
  });

  it("a group with 1,023 made-up member ids is refused at once, waking no User object", async () => {
    const alice = await login();
    const memberIds = Array.from({ length: 1023 }, () => madeUp("u"));
    const starts = { user: instanceStarts("User"), room: instanceStarts("ChatRoom") };
    const started = Date.now();
    const response = await api("/api/chats", { token: alice.credentials, body: { kind: "group", name: "Spam", memberIds } });
    await expectError(response, 400, "invalid_member");
    expect(Date.now() - started).toBeLessThan(5_000); // today 8.7 s under wrangler dev; generous here
    expect(instanceStarts("User")).toBe(starts.user);
    expect(instanceStarts("ChatRoom")).toBe(starts.room);
  });

  it("looking up a made-up user id is 404, waking no User object", async () => {
    const alice = await login();
    const starts = instanceStarts("User");
    await expectError(await api(`/api/users/${madeUp("u")}`, { token: alice.credentials }), 404, "not_found");
    expect(instanceStarts("User")).toBe(starts);
  });

  it("a group still accepts real members among its ids", async () => {
    const alice = await login();
    const bob = await login();
    const chatId = await createGroup(alice, [bob]);
    expect(chatId).toMatch(/^g_[A-Za-z0-9_-]{32}$/);
  });
});

describe("ids that look real but have no data write nothing", () => {
  it("a minted chat id that was never created answers 404 and its object stays empty", async () => {
    const alice = await login();
    const chatId = await mintId(HMAC_SECRET, "g");
    await expectError(await api(`/api/chats/${chatId}`, { token: alice.credentials }), 404, "chat_not_found");
    await expectError(await api(`/api/chats/${chatId}/messages?after=0`, { token: alice.credentials }), 404, "chat_not_found");
    await expectError(
      await api(`/api/chats/${chatId}/messages`, { token: alice.credentials, body: { clientId: "c1", body: "hi" } }),
      404,
      "chat_not_found",
    );
    const { socket } = await openSocket(chatId, alice.credentials, { after: 0 });
    expect((await socket!.closeEvent()).code).toBe(4004);
    const stub = env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId));
    expect(await runInDurableObject(stub, (_instance, state) => ownTables(state))).toEqual([]);
  });

  it("a minted user id with no account is 404 and as a member is refused; its object stays empty", async () => {
    const alice = await login();
    const userId = await mintId(HMAC_SECRET, "u");
    await expectError(await api(`/api/users/${userId}`, { token: alice.credentials }), 404, "not_found");
    await expectError(await api("/api/chats", { token: alice.credentials, body: { kind: "direct", peerId: userId } }), 400, "invalid_member");
    await expectError(
      await api("/api/chats", { token: alice.credentials, body: { kind: "group", name: "G", memberIds: [userId] } }),
      400,
      "invalid_member",
    );
    const stub = env.USER.get(env.USER.idFromName(userId));
    expect(await runInDurableObject(stub, (_instance, state) => ownTables(state))).toEqual([]);
  });

  it("media of a made-up or never-created chat, and a made-up media id, store nothing", async () => {
    const alice = await login();
    const bob = await login();
    const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, ...new Array(100).fill(7)]);
    const headers = { authorization: `Bearer ${alice.credentials}`, "content-type": "image/png" };
    const upload = (chatId: string) => exports.default.fetch(new Request(`http://chat.test/api/chats/${chatId}/media?name=a.png`, { method: "POST", body: png, headers }));
    const starts = instanceStarts("ChatRoom");
    await expectError(await upload(madeUp("g")), 404, "chat_not_found");
    await expectError(await api(`/api/chats/${madeUp("d")}/media/m_AAAAAAAAAAAAAAAAAAAAAA`, { token: alice.credentials }), 404, "chat_not_found");
    // a signed link is checked before any object is addressed
    await expectError(await api(`/media/${madeUp("g")}/m_AAAAAAAAAAAAAAAAAAAAAA?expires=${Date.now() + 60_000}&sig=AAAA`), 403, "invalid_signature");
    expect(instanceStarts("ChatRoom")).toBe(starts);

    const neverCreated = await mintId(HMAC_SECRET, "g");
    await expectError(await upload(neverCreated), 404, "chat_not_found");
    const stub = env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(neverCreated));
    expect(await runInDurableObject(stub, (_instance, state) => ownTables(state))).toEqual([]);
    expect((await env.MEDIA.list({ prefix: `chats/${neverCreated}/` })).objects).toEqual([]);

    // a real chat asked about a media id it never had: nothing is written
    const chatId = await createGroup(alice, [bob]);
    await expectError(await api(`/api/chats/${chatId}/media/m_AAAAAAAAAAAAAAAAAAAAAA`, { token: bob.credentials }), 404, "not_found");
    await expectError(await api(`/api/chats/${chatId}/media/m_AAAAAAAAAAAAAAAAAAAAAA/url`, { token: bob.credentials, method: "POST" }), 404, "not_found");
    const room = env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId));
    expect(await runInDurableObject(room, (_instance, state) => state.storage.sql.exec<{ n: number }>("SELECT count(*) AS n FROM media").one().n)).toBe(0);
  });

  it("a created chat and a logged-in account do have their tables", async () => {
    const alice = await login();
    const chatId = await createGroup(alice, []);
    const room = env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId));
    expect(await runInDurableObject(room, (_instance, state) => ownTables(state))).toEqual(expect.arrayContaining(["chat", "events", "members"]));
    const user = env.USER.get(env.USER.idFromName(alice.user.userId));
    expect(await runInDurableObject(user, (_instance, state) => ownTables(state))).toEqual(expect.arrayContaining(["profile", "devices"]));
  });
});
