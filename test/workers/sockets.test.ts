import { env, evictDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { instanceStarts } from "../../src/lib/instance-starts.ts";
import { CloseCode, type ChatEvent } from "../../src/protocol/index.ts";
import { api, connect, createDirect, createGroup, history, login, openSocket, restSend, socketSend, type TestSocket } from "./helpers.ts";

const chatStub = (chatId: string) => env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId));
const seqs = (events: ChatEvent[]) => events.map((e) => e.seq);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const messagesFrom = (socket: TestSocket, min: number) => socket.until(() => socket.events().length >= min && socket.events(), `${min} events`);

describe("chat sockets", () => {
  it("deliver a message live to the other member, after the sender's SENT ack", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const aliceSocket = await connect(chatId, alice.credentials);
    const bobSocket = await connect(chatId, bob.credentials);
    expect(aliceSocket.frames[0]).toMatchObject({ type: "ready", chatId, userId: alice.user.userId, headSeq: 1, catchingUp: false });

    const reply = await socketSend(aliceSocket, "c-1", "hello bob");
    expect(reply).toMatchObject({ ok: true, result: { seq: 2, duplicate: false } });
    const [received] = await messagesFrom(bobSocket, 1);
    expect(received).toMatchObject({ type: "message", seq: 2, senderId: alice.user.userId, senderDeviceId: alice.device.deviceId, clientId: "c-1", body: "hello bob" });
    // the sender's own socket gets the event too, after the reply
    const replyIndex = aliceSocket.frames.indexOf(reply);
    await messagesFrom(aliceSocket, 1);
    expect(aliceSocket.frames.findIndex((f) => f.type === "events")).toBeGreaterThan(replyIndex);
  });

  it("store a retried send once and refuse a reused clientId with other content", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const socket = await connect(chatId, alice.credentials);
    const first = await socketSend(socket, "c-1", "once");
    const retry = await socketSend(socket, "c-1", "once");
    expect(first.ok && retry.ok).toBe(true);
    expect((retry as { result: unknown }).result).toEqual({ ...(first as { result: object }).result, duplicate: true });
    const conflict = await socketSend(socket, "c-1", "twice");
    expect(conflict).toMatchObject({ ok: false, error: { code: "idempotency_conflict" } });
    // a retry over REST after a socket send is the same message too
    expect((await restSend(alice, chatId, "c-1", "once")).status).toBe(200);
    expect((await history(bob, chatId)).events.filter((e) => e.type === "message")).toHaveLength(1);
    expect(socket.events().filter((e) => e.type === "message")).toHaveLength(1);
  });

  it("give two interleaving senders and every reader one order, equal to history", async () => {
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    const chatId = await createGroup(alice, [bob, carol]);
    const sockets = await Promise.all([alice, bob, carol].map((s) => connect(chatId, s.credentials)));
    const [aliceSocket, bobSocket] = sockets as [TestSocket, TestSocket, TestSocket];
    for (let i = 0; i < 50; i++) {
      aliceSocket.send({ type: "send", id: `a${i}`, clientId: `a${i}`, body: `alice ${i}` });
      bobSocket.send({ type: "send", id: `b${i}`, clientId: `b${i}`, body: `bob ${i}` });
    }
    const orders = await Promise.all(sockets.map((s) => messagesFrom(s, 100)));
    const stored = (await history(carol, chatId, "?after=1&limit=200")).events;
    expect(seqs(stored)).toEqual(range(2, 101));
    for (const order of orders) expect(order).toEqual(stored);
    // each sender's own messages keep the order they were sent in
    const aliceBodies = stored.filter((e) => e.type === "message" && e.senderId === alice.user.userId).map((e) => (e as { body: string }).body);
    expect(aliceBodies).toEqual(range(0, 49).map((i) => `alice ${i}`));
  });

  it("survive eviction with hibernation: nothing lost or repeated, seq continues", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const aliceSocket = await connect(chatId, alice.credentials);
    const bobSocket = await connect(chatId, bob.credentials);
    for (let i = 0; i < 5; i++) await socketSend(aliceSocket, `c${i}`, `before ${i}`);
    const starts = instanceStarts("ChatRoom");
    await evictDurableObject(chatStub(chatId));
    for (let i = 5; i < 10; i++) expect(await socketSend(aliceSocket, `c${i}`, `after ${i}`)).toMatchObject({ ok: true, result: { seq: i + 2 } });
    expect(instanceStarts("ChatRoom")).toBe(starts + 1);
    // a retry of a message stored before the eviction is still recognised
    expect(await socketSend(aliceSocket, "c0", "before 0")).toMatchObject({ ok: true, result: { seq: 2, duplicate: true } });
    const received = await messagesFrom(bobSocket, 10);
    expect(seqs(received)).toEqual(range(2, 11));
    expect(seqs((await history(bob, chatId, "?after=0")).events)).toEqual(range(1, 11));
  });

  it("resume after the object drops every socket: reconnecting with the cursor gets exactly the missed events", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const bobSocket = await connect(chatId, bob.credentials);
    for (let i = 0; i < 3; i++) await restSend(alice, chatId, `c${i}`, `seen ${i}`);
    const cursor = (await messagesFrom(bobSocket, 3)).at(-1)!.seq;
    await evictDurableObject(chatStub(chatId), { webSockets: "close" });
    await bobSocket.closeEvent();
    for (let i = 3; i < 8; i++) expect((await restSend(alice, chatId, `c${i}`, `missed ${i}`)).status).toBe(201);
    const resumed = await connect(chatId, bob.credentials, cursor);
    const missed = await messagesFrom(resumed, 5);
    expect(seqs(missed)).toEqual(range(cursor + 1, cursor + 5));
    expect(resumed.frames.find((f) => f.type === "events")).toMatchObject({ more: false });
    await restSend(alice, chatId, "c8", "live again");
    expect(seqs(await messagesFrom(resumed, 6))).toEqual(range(cursor + 1, cursor + 6));
  });

  it("page a long catch-up and push nothing live before it is current", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const aliceSocket = await connect(chatId, alice.credentials);
    for (let i = 0; i < 450; i++) aliceSocket.send({ type: "send", id: `s${i}`, clientId: `c${i}`, body: `m${i}` });
    await aliceSocket.reply("s449");
    // head is 451; bob resumes from 0 with 200-event pages
    const bobSocket = await connect(chatId, bob.credentials, 0);
    const pages = () => bobSocket.frames.filter((f) => f.type === "events");
    await bobSocket.until(() => pages().length === 1, "first page");
    expect(pages()[0]).toMatchObject({ more: true });
    // messages sent while bob is between pages
    for (let i = 450; i < 455; i++) await socketSend(aliceSocket, `c${i}`, `m${i}`);
    bobSocket.send({ type: "sync", id: "p2" });
    await bobSocket.reply("p2");
    await socketSend(aliceSocket, "c455", "m455");
    expect(pages()).toHaveLength(2);
    expect(pages()[1]).toMatchObject({ more: true });
    bobSocket.send({ type: "sync", id: "p3" });
    await bobSocket.reply("p3");
    expect(pages()[2]).toMatchObject({ more: false });
    await socketSend(aliceSocket, "c456", "live");
    const all = await messagesFrom(bobSocket, 458);
    expect(seqs(all)).toEqual(range(1, 458));
    expect(pages().slice(0, 3).map((p) => (p as { events: unknown[] }).events.length)).toEqual([200, 200, 57]);
    // a sync on a live socket is answered with the head and sends nothing
    bobSocket.send({ type: "sync", id: "p4" });
    expect(await bobSocket.reply("p4")).toMatchObject({ ok: true, result: { cursor: 458 } });
    expect(bobSocket.events()).toHaveLength(458);
  });

  it("answer heartbeats without waking the object", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const socket = await connect(chatId, alice.credentials);
    await evictDurableObject(chatStub(chatId));
    const starts = instanceStarts("ChatRoom");
    for (let i = 0; i < 3; i++) {
      socket.send("ping");
      await socket.until(() => socket.raw.filter((r) => r === "pong").length === i + 1, "pong");
    }
    expect(instanceStarts("ChatRoom")).toBe(starts);
    // the socket still works after the object wakes
    expect(await socketSend(socket, "c1", "awake")).toMatchObject({ ok: true, result: { seq: 2 } });
    expect(instanceStarts("ChatRoom")).toBe(starts + 1);
  });

  it("answer a client's close with a close", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const socket = await connect(chatId, alice.credentials);
    socket.ws.close(1000, "bye");
    expect(await socket.closeEvent()).toMatchObject({ code: 1000 });
  });

  it("accept the token as a subprotocol and echo only chat.v1", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const { response, socket } = await openSocket(chatId, "", { protocols: ["chat.v1", `bearer.${alice.credentials}`] });
    expect(response.status).toBe(101);
    expect(response.headers.get("Sec-WebSocket-Protocol")).toBe("chat.v1");
    await socket!.until(() => socket!.frames.find((f) => f.type === "ready"), "ready");
  });
});

