import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ApiError,
  CursorStore,
  MemoryCursorStorage,
  StreamRequestError,
  type ApiClient,
  type HiddenMessage,
  type MessageDeletion,
} from "../../src/client/index.ts";
import { clientOptions, logIn, uniquePhone } from "./support/clients.ts";
import { OpenConnections } from "./support/connections.ts";
import { startDevServer, type DevServer } from "./support/dev-server.ts";
import { waitFor } from "./support/waiting.ts";

const png = (length: number) => {
  const bytes = new Uint8Array(length);
  crypto.getRandomValues(bytes);
  bytes.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return bytes;
};

/** What a call rejects with. */
async function rejection(call: Promise<unknown>): Promise<unknown> {
  return call.then(
    () => {
      throw new Error("expected a refusal");
    },
    (error: unknown) => error,
  );
}

/** Polls an async observation (a REST read) until it holds; fails with `what` after 30 s. */
async function until<T>(read: () => Promise<T>, holds: (value: T) => boolean, what: string): Promise<T> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const value = await read();
    if (holds(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The login helpers of one server: each device behind its own client address. */
function devices(server: () => DevServer, network: number) {
  let addresses = 0;
  return async function device(name: string, phone = uniquePhone()) {
    const api = await logIn(clientOptions(server().url, `10.${network}.${Math.floor(++addresses / 250)}.${addresses % 250}`), phone, name);
    return { api, userId: api.session!.user.userId, phone };
  };
}

/**
 * Deleting messages through wrangler dev, with the SDK: for everyone (a tombstone and
 * `message.deleted` for every member, however late they come back, and the files gone)
 * and for me (hidden on the account's own devices only, live and at resume).
 */
describe("deleting messages through wrangler dev, with the SDK", () => {
  let server: DevServer;
  const connections = new OpenConnections();
  const device = devices(() => server, 81);

  beforeAll(async () => {
    server = await startDevServer({ DEV_MODE: "true", OTP_SENDER: "console", OTP_RESEND_SECONDS: "0", FAN_OUT_INTERVAL_MS: "50" });
  });
  afterAll(async () => {
    connections.closeAll();
    await server?.stop();
  });

  const openStream = (api: ApiClient, cursors = new CursorStore()) => connections.stream({ api, cursors, heartbeatMs: 1000 });

  it("a message deleted for everyone loses its file, and devices that come back from before it see a tombstone and the deletion; the chat list previews it deleted", async () => {
    const [alice, bob] = await Promise.all([device("alice"), device("bob")]);
    const chat = await alice.api.createChat({ kind: "direct", peerId: bob.userId });
    const aliceSide = openStream(alice.api);
    const aliceDeletions: MessageDeletion[] = [];
    aliceSide.stream.on("deleted", (deletion) => aliceDeletions.push(deletion));
    await waitFor(() => aliceSide.stream.status === "live", "alice's stream live");

    const photo = png(50_000);
    const upload = await alice.api.uploadMedia(chat.chatId, photo, { name: "oops.png" });
    const sent = await aliceSide.stream.sendMessage(chat.chatId, { body: "wrong chat!", attachments: [{ mediaId: upload.mediaId, name: "oops.png" }] });
    expect(sent.seq).toBe(2);
    // Bob can read the file, with his token and through a link, before the delete.
    expect((await bob.api.downloadMedia(chat.chatId, upload.mediaId)).status).toBe(200);
    const link = await bob.api.mediaUrl(chat.chatId, upload.mediaId);
    expect((await fetch(link.url)).status).toBe(200);

    const deleted = await aliceSide.stream.deleteMessage(chat.chatId, sent.seq, "everyone");
    expect(deleted).toEqual({ for: "everyone", chatId: chat.chatId, seq: 2, deletedSeq: 3, duplicate: false });
    await waitFor(() => aliceDeletions.length === 1, "alice's stream tells of the deletion");
    expect(aliceDeletions[0]).toMatchObject({ chatId: chat.chatId, seq: 2, deletedSeq: 3, actorId: alice.userId, senderId: alice.userId });
    // Again: the same answer, marked duplicate.
    expect(await alice.api.deleteMessage(chat.chatId, sent.seq, "everyone")).toEqual({ ...deleted, duplicate: true });

    // The file is gone for everyone, however they ask.
    for (const api of [alice.api, bob.api]) {
      const error = await rejection(api.downloadMedia(chat.chatId, upload.mediaId));
      expect(error).toBeInstanceOf(ApiError);
      expect((error as ApiError).status).toBe(404);
    }
    expect((await fetch(link.url)).status).toBe(404);

    // Bob's device knew the chat up to its first event and comes back only now.
    const bobCursors = new CursorStore();
    bobCursors.set(chat.chatId, 1);
    const bobSide = openStream(bob.api, bobCursors);
    const bobDeletions: MessageDeletion[] = [];
    bobSide.stream.on("deleted", (deletion) => bobDeletions.push(deletion));
    await waitFor(() => bobSide.of(chat.chatId).length === 2, "bob catches up with the tombstone and the deletion");
    const [tombstone, deletion] = bobSide.of(chat.chatId);
    expect(tombstone).toMatchObject({ type: "message", seq: 2, senderId: alice.userId, deletedSeq: 3 });
    expect(tombstone).not.toHaveProperty("body");
    expect(tombstone).not.toHaveProperty("attachments");
    expect(deletion).toMatchObject({ type: "message.deleted", seq: 3, targetSeq: 2, actorId: alice.userId, senderId: alice.userId });
    expect(bobDeletions).toEqual([expect.objectContaining({ chatId: chat.chatId, seq: 2, deletedSeq: 3 })]);

    // A chat socket resuming after the first event gets the same.
    const socket = connections.connect({ api: bob.api, chatId: chat.chatId, after: 1, heartbeatMs: 1000 });
    await waitFor(() => socket.events.length === 2, "the chat socket catches up");
    expect(socket.events).toEqual(bobSide.of(chat.chatId));
    // History, for a client that reads it.
    expect((await bob.api.history(chat.chatId, { after: 1 })).events).toEqual(bobSide.of(chat.chatId));

    // The chat list previews the deleted message as deleted, on both sides.
    const preview = { seq: 2, senderId: alice.userId, deleted: true };
    await waitFor(() => aliceSide.stream.chats.get(chat.chatId)?.lastMessage?.deleted === true, "alice's list entry shows it deleted");
    expect(aliceSide.stream.chats.get(chat.chatId)!.lastMessage).toMatchObject(preview);
    const bobEntry = await until(
      () => bob.api.chats(),
      (list) => list.chats.some((entry) => entry.chatId === chat.chatId && entry.lastMessage?.deleted === true),
      "bob's list entry shows it deleted",
    ).then((list) => list.chats.find((entry) => entry.chatId === chat.chatId)!);
    expect(bobEntry.lastMessage).toMatchObject(preview);
    expect(bobEntry.lastMessage).not.toHaveProperty("body");
    expect(bobEntry.lastMessage).not.toHaveProperty("attachments");
  });

  it("a message deleted for me is hidden on the account's other devices only: live on one online, at resume on one that was away, across app restarts", async () => {
    const alicePhone = await device("alice phone");
    // One number's devices log in one after another: a new code replaces the one before.
    const aliceLaptop = await device("alice laptop", alicePhone.phone);
    const aliceTablet = await device("alice tablet", alicePhone.phone);
    const bob = await device("bob");
    const chat = await bob.api.createChat({ kind: "direct", peerId: alicePhone.userId });
    const first = await bob.api.sendMessage(chat.chatId, { clientId: "b1", body: "embarrassing photo" });
    const second = await bob.api.sendMessage(chat.chatId, { clientId: "b2", body: "another one" });

    // The tablet's app has storage that outlives it: it runs once, then stops.
    const tabletStorage = new MemoryCursorStorage();
    const tabletFirstRun = openStream(aliceTablet.api, new CursorStore(tabletStorage));
    await waitFor(() => tabletFirstRun.stream.status === "live", "the tablet's first run is live");
    tabletFirstRun.stream.close();

    const phone = openStream(alicePhone.api);
    const laptop = openStream(aliceLaptop.api);
    const bobSide = openStream(bob.api);
    const hiddenOn = { phone: [] as HiddenMessage[], laptop: [] as HiddenMessage[], bob: [] as HiddenMessage[] };
    phone.stream.on("hidden", (entries) => hiddenOn.phone.push(...entries));
    laptop.stream.on("hidden", (entries) => hiddenOn.laptop.push(...entries));
    bobSide.stream.on("hidden", (entries) => hiddenOn.bob.push(...entries));
    await waitFor(() => [phone, laptop, bobSide].every((side) => side.stream.status === "live"), "every stream live");

    const hidden = await phone.stream.deleteMessage(chat.chatId, first.seq, "me");
    expect(hidden).toMatchObject({ for: "me", hiddenNo: 1, chatId: chat.chatId, seq: first.seq, duplicate: false });
    const entry = { hiddenNo: 1, chatId: chat.chatId, seq: first.seq };
    expect(hiddenOn.phone).toEqual([expect.objectContaining(entry)]);
    expect(phone.stream.cursors.isHidden(chat.chatId, first.seq)).toBe(true);

    // Live on the laptop.
    await waitFor(() => hiddenOn.laptop.length === 1, "the laptop hides it live");
    expect(hiddenOn.laptop).toEqual([expect.objectContaining(entry)]);
    expect(laptop.stream.cursors.isHidden(chat.chatId, first.seq)).toBe(true);
    const page = await aliceLaptop.api.history(chat.chatId, { after: 1 });
    expect(laptop.stream.cursors.visible(chat.chatId, page.events).map((event) => event.seq)).toEqual([second.seq]);

    // Bob is told nothing: by the time his stream has alice's next message, nothing was hidden for him.
    const reply = await phone.stream.send(chat.chatId, "please delete those");
    await waitFor(() => bobSide.of(chat.chatId).some((event) => event.seq === reply.seq), "bob receives alice's reply");
    expect(hiddenOn.bob).toEqual([]);
    expect(bobSide.stream.cursors.isHidden(chat.chatId, first.seq)).toBe(false);
    expect(bobSide.of(chat.chatId).map((event) => event.type)).not.toContain("message.deleted");
    expect((await bob.api.history(chat.chatId, { after: 1 })).events[0]).toMatchObject({ seq: first.seq, body: "embarrassing photo" });
    expect(await bob.api.hiddenMessages()).toEqual({ entries: [], hasMore: false, headHiddenNo: 0 });

    // The tablet's app starts again over its storage and resumes from its hidden cursor.
    const tabletSecondRun = openStream(aliceTablet.api, new CursorStore(tabletStorage));
    const hiddenOnTablet: HiddenMessage[][] = [];
    tabletSecondRun.stream.on("hidden", (entries) => hiddenOnTablet.push(entries));
    await waitFor(() => tabletSecondRun.stream.status === "live", "the tablet's second run is live");
    expect(hiddenOnTablet).toEqual([[expect.objectContaining(entry)]]);
    expect(tabletSecondRun.stream.cursors.isHidden(chat.chatId, first.seq)).toBe(true);
    expect(tabletSecondRun.stream.cursors.hiddenNo).toBe(1);
    tabletSecondRun.stream.close();

    // Hiding again answers the same entry; then a second message is hidden while the tablet is away.
    expect(await aliceLaptop.api.deleteMessage(chat.chatId, first.seq, "me")).toEqual({ ...hidden, duplicate: true });
    const hiddenSecond = await laptop.stream.deleteMessage(chat.chatId, second.seq, "me");
    expect(hiddenSecond).toMatchObject({ hiddenNo: 2, seq: second.seq, duplicate: false });
    await waitFor(() => hiddenOn.phone.length === 2, "the phone hides the second live");

    // A third run over the same storage gets only the entry after its cursor, and knows both.
    const tabletThirdRun = openStream(aliceTablet.api, new CursorStore(tabletStorage));
    const hiddenOnThirdRun: HiddenMessage[][] = [];
    tabletThirdRun.stream.on("hidden", (entries) => hiddenOnThirdRun.push(entries));
    await waitFor(() => tabletThirdRun.stream.status === "live", "the tablet's third run is live");
    expect(hiddenOnThirdRun).toEqual([[expect.objectContaining({ hiddenNo: 2, chatId: chat.chatId, seq: second.seq })]]);
    expect(tabletThirdRun.stream.cursors.hiddenIn(chat.chatId)).toEqual([first.seq, second.seq]);
    expect(tabletThirdRun.stream.cursors.hiddenNo).toBe(2);

    // The account's list, for clients without a stream.
    const list = await alicePhone.api.hiddenMessages();
    expect(list).toMatchObject({ hasMore: false, headHiddenNo: 2 });
    expect(list.entries.map(({ hiddenNo, seq }) => [hiddenNo, seq])).toEqual([
      [1, first.seq],
      [2, second.seq],
    ]);
  });

  it("nobody deletes someone else's message for everyone in a direct chat, and only messages can be deleted", async () => {
    const [alice, bob] = await Promise.all([device("alice"), device("bob")]);
    const chat = await alice.api.createChat({ kind: "direct", peerId: bob.userId });
    const sent = await alice.api.sendMessage(chat.chatId, { clientId: "a1", body: "mine to keep" });
    const bobSide = openStream(bob.api);
    await waitFor(() => bobSide.stream.status === "live", "bob's stream live");

    const overStream = await rejection(bobSide.stream.deleteMessage(chat.chatId, sent.seq, "everyone"));
    expect(overStream).toBeInstanceOf(StreamRequestError);
    expect((overStream as StreamRequestError).code).toBe("forbidden");
    const overRest = await rejection(bob.api.deleteMessage(chat.chatId, sent.seq, "everyone"));
    expect(overRest).toMatchObject({ status: 403, body: { code: "forbidden", retryable: false } });
    // The chat's creation is not a message, and nothing is past the head.
    for (const seq of [1, sent.seq + 1]) {
      expect(await rejection(alice.api.deleteMessage(chat.chatId, seq, "everyone"))).toMatchObject({ status: 404, body: { code: "not_found" } });
    }
    // Nothing changed.
    expect((await bob.api.history(chat.chatId, { after: 1 })).events).toEqual([expect.objectContaining({ seq: sent.seq, body: "mine to keep" })]);
  });
});

/** With no delete window at all, a sender's own message is past it as soon as it is stored. */
describe("the delete window through wrangler dev", () => {
  let server: DevServer;
  const connections = new OpenConnections();
  const device = devices(() => server, 82);

  beforeAll(async () => {
    server = await startDevServer({ DEV_MODE: "true", OTP_SENDER: "console", DELETE_WINDOW_MS: "0" });
  });
  afterAll(async () => {
    connections.closeAll();
    await server?.stop();
  });

  it("past the window a sender deletes only for themselves, while a group admin still deletes for everyone", async () => {
    const [alice, bob] = await Promise.all([device("alice"), device("bob")]);
    const group = await alice.api.createChat({ kind: "group", name: "Trip", memberIds: [bob.userId] });
    const bobSide = connections.stream({ api: bob.api, heartbeatMs: 1000 });
    await waitFor(() => bobSide.stream.status === "live", "bob's stream live");
    const sent = await bobSide.stream.send(group.chatId, "typo");
    // The window is 0 ms: once the clock has moved past the send, it has passed.
    await waitFor(() => Date.now() > sent.createdAt + 1, "a moment after the send");

    const refused = await rejection(bobSide.stream.deleteMessage(group.chatId, sent.seq, "everyone"));
    expect(refused).toBeInstanceOf(StreamRequestError);
    expect((refused as StreamRequestError).code).toBe("delete_window_passed");
    expect(await bobSide.stream.deleteMessage(group.chatId, sent.seq, "me")).toMatchObject({ for: "me", seq: sent.seq, duplicate: false });

    // The admin has no window.
    const deleted = await alice.api.deleteMessage(group.chatId, sent.seq, "everyone");
    expect(deleted).toMatchObject({ for: "everyone", seq: sent.seq, duplicate: false });
    await waitFor(() => bobSide.of(group.chatId).some((event) => event.type === "message.deleted"), "bob's stream gets the deletion");
    expect(bobSide.of(group.chatId).at(-1)).toMatchObject({ type: "message.deleted", targetSeq: sent.seq, actorId: alice.userId, senderId: bob.userId });
  });
});
