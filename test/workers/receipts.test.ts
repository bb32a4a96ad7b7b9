import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { MessageStatus, ReceiptResult, type ReceiptsFrame } from "../../src/protocol/index.ts";
import {
  api,
  apiClient,
  connect,
  createDirect,
  createGroup,
  expectError,
  history,
  login,
  openStream,
  restSend,
  resumeStream,
  type Session,
  type TestSocket,
} from "./helpers.ts";

async function send(session: Session, chatId: string, body: string): Promise<number> {
  const response = await restSend(session, chatId, crypto.randomUUID(), body);
  expect(response.status).toBe(201);
  return ((await response.json()) as { seq: number }).seq;
}

async function status(session: Session, chatId: string, seq: number): Promise<MessageStatus> {
  const response = await api(`/api/chats/${chatId}/messages/${seq}/status`, { token: session.credentials });
  expect(response.status).toBe(200);
  return MessageStatus.parse(await response.json());
}

async function delivered(session: Session, chatId: string, seq: number): Promise<ReceiptResult> {
  const response = await api(`/api/chats/${chatId}/delivered`, { token: session.credentials, body: { seq } });
  expect(response.status).toBe(200);
  return ReceiptResult.parse(await response.json());
}

let frameId = 0;
/** Sends a frame with a fresh id and waits for its reply. */
async function ask(socket: TestSocket, frame: Record<string, unknown>) {
  const id = `r${++frameId}`;
  socket.send({ ...frame, id });
  return socket.reply(id);
}

/** The latest `receipts` frame a socket got for `chatId` that satisfies `ok`. */
function receiptsOn(socket: TestSocket, chatId: string, ok: (frame: ReceiptsFrame) => boolean, what: string) {
  return socket.until(
    () => socket.frames.findLast((f): f is ReceiptsFrame => f.type === "receipts" && f.chatId === chatId && ok(f)),
    what,
  );
}

