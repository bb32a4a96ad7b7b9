import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { mintId } from "../../src/lib/minted-id.ts";
import { ChatSummary, DeletedForMe, HiddenPage, type HiddenFrame, type SendResult } from "../../src/protocol/index.ts";
import { DeviceStreams } from "../../src/user/device-streams.ts";
import { api, apiClient, connect, createGroup, expectError, history, login, openStream, restSend, resumeStream, ownTables, type Session, type TestSocket } from "./helpers.ts";

const HMAC_SECRET = "test-hmac-secret-0123456789abcdef012345678"; // vitest.config.ts

async function send(session: Session, chatId: string, body: string): Promise<SendResult> {
  const response = await restSend(session, chatId, crypto.randomUUID(), body);
  expect(response.status).toBe(201);
  return (await response.json()) as SendResult;
}

function hideRequest(session: Session, chatId: string, seq: number): Promise<Response> {
  return api(`/api/chats/${chatId}/messages/${seq}?for=me`, { token: session.credentials, method: "DELETE" });
}

async function hide(session: Session, chatId: string, seq: number): Promise<DeletedForMe> {
  const response = await hideRequest(session, chatId, seq);
  expect(response.status).toBe(200);
  return DeletedForMe.parse(await response.json());
}

async function hiddenPage(session: Session, query = ""): Promise<HiddenPage> {
  const response = await api(`/api/me/hidden${query}`, { token: session.credentials });
  expect(response.status).toBe(200);
  return HiddenPage.parse(await response.json());
}

const hiddenFrames = (socket: TestSocket) => socket.frames.filter((frame): frame is HiddenFrame => frame.type === "hidden");

let frameIds = 0;
async function ask(socket: TestSocket, frame: Record<string, unknown>) {
  const id = `h${++frameIds}`;
  socket.send({ ...frame, id });
  return socket.reply(id);
}

/** Opens a stream and resumes it with `hiddenSince` (and no chat cursors); resolves after `synced`. */
async function resumeWithHidden(session: Session, hiddenSince?: number): Promise<TestSocket> {
  const { socket } = await openStream(session.credentials);
  await socket!.until(() => socket!.frames.find((frame) => frame.type === "stream.ready"), "stream.ready");
  const reply = await ask(socket!, hiddenSince === undefined ? { type: "resume", cursors: {} } : { type: "resume", cursors: {}, hiddenSince });
  expect(reply).toMatchObject({ ok: true });
  await socket!.until(() => socket!.frames.some((frame) => frame.type === "synced"), "synced");
  return socket!;
}

