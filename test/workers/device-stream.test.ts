import { env, evictDurableObject, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { instanceStarts } from "../../src/lib/instance-starts.ts";
import { CloseCode, type ChatEvent } from "../../src/protocol/index.ts";
import { accounts, api, apiClient, createDirect, createGroup, history, login, openStream, restSend, resumeStream, type Session, type TestSocket } from "./helpers.ts";

/** Every event a socket received for `chatId`, in arrival order. */
const eventsOf = (socket: TestSocket, chatId: string): ChatEvent[] =>
  socket.frames.flatMap((frame) => (frame.type === "events" && frame.chatId === chatId ? frame.events : []));

/** Answers every `catching_up` with `sync` until `synced`, as a client does. */
async function syncUntilDone(socket: TestSocket, timeoutMs = 20_000): Promise<number> {
  let answered = 0;
  let syncs = 0;
  await socket.until(
    () => {
      const batches = socket.frames.filter((frame) => frame.type === "catching_up").length;
      while (answered < batches) {
        answered++;
        socket.send({ type: "sync", id: `sync-${++syncs}` });
      }
      return socket.frames.some((frame) => frame.type === "synced");
    },
    "synced",
    timeoutMs,
  );
  return syncs;
}

let frameIds = 0;
async function streamSend(socket: TestSocket, chatId: string, clientId: string, body: string) {
  const id = `s${++frameIds}`;
  socket.send({ type: "send", id, chatId, clientId, body });
  return socket.reply(id);
}

/** Every event after `after`, over as many history pages as it takes. */
async function allAfter(session: Session, chatId: string, after: number): Promise<ChatEvent[]> {
  const events: ChatEvent[] = [];
  for (let cursor = after, more = true; more; ) {
    const page = await history(session, chatId, `?after=${cursor}&limit=200`);
    events.push(...page.events);
    more = page.hasMore;
    cursor = page.events.at(-1)?.seq ?? cursor;
  }
  return events;
}

async function headOf(session: Session, chatId: string): Promise<number> {
  return (await history(session, chatId, "?limit=1")).headSeq;
}

describe("the device stream (GET /chat)", () => {
  it("catches a device up on 500 messages across 20 chats, each event once and in order, then goes live", async () => {
    const me = await login();
    const peers = await Promise.all(Array.from({ length: 20 }, () => login()));
    const chatIds = await Promise.all(peers.map((peer) => createDirect(peer, me)));
    // Where the device was when it went offline: each chat's head.
    const cursors = Object.fromEntries(await Promise.all(chatIds.map(async (chatId) => [chatId, await headOf(me, chatId)] as const)));
    await Promise.all(
      peers.map(async (peer, index) => {
        for (let i = 0; i < 25; i++) expect((await restSend(peer, chatIds[index]!, `m${i}`, `message ${i} from peer ${index}`)).status).toBe(201);
      }),
    );

    const { socket, reply } = await resumeStream(me.credentials, cursors);
    expect(reply).toMatchObject({ ok: true, result: { behind: 20, announced: 0, unknownChats: [] } });
    // A message stored during the catch-up is neither lost nor delivered twice.
    const during = restSend(peers[0]!, chatIds[0]!, "during", "sent while catching up");
    await syncUntilDone(socket);
    expect((await during).status).toBe(201);

    for (const chatId of chatIds) {
      const stored = await allAfter(me, chatId, cursors[chatId]!);
      await socket.until(() => eventsOf(socket, chatId).length >= stored.length, `all events of ${chatId}`);
      expect(eventsOf(socket, chatId)).toEqual(stored);
    }
    expect(chatIds.reduce((sum, chatId) => sum + eventsOf(socket, chatId).length, 0)).toBe(501);
    // Live from here: a new message arrives as it is stored.
    expect((await restSend(peers[5]!, chatIds[5]!, "live", "now live")).status).toBe(201);
    await socket.until(() => eventsOf(socket, chatIds[5]!).some((e) => e.type === "message" && e.body === "now live"), "the live message");
  });

  it("sends on one stream and delivers live on the other member's stream, with the same ack and idempotency", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const [a, b] = await Promise.all([resumeStream(alice.credentials, { [chatId]: 1 }), resumeStream(bob.credentials, { [chatId]: 1 })]);
    await Promise.all([syncUntilDone(a.socket), syncUntilDone(b.socket)]);

    const ack = await streamSend(a.socket, chatId, "c-1", "hello over the stream");
    expect(ack).toMatchObject({ ok: true, result: { seq: 2, duplicate: false } });
    await b.socket.until(() => eventsOf(b.socket, chatId).length === 1, "bob's live event");
    expect(eventsOf(b.socket, chatId)[0]).toMatchObject({ seq: 2, senderId: alice.user.userId, body: "hello over the stream" });
    // The sender's own stream gets it too (its other views stay current).
    await a.socket.until(() => eventsOf(a.socket, chatId).length === 1, "alice's own event");

    const retry = await streamSend(a.socket, chatId, "c-1", "hello over the stream");
    expect(retry).toMatchObject({ ok: true, result: { seq: 2, duplicate: true } });
    // Three sends in a row keep their order.
    const acks = await Promise.all(["x", "y", "z"].map((body) => streamSend(a.socket, chatId, `c-${body}`, body)));
    expect(acks.map((reply) => (reply.ok ? (reply.result as { seq: number }).seq : 0))).toEqual([3, 4, 5]);
    await b.socket.until(() => eventsOf(b.socket, chatId).length === 4, "4 events");
    expect(eventsOf(b.socket, chatId).map((e) => e.seq)).toEqual([2, 3, 4, 5]);
  });

  it("announces chats the device does not list, and a chat created while it is live, with its first events", async () => {
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    const known = await createDirect(alice, bob);
    const { socket, reply } = await resumeStream(bob.credentials);
    expect(reply).toMatchObject({ ok: true, result: { behind: 0, announced: 1 } });
    await syncUntilDone(socket);
    expect(socket.frames.find((f) => f.type === "chat")).toMatchObject({ chat: { chatId: known, headSeq: 1 } });
    expect(eventsOf(socket, known)).toEqual([]);

    const group = await createGroup(carol, [bob], "group", "Weekend");
    await socket.until(() => eventsOf(socket, group).length >= 1, "the new group's first event");
    expect(socket.frames.find((f) => f.type === "chat" && f.chat.chatId === group)).toMatchObject({ chat: { name: "Weekend", membership: "member" } });
    expect(eventsOf(socket, group)[0]).toMatchObject({ type: "chat.created", seq: 1 });
    expect((await restSend(carol, group, "g-1", "welcome")).status).toBe(201);
    await socket.until(() => eventsOf(socket, group).some((e) => e.seq === 2), "the group's message");
    expect(eventsOf(socket, group).map((e) => e.seq)).toEqual([1, 2]);
  });

  it("stops a removed member's stream receiving the chat after the removal event", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const group = await createGroup(alice, [bob]);
    const { socket } = await resumeStream(bob.credentials, { [group]: 1 });
    await syncUntilDone(socket);
    expect((await restSend(alice, group, "m-1", "before")).status).toBe(201);
    await socket.until(() => eventsOf(socket, group).length === 1, "the first message");

    await apiClient(alice).removeMember(group, bob.user.userId);
    await socket.until(() => eventsOf(socket, group).some((e) => e.type === "member.removed"), "the removal");
    expect((await restSend(alice, group, "m-2", "after")).status).toBe(201);
    expect((await restSend(alice, group, "m-3", "after again")).status).toBe(201);
    await socket.until(() => socket.frames.some((f) => f.type === "chat" && f.chat.chatId === group && f.chat.membership === "removed"), "the removed entry");
    // The stream stays open for the account's other chats: a message there, sent after
    // m-2 and m-3, arrives; nothing more of the group did.
    const direct = await createDirect(alice, bob);
    expect((await restSend(alice, direct, "d-1", "still here")).status).toBe(201);
    await socket.until(() => eventsOf(socket, direct).some((e) => e.type === "message"), "the other chat's message");
    expect(eventsOf(socket, group).map((e) => e.type)).toEqual(["message", "member.removed"]);
    expect(socket.closed).toBeNull();

    // Added back while this device is offline: its next resume from the removal gets
    // exactly the new period, however recently the account's object saw the chat.
    const removedAt = eventsOf(socket, group).at(-1)!.seq;
    socket.ws.close(1000);
    await apiClient(alice).addMembers(group, [bob.user.userId]);
    expect((await restSend(alice, group, "m-4", "welcome back")).status).toBe(201);
    const back = await resumeStream(bob.credentials, { [group]: removedAt, [direct]: eventsOf(socket, direct).at(-1)!.seq });
    expect(back.reply).toMatchObject({ ok: true, result: { behind: 1 } });
    await syncUntilDone(back.socket);
    expect(eventsOf(back.socket, group).map((e) => e.type)).toEqual(["member.added", "message"]);
    expect(eventsOf(back.socket, group).map((e) => e.seq)).toEqual((await allAfter(bob, group, removedAt)).map((e) => e.seq));
  });

  it("closes a revoked device's stream with 4009, and refuses a new one", async () => {
    const alice = await login();
    const second = await login(alice.phone, "second device");
    const { socket } = await resumeStream(second.credentials);
    await syncUntilDone(socket);
    await apiClient(alice).revokeDevice(second.device.deviceId);
    expect(await socket.closeEvent()).toMatchObject({ code: CloseCode.deviceRevoked });
    const { socket: again } = await openStream(second.credentials);
    expect(await again!.closeEvent()).toMatchObject({ code: CloseCode.deviceRevoked });
  });
});