describe("message status: SENT, DELIVERED, SEEN", () => {
  it("stays SENT while the recipient is offline, then DELIVERED and SEEN, each seen live by the sender on every connection", async () => {
    const alicePhone = await login();
    const aliceLaptop = await login(alicePhone.phone, "laptop");
    const bobPhone = await login();
    const bobTablet = await login(bobPhone.phone, "tablet");
    const chatId = await createDirect(alicePhone, bobPhone);
    // The sender watches on a device stream (phone) and on a chat socket (laptop).
    const { socket: aliceStream } = await resumeStream(alicePhone.credentials);
    const aliceSocket = await connect(chatId, aliceLaptop.credentials);
    expect(aliceSocket.frames[0]).toMatchObject({ type: "ready", deliveredUpTo: 1, seenUpTo: 1 });

    const seq = await send(alicePhone, chatId, "are you there?");
    // No device of Bob's has it: SENT, however long we wait for the fan-out.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await status(alicePhone, chatId, seq)).toMatchObject({ status: "sent", recipients: 1, delivered: 0, seen: 0 });
    expect(aliceStream.frames.some((f) => f.type === "receipts")).toBe(false);

    // Bob's tablet connects and reports what it received.
    const { socket: bobStream } = await resumeStream(bobTablet.credentials, { [chatId]: 1 });
    await bobStream.until(() => bobStream.events().find((event) => event.seq === seq), "the message");
    const reply = await ask(bobStream, { type: "delivered", chatId, seq });
    expect(reply).toMatchObject({ ok: true, result: { chatId, deliveredSeq: seq, seenSeq: 1 } });
    for (const socket of [aliceStream, aliceSocket]) {
      expect(await receiptsOn(socket, chatId, (f) => f.deliveredUpTo >= seq, "delivered")).toMatchObject({ deliveredUpTo: seq, seenUpTo: 1 });
    }
    const afterDelivery = await status(alicePhone, chatId, seq);
    expect(afterDelivery).toMatchObject({ status: "delivered", delivered: 1, seen: 0 });
    expect(afterDelivery.members).toEqual([{ userId: bobPhone.user.userId, deliveredAt: expect.any(Number), seenAt: null }]);

    // Bob reads it on his other device (a `read` is SEEN).
    const { socket: bobPhoneStream } = await resumeStream(bobPhone.credentials, { [chatId]: seq });
    expect(await ask(bobPhoneStream, { type: "read", chatId, seq })).toMatchObject({ ok: true });
    for (const socket of [aliceStream, aliceSocket]) {
      expect(await receiptsOn(socket, chatId, (f) => f.seenUpTo >= seq, "seen")).toMatchObject({ deliveredUpTo: seq, seenUpTo: seq });
    }
    const seen = await status(alicePhone, chatId, seq);
    expect(seen).toMatchObject({ status: "seen", delivered: 1, seen: 1 });
    const [bob] = seen.members!;
    expect(bob!.seenAt).toBeGreaterThanOrEqual(bob!.deliveredAt!);
    // The sender's chat list carries the same watermarks.
    const list = await apiClient(alicePhone).chats();
    expect(list.chats.find((chat) => chat.chatId === chatId)).toMatchObject({ deliveredUpTo: seq, seenUpTo: seq });
    // The same question as a frame, on either connection.
    expect(await ask(aliceStream, { type: "status", chatId, seq })).toMatchObject({ ok: true, result: { status: "seen" } });
    expect(await ask(aliceSocket, { type: "status", seq })).toMatchObject({ ok: true, result: { status: "seen" } });
  });

  it("counts the recipients whose membership contains the message: a member who joined after is not one", async () => {
    const [alice, bob, carol, dave] = await Promise.all([login(), login(), login(), login()]);
    const chatId = await createGroup(alice, [bob, carol]);
    const first = await send(alice, chatId, "hello all");
    const aliceSocket = await connect(chatId, alice.credentials);

    await delivered(bob, chatId, first);
    expect(await status(alice, chatId, first)).toMatchObject({ status: "sent", recipients: 2, delivered: 1 });
    // Carol holds it back: no frame moves Alice's messages (given time to arrive if one were sent).
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(aliceSocket.frames.some((f) => f.type === "receipts")).toBe(false);
    await delivered(carol, chatId, first);
    expect(await receiptsOn(aliceSocket, chatId, (f) => f.deliveredUpTo >= first, "delivered to all")).toMatchObject({ seenUpTo: 1 });
    expect(await status(alice, chatId, first)).toMatchObject({ status: "delivered", recipients: 2, delivered: 2, seen: 0 });

    const { seq: added } = await apiClient(alice).addMembers(chatId, [dave.user.userId]);
    const second = await send(alice, chatId, "welcome dave");
    const before = await status(alice, chatId, first);
    expect(before).toMatchObject({ status: "delivered", recipients: 2 });
    expect(before.members!.map((member) => member.userId).sort()).toEqual([bob.user.userId, carol.user.userId].sort());
    expect(await status(alice, chatId, second)).toMatchObject({ status: "sent", recipients: 3, delivered: 0 });

    // Reads: SEEN once everyone whose period contains it read it; Dave's read covers only his period.
    await apiClient(bob).markRead(chatId, second);
    await apiClient(carol).markRead(chatId, second);
    expect(await status(alice, chatId, first)).toMatchObject({ status: "seen", seen: 2 });
    expect(await status(alice, chatId, second)).toMatchObject({ status: "sent", delivered: 2, seen: 2 });
    await apiClient(dave).markRead(chatId, second);
    expect(await receiptsOn(aliceSocket, chatId, (f) => f.seenUpTo >= second, "seen by all")).toMatchObject({ deliveredUpTo: second });
    const detail = await status(alice, chatId, second);
    expect(detail).toMatchObject({ status: "seen", recipients: 3, delivered: 3, seen: 3 });
    expect(detail.members).toHaveLength(3);
    expect(added).toBeLessThan(second);
  });

  it("counts a history page as delivered to the member who fetched it, when it joins what they had", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const seqs: number[] = [];
    for (let index = 0; index < 6; index++) seqs.push(await send(alice, chatId, `fetch me ${index}`));
    // The newest two only: the four before them have not reached any device of Bob's.
    await history(bob, chatId, "?limit=2");
    expect(await status(alice, chatId, seqs[5]!)).toMatchObject({ status: "sent" });
    await history(bob, chatId, "?after=1&limit=3");
    expect(await status(alice, chatId, seqs[2]!)).toMatchObject({ status: "delivered" });
    expect(await status(alice, chatId, seqs[3]!)).toMatchObject({ status: "sent" });
    await history(bob, chatId, `?after=${seqs[2]}`);
    expect(await status(alice, chatId, seqs[5]!)).toMatchObject({ status: "delivered" });
  });

  it("moves the senders' messages when the member holding them back leaves, and the holder's own when others catch up", async () => {
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    const chatId = await createGroup(alice, [bob, carol]);
    const fromAlice = await send(alice, chatId, "from alice");
    const fromCarol = await send(carol, chatId, "from carol");
    const [aliceSocket, carolSocket] = await Promise.all([connect(chatId, alice.credentials), connect(chatId, carol.credentials)]);
    // Bob has both; Carol never reports. Alice's message waits for Carol; Carol's (she holds the
    // lowest watermark) needs Alice and Bob, and Alice has not reported yet.
    await delivered(bob, chatId, fromCarol);
    await delivered(alice, chatId, fromCarol);
    expect(await receiptsOn(carolSocket, chatId, (f) => f.deliveredUpTo >= fromCarol, "carol's message delivered")).toMatchObject({ seenUpTo: 1 });
    expect(await status(alice, chatId, fromAlice)).toMatchObject({ status: "sent", delivered: 1 });
    // Carol leaves: she no longer holds Alice's message back.
    await apiClient(carol).leaveChat(chatId);
    expect(await receiptsOn(aliceSocket, chatId, (f) => f.deliveredUpTo >= fromAlice, "alice's message delivered")).toBeTruthy();
    expect(await status(alice, chatId, fromAlice)).toMatchObject({ status: "delivered", recipients: 1, delivered: 1 });
  });

  it("a read on a chat socket clears the reader's unread count in their chat list", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const seq = await send(alice, chatId, "unread until bob reads it");
    const entry = async () => (await apiClient(bob).chats()).chats.find((chat) => chat.chatId === chatId);
    await expect.poll(entry, { timeout: 5_000 }).toMatchObject({ headSeq: seq, unreadCount: 1 });
    const bobSocket = await connect(chatId, bob.credentials);
    expect(await ask(bobSocket, { type: "read", seq })).toMatchObject({ ok: true, result: { seenSeq: seq } });
    await expect.poll(entry, { timeout: 5_000 }).toMatchObject({ readSeq: seq, unreadCount: 0 });
  });

  it("gives a resuming stream the receipts that moved while it was away", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const { socket: first } = await resumeStream(alice.credentials);
    const seq = await send(alice, chatId, "read me later");
    await delivered(bob, chatId, seq);
    const seenDelivery = await receiptsOn(first, chatId, (f) => f.deliveredUpTo >= seq, "delivered");
    first.ws.close(1000, "away");

    await apiClient(bob).markRead(chatId, seq);
    const { socket: again } = await resumeStream(alice.credentials, { [chatId]: seq });
    // A resume that says nothing about receipts gets none…
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(again.frames.some((f) => f.type === "receipts")).toBe(false);
    // …one with the last `at` it saw gets what moved since.
    const { response, socket } = await openStream(alice.credentials);
    expect(response.status).toBe(101);
    socket!.send({ type: "resume", id: "since", cursors: { [chatId]: seq }, receiptsSince: seenDelivery.at });
    expect(await receiptsOn(socket!, chatId, (f) => f.seenUpTo >= seq, "seen while away")).toMatchObject({ deliveredUpTo: seq });
  });
});