describe("chat sockets refuse", () => {
  async function refused(chatId: string, token: string, after?: number) {
    const { response, socket } = await openSocket(chatId, token, after === undefined ? {} : { after });
    expect(response.status).toBe(101);
    const close = await socket!.closeEvent();
    return { close, frames: socket!.frames };
  }

  it("a non-member, a missing chat, a bad token and a cursor beyond the head, with close codes", async () => {
    const [alice, bob, eve] = await Promise.all([login(), login(), login()]);
    const chatId = await createDirect(alice, bob);
    const notMember = await refused(chatId, eve.credentials);
    expect(notMember.close.code).toBe(CloseCode.notAMember);
    expect(notMember.frames).toEqual([{ type: "error", error: expect.objectContaining({ code: "not_a_member" }) }]);
    expect((await refused("g_AAAAAAAAAAAAAAAAAAAAAA", eve.credentials)).close.code).toBe(CloseCode.chatNotFound);
    expect((await refused(chatId, "garbage")).close.code).toBe(CloseCode.unauthorized);
    expect((await refused(chatId, alice.credentials, 99)).close.code).toBe(CloseCode.badRequest);
    expect((await refused("not-a-chat-id", alice.credentials)).close.code).toBe(CloseCode.badRequest);
    const noUpgrade = await api(`/chat/${chatId}`, { token: alice.credentials });
    expect(noUpgrade.status).toBe(426);
    expect((await history(alice, chatId)).headSeq).toBe(1);
  });

  it("a revoked device: its open sockets close with device_revoked, other devices stay", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const aliceSocket = await connect(chatId, alice.credentials);
    const bobSocket = await connect(chatId, bob.credentials);
    expect((await api("/api/auth/logout", { method: "POST", token: alice.credentials })).status).toBe(204);
    expect((await aliceSocket.closeEvent()).code).toBe(CloseCode.deviceRevoked);
    expect((await refused(chatId, alice.credentials)).close.code).toBe(CloseCode.deviceRevoked);
    expect(await socketSend(bobSocket, "b1", "still here")).toMatchObject({ ok: true });
    expect(bobSocket.closed).toBeNull();
  });
});