describe("delete for me", () => {
  it("hides a message on the account's other devices, live, and nowhere else", async () => {
    const alice = await login();
    const aliceLaptop = await login(alice.phone, "laptop");
    const bob = await login();
    const chatId = await createGroup(alice, [bob]);
    const message = await send(bob, chatId, "hi alice");
    const { socket: laptopStream } = await resumeStream(aliceLaptop.credentials);
    const { socket: bobStream } = await resumeStream(bob.credentials);

    const hidden = await hide(alice, chatId, message.seq);
    expect(hidden).toEqual({ for: "me", hiddenNo: 1, chatId, seq: message.seq, hiddenAt: expect.any(Number), duplicate: false });
    const entry = { hiddenNo: 1, chatId, seq: message.seq, hiddenAt: hidden.hiddenAt };
    await laptopStream.until(() => hiddenFrames(laptopStream).length > 0, "hidden");
    expect(hiddenFrames(laptopStream)).toEqual([{ type: "hidden", entries: [entry], more: false }]);

    // The chat is unchanged for everyone: no event, the message whole, nothing hidden for Bob.
    const page = await history(bob, chatId, `?after=${message.seq - 1}`);
    expect(page.headSeq).toBe(message.seq);
    expect(page.events[0]).toMatchObject({ seq: message.seq, body: "hi alice" });
    expect(await hiddenPage(bob)).toEqual({ entries: [], hasMore: false, headHiddenNo: 0 });
    // Bob's stream hears of the next message, and of no hidden one before it.
    const next = await send(alice, chatId, "next");
    await bobStream.until(() => bobStream.events().find((event) => event.seq === next.seq), "the next message");
    expect(hiddenFrames(bobStream)).toEqual([]);

    // Hiding again is harmless: the same entry, no new number, no new frame.
    expect(await hide(aliceLaptop, chatId, message.seq)).toEqual({ ...hidden, duplicate: true });
    expect(await hiddenPage(alice)).toEqual({ entries: [entry], hasMore: false, headHiddenNo: 1 });
    expect(hiddenFrames(laptopStream)).toHaveLength(1);
  });

  it("a device that was away gets what was hidden after its hiddenSince, before the catch-up ends", async () => {
    const alice = await login();
    const bob = await login();
    const chatId = await createGroup(alice, [bob]);
    const seqs: number[] = [];
    for (const body of ["one", "two", "three"]) seqs.push((await send(bob, chatId, body)).seq);
    const entries = [];
    for (const seq of seqs) {
      const { hiddenNo, hiddenAt } = await hide(alice, chatId, seq);
      entries.push({ hiddenNo, chatId, seq, hiddenAt });
    }
    const tablet = await login(alice.phone, "tablet");

    const resumed = await resumeWithHidden(tablet, 1);
    expect(hiddenFrames(resumed)).toEqual([{ type: "hidden", entries: entries.slice(1), more: false, after: 1 }]);
    const order = resumed.frames.map((frame) => frame.type);
    expect(order.indexOf("hidden")).toBeLessThan(order.indexOf("synced"));
    expect(order.indexOf("hidden")).toBeGreaterThan(order.indexOf("reply"));

    // Up to date, or not asking: nothing is sent.
    expect(hiddenFrames(await resumeWithHidden(tablet, 3))).toEqual([]);
    expect(hiddenFrames(await resumeWithHidden(tablet))).toEqual([]);
    expect(hiddenFrames(await resumeWithHidden(tablet, 0))).toEqual([{ type: "hidden", entries, more: false, after: 0 }]);
  });

  it("sends a resume's hidden pages one per sync, and no live hidden frame before them", async () => {
    const alice = await login();
    const tablet = await login(alice.phone, "tablet");
    const bob = await login();
    const chatId = await createGroup(alice, [bob]);
    const seqs: number[] = [];
    for (const body of ["one", "two", "three", "four", "five"]) seqs.push((await send(bob, chatId, body)).seq);
    for (const seq of seqs.slice(0, 3)) await hide(alice, chatId, seq);
    const pageSize = DeviceStreams.hiddenPageSize;
    DeviceStreams.hiddenPageSize = 1;
    try {
      const { socket } = await openStream(tablet.credentials);
      const stream = socket!;
      await stream.until(() => stream.frames.find((frame) => frame.type === "stream.ready"), "stream.ready");
      // A hide made while the resume is being answered.
      const resumed = ask(stream, { type: "resume", cursors: {}, hiddenSince: 0 });
      await hide(alice, chatId, seqs[3]!);
      expect(await resumed).toMatchObject({ ok: true });
      // One page, then the stream waits for the device's sync; a hide made between two
      // pages comes in a page, not before one.
      const catchingUp = () => stream.frames.filter((frame) => frame.type === "catching_up").length;
      for (let pages = 1; pages <= 4; pages++) {
        await stream.until(() => catchingUp() >= pages, `catching_up ${pages}`);
        expect(hiddenFrames(stream)).toHaveLength(pages);
        if (pages === 1) await hide(alice, chatId, seqs[4]!);
        expect(await ask(stream, { type: "sync" })).toMatchObject({ ok: true });
      }
      await stream.until(() => stream.frames.some((frame) => frame.type === "synced"), "synced");
      const frames = hiddenFrames(stream);
      expect(frames.map((frame) => [frame.after, frame.entries.map((entry) => entry.hiddenNo), frame.more])).toEqual([
        [0, [1], true],
        [1, [2], true],
        [2, [3], true],
        [3, [4], true],
        [4, [5], false],
      ]);
      // Every hidden frame before `synced`, and the reply to resume before any of them.
      const order = stream.frames.map((frame) => frame.type);
      expect(order.lastIndexOf("hidden")).toBeLessThan(order.indexOf("synced"));
      expect(order.indexOf("hidden")).toBeGreaterThan(order.indexOf("reply"));
      // Live from here: the next hide comes at once, with no `after`.
      const six = await send(bob, chatId, "six");
      const entry = await hide(alice, chatId, six.seq);
      await stream.until(() => hiddenFrames(stream).length === 6, "the live frame");
      expect(hiddenFrames(stream)[5]).toEqual({ type: "hidden", entries: [{ hiddenNo: 6, chatId, seq: six.seq, hiddenAt: entry.hiddenAt }], more: false });
    } finally {
      DeviceStreams.hiddenPageSize = pageSize;
    }
  });

  it("the account's chat list stops previewing a latest message it hid, on every device, and keeps it so", async () => {
    const alice = await login();
    const laptop = await login(alice.phone, "laptop");
    const bob = await login();
    const carol = await login();
    const chatId = await createGroup(alice, [bob]);
    const secret = await send(bob, chatId, "secret");
    const entryOf = async (session: Session) => (await apiClient(session).chats({ limit: 200 })).chats.find((chat) => chat.chatId === chatId);
    await expect.poll(async () => (await entryOf(alice))?.lastMessage?.body).toBe("secret");
    const { socket: laptopStream } = await resumeStream(laptop.credentials);

    await hide(alice, chatId, secret.seq);
    const preview = { seq: secret.seq, senderId: bob.user.userId, createdAt: expect.any(Number), hidden: true };
    const chatFrame = await laptopStream.until(
      () => laptopStream.frames.find((frame) => frame.type === "chat" && frame.chat.chatId === chatId && frame.chat.lastMessage?.hidden),
      "the entry with its preview hidden",
    );
    expect(chatFrame.type === "chat" && chatFrame.chat.lastMessage).toStrictEqual(preview);
    expect((await entryOf(alice))?.lastMessage).toStrictEqual(preview);
    // Only the account that hid it: Bob's list still previews it.
    expect((await entryOf(bob))?.lastMessage).toMatchObject({ seq: secret.seq, body: "secret" });

    // Updates from the chat carrying the same latest message keep it hidden: a read, a new member.
    const read = await api(`/api/chats/${chatId}/read`, { token: alice.credentials, body: { seq: secret.seq } });
    expect(read.status).toBe(200);
    expect(ChatSummary.parse(await read.json()).lastMessage).toStrictEqual(preview);
    const headBefore = (await entryOf(alice))!.headSeq;
    expect((await api(`/api/chats/${chatId}/members`, { token: alice.credentials, body: { userIds: [carol.user.userId] } })).status).toBe(201);
    await expect.poll(async () => (await entryOf(alice))!.headSeq).toBeGreaterThan(headBefore);
    expect((await entryOf(alice))?.lastMessage).toStrictEqual(preview);
    // No entry the laptop got since the hide shows the message's text.
    const since = laptopStream.frames.slice(laptopStream.frames.indexOf(chatFrame));
    const previews = since.flatMap((frame) => (frame.type === "chat" && frame.chat.chatId === chatId ? [frame.chat.lastMessage] : []));
    expect(previews.length).toBeGreaterThan(1);
    for (const shown of previews) expect(shown).toStrictEqual(preview);

    // The next message is previewed as usual.
    const next = await send(bob, chatId, "not hidden");
    await expect.poll(async () => (await entryOf(alice))?.lastMessage).toStrictEqual({ seq: next.seq, senderId: bob.user.userId, createdAt: expect.any(Number), body: "not hidden" });
  });

  it("GET /api/me/hidden pages the entries in hiddenNo order", async () => {
    const alice = await login();
    const bob = await login();
    const chatId = await createGroup(alice, [bob]);
    const hidden = [];
    for (const body of ["a", "b", "c"]) hidden.push(await hide(alice, chatId, (await send(bob, chatId, body)).seq));
    const entries = hidden.map(({ hiddenNo, chatId, seq, hiddenAt }) => ({ hiddenNo, chatId, seq, hiddenAt }));
    expect(await hiddenPage(alice, "?limit=2")).toEqual({ entries: entries.slice(0, 2), hasMore: true, headHiddenNo: 3 });
    expect(await hiddenPage(alice, "?after=2&limit=2")).toEqual({ entries: entries.slice(2), hasMore: false, headHiddenNo: 3 });
    expect(await hiddenPage(alice, "?after=3")).toEqual({ entries: [], hasMore: false, headHiddenNo: 3 });
    for (const query of ["?limit=0", "?limit=501", "?after=-1", "?after=x", "?cursor=1"]) {
      await expectError(await api(`/api/me/hidden${query}`, { token: alice.credentials }), 400, "validation_failed");
    }
  });

  it("stops at the cap with too_many_hidden, still answering what is already hidden", async () => {
    const alice = await login();
    const bob = await login();
    const chatId = await createGroup(alice, [bob]);
    const seqs: number[] = [];
    for (const body of ["a", "b", "c"]) seqs.push((await send(bob, chatId, body)).seq);
    const account = env.USER.get(env.USER.idFromName(alice.user.userId));
    const cap = 2;
    expect(await account.hideMessage(chatId, seqs[0]!, Date.now(), cap)).toMatchObject({ ok: true, value: { hiddenNo: 1 } });
    expect(await account.hideMessage(chatId, seqs[1]!, Date.now(), cap)).toMatchObject({ ok: true, value: { hiddenNo: 2 } });
    expect(await account.hideMessage(chatId, seqs[2]!, Date.now(), cap)).toMatchObject({
      ok: false,
      status: 409,
      error: { code: "too_many_hidden", retryable: false },
    });
    expect(await account.hideMessage(chatId, seqs[1]!, Date.now(), cap)).toMatchObject({ ok: true, value: { hiddenNo: 2, duplicate: true } });
    expect((await hiddenPage(alice)).headHiddenNo).toBe(2);
  });

  it("refuses what the account could not see: not_found for a seq, not_a_member for a chat not in its list", async () => {
    const alice = await login();
    const bob = await login();
    const carol = await login();
    const chatId = await createGroup(alice, [bob]);
    const before = await send(alice, chatId, "before carol");
    const added = await api(`/api/chats/${chatId}/members`, { token: alice.credentials, body: { userIds: [carol.user.userId] } });
    expect(added.status).toBe(201);
    // Carol's list has the chat once the chat's fan-out reached her account.
    await expect.poll(async () => (await apiClient(carol).chats({ limit: 200 })).chats.some((chat) => chat.chatId === chatId)).toBe(true);
    const head = (await history(alice, chatId)).headSeq;
    for (const seq of [1, before.seq, head, head + 1]) await expectError(await hideRequest(carol, chatId, seq), 404, "not_found");
    const otherChat = await createGroup(bob, []);
    const bobs = await send(bob, otherChat, "private");
    await expectError(await hideRequest(alice, otherChat, bobs.seq), 403, "not_a_member");
    expect(await hiddenPage(carol)).toEqual({ entries: [], hasMore: false, headHiddenNo: 0 });
    expect(await hiddenPage(alice)).toEqual({ entries: [], hasMore: false, headHiddenNo: 0 });
  });

  it("keeps the entries of a chat the account left, which may still hide what it saw", async () => {
    const alice = await login();
    const bob = await login();
    const chatId = await createGroup(alice, [bob]);
    const one = await send(alice, chatId, "one");
    const two = await send(alice, chatId, "two");
    const first = await hide(bob, chatId, one.seq);
    expect((await api(`/api/chats/${chatId}/leave`, { token: bob.credentials, method: "POST" })).status).toBe(200);
    const second = await hide(bob, chatId, two.seq);
    expect((await hiddenPage(bob)).entries.map((entry) => entry.hiddenNo)).toEqual([first.hiddenNo, second.hiddenNo]);
    const after = await send(alice, chatId, "after bob left");
    await expectError(await hideRequest(bob, chatId, after.seq), 404, "not_found");
  });

  it("works from a chat socket and from a device stream, each device of the account told", async () => {
    const alice = await login();
    const aliceLaptop = await login(alice.phone, "laptop");
    const bob = await login();
    const chatId = await createGroup(alice, [bob]);
    const one = await send(bob, chatId, "one");
    const two = await send(bob, chatId, "two");
    const { socket: laptopStream } = await resumeStream(aliceLaptop.credentials);

    const socket = await connect(chatId, alice.credentials);
    expect(await ask(socket, { type: "delete", seq: one.seq, for: "me" })).toMatchObject({
      ok: true,
      result: { for: "me", hiddenNo: 1, chatId, seq: one.seq, duplicate: false },
    });
    expect(await ask(socket, { type: "delete", seq: 1, for: "me" })).toMatchObject({ ok: false, error: { code: "not_found" } });
    const { socket: phoneStream } = await resumeStream(alice.credentials);
    expect(await ask(phoneStream, { type: "delete", chatId, seq: two.seq, for: "me" })).toMatchObject({
      ok: true,
      result: { for: "me", hiddenNo: 2, chatId, seq: two.seq, duplicate: false },
    });
    await laptopStream.until(() => hiddenFrames(laptopStream).length >= 2, "two hidden frames");
    expect(hiddenFrames(laptopStream).map((frame) => frame.entries.map((entry) => entry.seq))).toEqual([[one.seq], [two.seq]]);
    // The device that hid it is told too: every device keeps the same list.
    await phoneStream.until(() => hiddenFrames(phoneStream).length >= 1, "its own hidden frame");
  });
});