describe("the inbox on the device stream", () => {
  it("shows unread counts, and a read on one device clears them on the other device live", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const bobPhone = await login(bob.phone, "bob's tablet");
    const chatId = await createDirect(alice, bob);
    const phone = await resumeStream(bob.credentials, { [chatId]: 1 });
    const tablet = await resumeStream(bobPhone.credentials, { [chatId]: 1 });
    await Promise.all([syncUntilDone(phone.socket), syncUntilDone(tablet.socket)]);
    for (let i = 0; i < 3; i++) expect((await restSend(alice, chatId, `m${i}`, `unread ${i}`)).status).toBe(201);
    await phone.socket.until(() => eventsOf(phone.socket, chatId).length === 3, "3 messages");
    await expect.poll(async () => (await apiClient(bob).chats()).chats[0]).toMatchObject({ chatId, unreadCount: 3, lastMessage: { seq: 4, body: "unread 2" } });

    phone.socket.send({ type: "read", id: "r1", chatId, seq: 4 });
    expect(await phone.socket.reply("r1")).toMatchObject({ ok: true, result: { chatId, unreadCount: 0, readSeq: 4 } });
    await tablet.socket.until(
      () => tablet.socket.frames.some((f) => f.type === "chat" && f.chat.chatId === chatId && f.chat.unreadCount === 0 && f.chat.readSeq === 4),
      "the read, on the other device",
    );
    expect((await apiClient(bob).chats()).chats[0]).toMatchObject({ chatId, unreadCount: 0 });
    // A read beyond the head is refused and changes nothing.
    phone.socket.send({ type: "read", id: "r2", chatId, seq: 99 });
    expect(await phone.socket.reply("r2")).toMatchObject({ ok: false });
  });

  it("carries no events of a chat over 256 members, only its entry, so the device fetches history", async () => {
    const alice = await login();
    const bob = await login();
    const others = await accounts(300);
    const created = await api("/api/chats", { token: alice.credentials, body: { kind: "group", name: "Town", memberIds: [bob.user.userId, ...others] } });
    expect(created.status).toBe(201);
    const { chatId } = (await created.json()) as { chatId: string };
    const { socket, reply } = await resumeStream(bob.credentials, { [chatId]: 0 });
    expect(reply).toMatchObject({ ok: true, result: { behind: 0, announced: 1 } });
    await syncUntilDone(socket);
    expect(socket.frames.find((f) => f.type === "chat")).toMatchObject({ chat: { chatId, memberCount: 302, headSeq: 1 } });

    expect((await restSend(alice, chatId, "m1", "to the town")).status).toBe(201);
    await socket.until(() => socket.frames.some((f) => f.type === "chat" && f.chat.chatId === chatId && f.chat.headSeq === 2), "the new head");
    expect(eventsOf(socket, chatId)).toEqual([]);
  }, 30_000);

  it("stops pushing a chat that grows past 256 members after the push that took it there", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const group = await createGroup(alice, [bob]);
    const { socket } = await resumeStream(bob.credentials, { [group]: 1 });
    await syncUntilDone(socket);
    const others = await accounts(300);
    await apiClient(alice).addMembers(group, others.slice(0, 150));
    await apiClient(alice).addMembers(group, others.slice(150));
    await socket.until(() => eventsOf(socket, group).filter((e) => e.type === "member.added").length === 2, "both additions");
    expect((await restSend(alice, group, "m1", "to the crowd")).status).toBe(201);
    // A group of 302 fans out at most every 3 s: the entry may take that long.
    await socket.until(() => socket.frames.some((f) => f.type === "chat" && f.chat.chatId === group && f.chat.headSeq === 4), "the entry at the message", 15_000);
    expect(eventsOf(socket, group).map((e) => e.type)).toEqual(["member.added", "member.added"]);
  }, 30_000);
});