describe("bad frames", () => {
  it("get error frames or error replies; the socket, other clients and storage are unharmed", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const aliceSocket = await connect(chatId, alice.credentials);
    const bobSocket = await connect(chatId, bob.credentials);
    const errors = () => aliceSocket.frames.filter((f) => f.type === "error" || (f.type === "reply" && !f.ok));
    const expectNext = async (count: number, code: string) => {
      const found = await aliceSocket.until(() => errors().length >= count && errors()[count - 1], `error ${code}`);
      expect(found).toMatchObject(found.type === "error" ? { error: { code } } : { ok: false, error: { code } });
    };
    aliceSocket.send("{not json");
    await expectNext(1, "invalid_json");
    aliceSocket.send({ type: "teleport", id: "t1" });
    await expectNext(2, "unknown_frame");
    aliceSocket.send({ type: "send", id: "t2", clientId: 7, body: "wrong type" });
    await expectNext(3, "validation_failed");
    aliceSocket.send({ type: "send", id: "t3", clientId: "c1", body: "x".repeat(64 * 1024 + 1) });
    await expectNext(4, "validation_failed");
    aliceSocket.send(JSON.stringify({ type: "send", id: "t4", clientId: "c1", body: "x".repeat(400 * 1024) }));
    await expectNext(5, "too_large");
    aliceSocket.ws.send(new Uint8Array([1, 2, 3]));
    await expectNext(6, "binary_not_supported");
    aliceSocket.send({ type: "send", clientId: "c1", body: "no id" });
    await expectNext(7, "validation_failed");
    aliceSocket.send([1, 2]);
    await expectNext(8, "unknown_frame");
    aliceSocket.send({ type: "send", id: "t5", clientId: "c1", body: "ok", replyToSeq: 1 });
    await expectNext(9, "invalid_reply");

    expect((await history(bob, chatId)).headSeq).toBe(1); // nothing stored
    expect(await socketSend(aliceSocket, "c1", "fine")).toMatchObject({ ok: true, result: { seq: 2 } });
    expect(seqs(await messagesFrom(bobSocket, 1))).toEqual([2]);
    expect(aliceSocket.closed).toBeNull();
    expect(bobSocket.frames.some((f) => f.type === "error")).toBe(false);
  });
});