describe("receipts: bad input and rights", () => {
  it("refuses seqs past the head, non-members and former members, and ignores stale or early reports", async () => {
    const [alice, bob, carol, dave] = await Promise.all([login(), login(), login(), login()]);
    const chatId = await createGroup(alice, [bob, carol]);
    const one = await send(alice, chatId, "one");
    const two = await send(alice, chatId, "two");

    await expectError(await api(`/api/chats/${chatId}/delivered`, { token: bob.credentials, body: { seq: two + 5 } }), 400, "invalid_cursor");
    await expectError(await api(`/api/chats/${chatId}/delivered`, { token: bob.credentials, body: { seq: 0 } }), 400, "validation_failed");
    await expectError(await api(`/api/chats/${chatId}/delivered`, { token: bob.credentials, body: { seq: "2" } }), 400, "validation_failed");
    await expectError(await api(`/api/chats/${chatId}/delivered`, { token: dave.credentials, body: { seq: one } }), 403, "not_a_member");

    // Watermarks never move back: a later, lower report is absorbed.
    expect(await delivered(bob, chatId, two)).toMatchObject({ deliveredSeq: two });
    expect(await delivered(bob, chatId, one)).toMatchObject({ deliveredSeq: two });
    expect(await delivered(bob, chatId, two)).toMatchObject({ deliveredSeq: two });

    // A member added later reports a seq from before their period: nothing changes.
    const { seq: added } = await apiClient(alice).addMembers(chatId, [dave.user.userId]);
    expect(await delivered(dave, chatId, one)).toMatchObject({ deliveredSeq: added, seenSeq: added });

    // Only the sender asks a message's status; a seq that is not a message is not found.
    await expectError(await api(`/api/chats/${chatId}/messages/${one}/status`, { token: bob.credentials }), 404, "not_found");
    await expectError(await api(`/api/chats/${chatId}/messages/1/status`, { token: alice.credentials }), 404, "not_found");
    await expectError(await api(`/api/chats/${chatId}/messages/abc/status`, { token: alice.credentials }), 400, "validation_failed");

    // A former member reports nothing.
    await apiClient(carol).leaveChat(chatId);
    await expectError(await api(`/api/chats/${chatId}/delivered`, { token: carol.credentials, body: { seq: two } }), 403, "not_a_member");

    // On the stream: a chat not in the account's list, and a bad seq, get error replies; the stream stays.
    const { socket } = await resumeStream(dave.credentials);
    const otherChat = await createDirect(alice, bob);
    expect(await ask(socket, { type: "delivered", chatId: otherChat, seq: 1 })).toMatchObject({ ok: false, error: { code: "not_a_member" } });
    expect(await ask(socket, { type: "delivered", chatId, seq: -1 })).toMatchObject({ ok: false, error: { code: "validation_failed" } });
    expect(await ask(socket, { type: "status", chatId, seq: one })).toMatchObject({ ok: false, error: { code: "not_found" } });
    expect(socket.closed).toBeNull();
  });

  it("keeps a bounded record of advances per member, whatever the number of messages", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    let last = 0;
    for (let index = 0; index < 45; index++) {
      last = await send(alice, chatId, `m${index}`);
      await delivered(bob, chatId, last);
    }
    const stub = env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId));
    const rows = await runInDurableObject(stub, (_instance, state) =>
      state.storage.sql.exec<{ rows: number }>("SELECT count(*) AS rows FROM receipt_advances").one().rows,
    );
    expect(rows).toBe(32);
    // The oldest messages' times are no longer kept (counted as delivered all the same); the newest are.
    const oldest = await status(alice, chatId, 2);
    const newest = await status(alice, chatId, last);
    expect(oldest).toMatchObject({ status: "delivered", delivered: 1, members: [{ deliveredAt: null }] });
    expect(newest.members![0]!.deliveredAt).toEqual(expect.any(Number));
  });

  it("writes nothing for a chat that does not exist", async () => {
    const alice = await login();
    const { mintId } = await import("../../src/lib/minted-id.ts");
    const { configFrom } = await import("../../src/lib/config.ts");
    const chatId = await mintId(configFrom(env).hmacSecret, "g");
    await expectError(await api(`/api/chats/${chatId}/delivered`, { token: alice.credentials, body: { seq: 1 } }), 404, "chat_not_found");
    await expectError(await api(`/api/chats/${chatId}/messages/1/status`, { token: alice.credentials }), 404, "chat_not_found");
    const stub = env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId));
    const tables = await runInDurableObject(stub, (_instance, state) =>
      state.storage.sql.exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\'").toArray(),
    );
    expect(tables).toEqual([]);
  });
});