describe("the device stream under pressure and eviction", () => {
  it("sends a long catch-up in batches, each only after the client's sync, and nothing live of a chat before its pages", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const big = "x".repeat(16 * 1024);
    for (let i = 0; i < 40; i++) expect((await restSend(alice, chatId, `m${i}`, `${i} ${big}`)).status).toBe(201);
    const { socket, reply } = await resumeStream(bob.credentials, { [chatId]: 1 });
    expect(reply).toMatchObject({ ok: true, result: { behind: 1 } });
    await socket.until(() => socket.frames.some((f) => f.type === "catching_up"), "the end of the first batch");
    const firstBatch = eventsOf(socket, chatId).length;
    // 640 KiB of events do not fit in one 256 KiB batch: the server waits for `sync`.
    expect(firstBatch).toBeGreaterThan(0);
    expect(firstBatch).toBeLessThan(40);
    expect((await restSend(alice, chatId, "live", "stored during the catch-up")).status).toBe(201);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(eventsOf(socket, chatId)).toHaveLength(firstBatch);

    expect(await syncUntilDone(socket)).toBeGreaterThanOrEqual(1);
    const stored = await allAfter(bob, chatId, 1);
    await socket.until(() => eventsOf(socket, chatId).length >= stored.length, "every event");
    expect(eventsOf(socket, chatId)).toEqual(stored);
    expect(stored).toHaveLength(41);
  });

  it("keeps pushing to a live stream when the account's object and the chat's object are evicted", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const { socket } = await resumeStream(bob.credentials, { [chatId]: 1 });
    await syncUntilDone(socket);
    expect((await restSend(alice, chatId, "m1", "one")).status).toBe(201);
    await socket.until(() => eventsOf(socket, chatId).length === 1, "the first message");
    // An object is evicted only once idle: the chat list has heard of the message too.
    await expect.poll(async () => (await apiClient(bob).chats()).chats[0]?.headSeq).toBe(2);

    const starts = { user: instanceStarts("User"), chat: instanceStarts("ChatRoom") };
    await evictDurableObject(env.USER.get(env.USER.idFromName(bob.user.userId)));
    await evictDurableObject(env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId)));
    expect((await restSend(alice, chatId, "m2", "two")).status).toBe(201);
    await socket.until(() => eventsOf(socket, chatId).length === 2, "the message after both evictions");
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(instanceStarts("ChatRoom")).toBeGreaterThan(starts.chat);
    expect(instanceStarts("User")).toBeGreaterThan(starts.user);
    expect(eventsOf(socket, chatId).map((e) => e.seq)).toEqual([2, 3]);
    // Heartbeats are answered by the runtime, not the object.
    socket.send("ping");
    await socket.until(() => socket.raw.includes("pong"), "pong");
    expect(socket.closed).toBeNull();
  });

  it("keeps at most two streams per device, closing the oldest with 4010", async () => {
    const alice = await login();
    const first = await resumeStream(alice.credentials);
    const second = await resumeStream(alice.credentials);
    const third = await resumeStream(alice.credentials);
    expect(await first.socket.closeEvent()).toMatchObject({ code: CloseCode.tooManySockets });
    expect(second.socket.closed).toBeNull();
    expect(third.socket.closed).toBeNull();
  });
});