describe("delete for me with made-up ids stores nothing", () => {
  it("an unknown chat or a made-up seq writes no entry and wakes no chat", async () => {
    const alice = await login();
    const bob = await login();
    const chatId = await createGroup(alice, [bob]);
    const neverCreated = await mintId(HMAC_SECRET, "g");
    await expectError(await hideRequest(alice, neverCreated, 2), 403, "not_a_member");
    await expectError(await hideRequest(alice, `g_${"A".repeat(32)}`, 2), 404, "chat_not_found");
    await expectError(await hideRequest(alice, chatId, 424_242), 404, "not_found");
    const { socket: stream } = await resumeStream(alice.credentials);
    expect(await ask(stream, { type: "delete", chatId: neverCreated, seq: 2, for: "me" })).toMatchObject({ ok: false, error: { code: "not_a_member" } });
    expect(await ask(stream, { type: "delete", chatId: neverCreated, seq: 2, for: "everyone" })).toMatchObject({ ok: false, error: { code: "not_a_member" } });
    await expectError(await api(`/api/chats/${neverCreated}/messages/2?for=everyone`, { token: alice.credentials, method: "DELETE" }), 404, "chat_not_found");

    const room = env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(neverCreated));
    expect(await runInDurableObject(room, (_instance, state) => ownTables(state))).toEqual([]);
    expect(await hiddenPage(alice)).toEqual({ entries: [], hasMore: false, headHiddenNo: 0 });
    const account = env.USER.get(env.USER.idFromName(alice.user.userId));
    const rows = await runInDurableObject(account, (_instance, state) => state.storage.sql.exec("SELECT count(*) AS n FROM hidden_messages").one());
    expect(rows.n).toBe(0);
  });
});