describe("the device stream's resume", () => {
  it("sees every chat of a list far larger than a page (big last messages), none reported unknown", async () => {
    const bob = await login();
    const peers = await Promise.all(Array.from({ length: 6 }, () => login()));
    const chatIds = await Promise.all(peers.map((peer) => createDirect(peer, bob)));
    const big = "y".repeat(60 * 1024);
    await Promise.all(peers.map(async (peer, i) => expect((await restSend(peer, chatIds[i]!, "big", `${i} ${big}`)).status).toBe(201)));
    // The list's pages stop at 256 KiB: more than one page holds these entries.
    const withMessage = async () => {
      let count = 0;
      for (let cursor: string | undefined, pages = 0; pages === 0 || cursor; pages++) {
        const page = await apiClient(bob).chats(cursor ? { cursor } : {});
        count += page.chats.filter((chat) => chat.lastMessage).length;
        cursor = page.nextCursor;
      }
      return count;
    };
    await expect.poll(withMessage, { timeout: 10_000 }).toBe(6);
    const { socket, reply } = await resumeStream(bob.credentials, Object.fromEntries(chatIds.map((chatId) => [chatId, 1])));
    expect(reply).toMatchObject({ ok: true, result: { behind: 6, unknownChats: [] } });
    await syncUntilDone(socket);
    for (const chatId of chatIds) expect(eventsOf(socket, chatId)).toHaveLength(1);
  });

  it("asks no quiet chat at a resume, and still delivers its next events live, once and in order", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const quiet = await createDirect(alice, bob);
    const busy = await createDirect(await login(), bob);
    expect((await restSend(alice, quiet, "m1", "long ago")).status).toBe(201);
    await expect.poll(async () => (await apiClient(bob).chats()).chats.find((chat) => chat.chatId === quiet)?.headSeq).toBe(2);
    // As if the quiet chat's last event were an hour old (the list is what the resume reads).
    await runInDurableObject(env.USER.get(env.USER.idFromName(bob.user.userId)), (_user, state) => {
      state.storage.sql.exec("UPDATE chats SET last_activity_at = ? WHERE chat_id = ?", Date.now() - 3_600_000, quiet);
    });
    const tablet = await login(bob.phone, "tablet");
    const phone = await resumeStream(bob.credentials, { [quiet]: 2, [busy]: 1 });
    const fresh = await resumeStream(tablet.credentials, {});
    expect(phone.reply).toMatchObject({ ok: true, result: { behind: 0, announced: 0 } });
    expect(fresh.reply).toMatchObject({ ok: true, result: { behind: 0, announced: 2 } });
    await Promise.all([syncUntilDone(phone.socket), syncUntilDone(fresh.socket)]);
    expect(fresh.socket.frames.find((f) => f.type === "chat" && f.chat.chatId === quiet)).toMatchObject({ chat: { headSeq: 2 } });
    // The quiet chat was not asked: it holds no subscription of bob's; the busy one does.
    const subscribed = (chatId: string) =>
      runInDurableObject(env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId)), (_room, state) => state.storage.kv.get(`stream:${bob.user.userId}`) !== undefined);
    expect(await subscribed(quiet)).toBe(false);
    expect(await subscribed(busy)).toBe(true);

    // Its next event reaches the account's list at once, which subscribes the chat and
    // catches each stream up from where it is; the one after is pushed.
    expect((await restSend(alice, quiet, "m2", "news")).status).toBe(201);
    expect((await restSend(alice, quiet, "m3", "more news")).status).toBe(201);
    for (const socket of [phone.socket, fresh.socket]) {
      await socket.until(() => eventsOf(socket, quiet).length >= 2, "the quiet chat's news");
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(eventsOf(socket, quiet).map((e) => e.seq)).toEqual([3, 4]);
    }
  });

  it("refuses a cursor beyond the head even while another stream of the account is live on that chat", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const live = await resumeStream(bob.credentials, { [chatId]: 1 });
    await syncUntilDone(live.socket);
    expect((await restSend(alice, chatId, "m", "one")).status).toBe(201);
    await live.socket.until(() => eventsOf(live.socket, chatId).length === 1, "the message");
    const tablet = await login(bob.phone, "tablet");
    expect((await resumeStream(tablet.credentials, { [chatId]: 99 })).reply).toMatchObject({ ok: false, error: { code: "invalid_cursor" } });
    // At exactly the head the chat is not even asked, and the tablet is live on it.
    const atHead = await resumeStream(tablet.credentials, { [chatId]: 2 });
    expect(atHead.reply).toMatchObject({ ok: true, result: { behind: 0 } });
    await syncUntilDone(atHead.socket);
    expect((await restSend(alice, chatId, "m2", "two")).status).toBe(201);
    await atHead.socket.until(() => eventsOf(atHead.socket, chatId).length === 1, "the next message");
    expect(eventsOf(atHead.socket, chatId)[0]).toMatchObject({ seq: 3 });
  });

  it("closes a stream caught mid-catch-up by an eviction with 4500, and the device resumes", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const big = "z".repeat(32 * 1024);
    for (let i = 0; i < 20; i++) expect((await restSend(alice, chatId, `m${i}`, `${i} ${big}`)).status).toBe(201);
    const { socket } = await resumeStream(bob.credentials, { [chatId]: 1 });
    await socket.until(() => socket.frames.some((f) => f.type === "catching_up"), "a first batch");
    await evictDurableObject(env.USER.get(env.USER.idFromName(bob.user.userId)));
    // The next frame wakes the object, which finds the catch-up gone.
    socket.send({ type: "sync", id: "after-eviction" });
    expect(await socket.closeEvent()).toMatchObject({ code: CloseCode.tryAgain });
    const cursor = eventsOf(socket, chatId).at(-1)!.seq;
    const again = await resumeStream(bob.credentials, { [chatId]: cursor });
    await syncUntilDone(again.socket);
    expect([...eventsOf(socket, chatId), ...eventsOf(again.socket, chatId)].map((e) => e.seq)).toEqual((await allAfter(bob, chatId, 1)).map((e) => e.seq));
  });
});

describe("bad input on the device stream", () => {
  it("answers malformed and impossible cursors without disturbing another device", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const other = await resumeStream(bob.credentials, { [chatId]: 1 });
    await syncUntilDone(other.socket);

    const malformed = await resumeStream(alice.credentials, { [chatId]: -1 } as Record<string, number>);
    expect(malformed.reply).toMatchObject({ ok: false, error: { code: "validation_failed" } });
    const notAChat = await resumeStream(alice.credentials, { "not a chat id": 1 });
    expect(notAChat.reply).toMatchObject({ ok: false, error: { code: "validation_failed" } });

    const beyond = await resumeStream(alice.credentials, { [chatId]: 99 });
    expect(beyond.reply).toMatchObject({ ok: false, error: { code: "invalid_cursor" } });
    // The same stream may resume again once its cursors are right.
    beyond.socket.send({ type: "resume", id: "again", cursors: { [chatId]: 1 } });
    expect(await beyond.socket.reply("again")).toMatchObject({ ok: true, result: { behind: 0 } });
    beyond.socket.send({ type: "resume", id: "twice", cursors: {} });
    expect(await beyond.socket.reply("twice")).toMatchObject({ ok: false, error: { code: "validation_failed" } });

    // A chat this account never had is reported, not an error; it creates nothing.
    const stranger = await login();
    const theirs = await createDirect(stranger, await login());
    const unknown = await resumeStream(alice.credentials, { [theirs]: 1, [chatId]: 1 });
    expect(unknown.reply).toMatchObject({ ok: true, result: { unknownChats: [theirs] } });

    // Bob's stream never noticed.
    expect((await restSend(alice, chatId, "m-1", "still fine")).status).toBe(201);
    await other.socket.until(() => eventsOf(other.socket, chatId).length === 1, "bob's message");
    expect(other.socket.frames.filter((f) => f.type === "error")).toEqual([]);
    expect(other.socket.closed).toBeNull();
  });

  it("refuses a send to a chat the user left, to a chat they are not in, and junk frames, then keeps serving", async () => {
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    const group = await createGroup(alice, [bob]);
    const theirs = await createDirect(alice, carol);
    const { socket } = await resumeStream(bob.credentials, { [group]: 1 });
    await syncUntilDone(socket);
    await apiClient(bob).leaveChat(group);

    expect(await streamSend(socket, group, "c-1", "after leaving")).toMatchObject({ ok: false, error: { code: "not_a_member" } });
    expect(await streamSend(socket, theirs, "c-2", "not mine")).toMatchObject({ ok: false, error: { code: "not_a_member" } });
    // A made-up chat id is refused by the account's object: no chat object starts.
    const starts = instanceStarts("ChatRoom");
    expect(await streamSend(socket, "g_" + "A".repeat(22), "c-4", "nowhere")).toMatchObject({ ok: false, error: { code: "not_a_member" } });
    socket.send({ type: "read", id: "nowhere", chatId: "g_" + "B".repeat(22), seq: 1 });
    expect(await socket.reply("nowhere")).toMatchObject({ ok: false, error: { code: "not_a_member" } });
    expect(instanceStarts("ChatRoom")).toBe(starts);
    socket.send("not json");
    socket.send({ type: "explode", id: "x" });
    socket.send({ type: "send", id: "bad", chatId: theirs, clientId: "c-3" });
    await socket.until(() => socket.frames.filter((f) => f.type === "error").length >= 1 && socket.frames.some((f) => f.type === "reply" && f.id === "bad"), "the refusals");
    expect(socket.frames.find((f) => f.type === "reply" && f.id === "x")).toMatchObject({ ok: false, error: { code: "unknown_frame" } });
    expect(socket.frames.find((f) => f.type === "reply" && f.id === "bad")).toMatchObject({ ok: false, error: { code: "validation_failed" } });
    // A flood of frames: each is answered, those beyond the device's budget with
    // rate_limited and nothing done; the stream stays open.
    for (let i = 0; i < 400; i++) socket.send({ type: "sync", id: `flood-${i}` });
    await socket.reply("flood-399");
    const flood = socket.frames.flatMap((f) => (f.type === "reply" && f.id.startsWith("flood-") ? [f] : []));
    expect(flood).toHaveLength(400);
    const limited = flood.filter((f) => !f.ok && f.error.code === "rate_limited");
    expect(limited.length).toBeGreaterThan(100);
    expect(limited[0]).toMatchObject({ error: { retryAfterMs: expect.any(Number) } });
    expect(socket.closed).toBeNull();
  });
});
