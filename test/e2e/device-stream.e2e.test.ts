import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CloseCode, CursorStore, MemoryCursorStorage, Outbox, type ApiClient, type ChatEvent, type SendResult } from "../../src/client/index.ts";
import { clientOptions, logIn, uniquePhone } from "./support/clients.ts";
import { OpenConnections } from "./support/connections.ts";
import { startDevServer, type DevServer } from "./support/dev-server.ts";
import { waitFor } from "./support/waiting.ts";

/**
 * The device stream (GET /chat) through the SDK's DeviceStream: one socket per device
 * for every chat of the account, against `wrangler dev`.
 */
describe("the device stream through wrangler dev, with the SDK", () => {
  let server: DevServer;
  const connections = new OpenConnections();
  let addresses = 0;

  beforeAll(async () => {
    server = await startDevServer({
      DEV_MODE: "true",
      OTP_SENDER: "console",
      // Second devices of an account log in right after the first.
      OTP_RESEND_SECONDS: "0",
      // Chat lists follow a chat within 50 ms, so the unread counts are quick to see.
      FAN_OUT_INTERVAL_MS: "50",
    });
  });
  afterAll(async () => {
    connections.closeAll();
    await server?.stop();
  });

  /**
   * A device of `phone` (a new account unless given), behind its own client address
   * (the per-address login limits), recording the paths it requests.
   */
  async function device(name: string, phone = uniquePhone()) {
    const requests: string[] = [];
    const options = clientOptions(server.url, `10.77.${Math.floor(++addresses / 250)}.${addresses % 250}`);
    const api = await logIn(
      {
        ...options,
        fetch: (input, init) => {
          requests.push(`${init?.method ?? "GET"} ${new URL(String(input)).pathname}`);
          return fetch(input, init);
        },
      },
      phone,
      name,
    );
    return { api, requests, userId: api.session!.user.userId, phone };
  }

  const openStream = (api: ApiClient, cursors = new CursorStore()) => connections.stream({ api, cursors, heartbeatMs: 1000 });

  /** Every event of a chat after `after`, over REST history. */
  async function historyAfter(api: ApiClient, chatId: string, after: number): Promise<ChatEvent[]> {
    const events: ChatEvent[] = [];
    for (let hasMore = true; hasMore; ) {
      const page = await api.history(chatId, { after: events.at(-1)?.seq ?? after, limit: 200 });
      events.push(...page.events);
      hasMore = page.hasMore;
    }
    return events;
  }

  it("a device offline for 500 messages across 20 chats catches up through the stream alone, each event once and in order", async () => {
    const bob = await device("bob");
    const peers = await Promise.all(Array.from({ length: 20 }, (_, i) => device(`peer ${i}`)));

    // Bob's device is online while the chats start; its cursors are kept in storage.
    const storage = new MemoryCursorStorage();
    const first = openStream(bob.api, new CursorStore(storage));
    await waitFor(() => first.stream.status === "live", "bob's stream live");
    const chatIds = (await Promise.all(peers.map((peer) => peer.api.createChat({ kind: "direct", peerId: bob.userId })))).map((chat) => chat.chatId);
    await waitFor(() => chatIds.every((chatId) => first.of(chatId).length === 1), "every new chat's first event");
    expect(chatIds.map((chatId) => first.of(chatId)[0]?.type)).toEqual(chatIds.map(() => "chat.created"));
    first.stream.close();

    // 25 messages from each peer while bob is away; 1 KiB each, so the catch-up takes several batches.
    const padding = "x".repeat(1024);
    await Promise.all(
      peers.map(async (peer, index) => {
        for (let i = 0; i < 25; i++) await peer.api.sendMessage(chatIds[index]!, { clientId: `m${i}`, body: `${i} from ${index} ${padding}` });
      }),
    );

    // The app restarts: a new store over the same storage, a new stream.
    const historyReads = () => bob.requests.filter((request) => request.endsWith("/messages")).length;
    const readsBefore = historyReads();
    const resumed = openStream(bob.api, new CursorStore(storage));
    await waitFor(() => resumed.stream.status === "live", "caught up", 60_000);
    expect(resumed.statuses).toEqual(["connecting", "catching-up", "live"]);
    // Nothing came over REST: the catch-up read no history.
    expect(historyReads()).toBe(readsBefore);
    for (const chatId of chatIds) {
      const events = resumed.of(chatId);
      expect(events.map((e) => e.seq)).toEqual(Array.from({ length: 25 }, (_, i) => i + 2));
      expect(events).toEqual(await historyAfter(bob.api, chatId, 1));
    }
    expect(chatIds.reduce((sum, chatId) => sum + resumed.of(chatId).length, 0)).toBe(500);

    // Live from here, exactly once.
    const live = await peers[7]!.api.sendMessage(chatIds[7]!, { clientId: "live", body: "now live" });
    await waitFor(() => resumed.of(chatIds[7]!).length === 26, "the live message");
    expect(resumed.of(chatIds[7]!).at(-1)).toMatchObject({ seq: live.seq, body: "now live" });
    expect(resumed.stream.cursors.get(chatIds[7]!)).toBe(live.seq);
  });

  it("a message sent on alice's stream reaches bob's stream live, and her own once", async () => {
    const [alice, bob] = await Promise.all([device("alice"), device("bob")]);
    const chat = await alice.api.createChat({ kind: "direct", peerId: bob.userId });
    const aliceSide = openStream(alice.api);
    const bobSide = openStream(bob.api);
    await waitFor(() => aliceSide.stream.status === "live" && bobSide.stream.status === "live", "both live");
    // A chat the device did not know is announced, live from its head.
    expect(bobSide.chats.find((c) => c.chatId === chat.chatId)).toMatchObject({ headSeq: 1, membership: "member" });

    const ack = await aliceSide.stream.send(chat.chatId, "hello over the stream");
    expect(ack).toMatchObject({ seq: 2, duplicate: false });
    expect(alice.requests.filter((request) => request.startsWith("POST") && request.endsWith("/messages"))).toEqual([]);
    await waitFor(() => bobSide.of(chat.chatId).length === 1, "the message at bob");
    expect(bobSide.of(chat.chatId)[0]).toMatchObject({ type: "message", seq: 2, senderId: alice.userId, body: "hello over the stream" });
    await waitFor(() => aliceSide.of(chat.chatId).length === 1, "the message on alice's own stream");

    const reply = await bobSide.stream.send(chat.chatId, "hi alice", { replyToSeq: ack.seq });
    await waitFor(() => aliceSide.of(chat.chatId).length === 2 && bobSide.of(chat.chatId).length === 2, "the answer on both");
    expect(aliceSide.of(chat.chatId)).toEqual(bobSide.of(chat.chatId));
    expect(aliceSide.of(chat.chatId)[1]).toMatchObject({ seq: reply.seq, body: "hi alice", replyToSeq: ack.seq });
  });

  it("a device with a stream and a chat socket sharing one cursor store and outbox shows each event once", async () => {
    const [alice, bob] = await Promise.all([device("alice"), device("bob")]);
    const chat = await alice.api.createChat({ kind: "direct", peerId: bob.userId });
    const cursors = new CursorStore();
    const outbox = new Outbox({ api: bob.api });
    const streamSide = connections.stream({ api: bob.api, cursors, outbox, heartbeatMs: 1000 });
    await waitFor(() => streamSide.stream.status === "live", "the stream live");
    const socketSide = connections.connect({ api: bob.api, chatId: chat.chatId, cursors, outbox, heartbeatMs: 1000 });
    await waitFor(() => socketSide.connection.status === "live", "the chat socket live");

    const sent: SendResult[] = [];
    for (let i = 0; i < 5; i++) sent.push(await alice.api.sendMessage(chat.chatId, { clientId: `a${i}`, body: `from alice ${i}` }));
    sent.push(await socketSide.connection.send("from bob's chat socket"));
    sent.push(await streamSide.stream.send(chat.chatId, "from bob's stream"));
    await waitFor(() => cursors.get(chat.chatId) === sent.at(-1)!.seq, "every event delivered");
    // Each event came on both sockets and reached the app once, by whichever was first.
    const delivered = [...streamSide.of(chat.chatId), ...socketSide.events].map((e) => e.seq).sort((a, b) => a - b);
    expect(delivered).toEqual(sent.map((ack) => ack.seq));
    // Bob's sends went over the device stream (the outbox's first choice), not REST.
    expect(bob.requests.filter((request) => request.startsWith("POST") && request.endsWith("/messages"))).toEqual([]);
  });

  it("a removed member's stream gets the removal, then nothing of that chat until added back", async () => {
    const [alice, bob] = await Promise.all([device("alice"), device("bob")]);
    const bobSide = openStream(bob.api);
    await waitFor(() => bobSide.stream.status === "live", "bob live");
    const group = await alice.api.createChat({ kind: "group", name: "stream members", memberIds: [bob.userId] });
    const before = await alice.api.sendMessage(group.chatId, { clientId: "m1", body: "before" });
    await waitFor(() => bobSide.of(group.chatId).some((e) => e.seq === before.seq), "the first message");

    const removal = await alice.api.removeMember(group.chatId, bob.userId);
    await waitFor(() => bobSide.chats.some((c) => c.chatId === group.chatId && c.membership === "removed"), "the removed entry");
    await waitFor(() => bobSide.of(group.chatId).some((e) => e.seq === removal.seq), "the removal");
    expect(bobSide.of(group.chatId).map((e) => e.type)).toEqual(["chat.created", "message", "member.removed"]);
    expect(bobSide.of(group.chatId).at(-1)).toMatchObject({ type: "member.removed", userId: bob.userId });

    // Alice goes on without him; then adds him back. Events of one chat come in seq
    // order, so anything of the gap would arrive before the member.added.
    await alice.api.sendMessage(group.chatId, { clientId: "m2", body: "while bob is out" });
    await alice.api.sendMessage(group.chatId, { clientId: "m3", body: "still out" });
    const back = await alice.api.addMembers(group.chatId, [bob.userId]);
    await waitFor(() => bobSide.of(group.chatId).some((e) => e.seq === back.seq), "the member.added");
    expect(bobSide.of(group.chatId).map((e) => e.seq)).toEqual([1, before.seq, removal.seq, back.seq!]);
    expect(bobSide.stream.status).toBe("live");
    expect(bobSide.closes).toEqual([]);
  });

  it("a device away while it was removed gets the rest of its membership over REST history when it comes back", async () => {
    const [alice, bob] = await Promise.all([device("alice"), device("bob")]);
    const group = await alice.api.createChat({ kind: "group", name: "while away", memberIds: [bob.userId] });
    const storage = new MemoryCursorStorage();
    const first = openStream(bob.api, new CursorStore(storage));
    await waitFor(() => first.stream.status === "live", "bob live");
    const seen = await alice.api.sendMessage(group.chatId, { clientId: "m1", body: "seen live" });
    await waitFor(() => first.of(group.chatId).length === 1, "the live message");
    first.stream.close();

    const missed = await alice.api.sendMessage(group.chatId, { clientId: "m2", body: "missed" });
    const removal = await alice.api.removeMember(group.chatId, bob.userId);
    await alice.api.sendMessage(group.chatId, { clientId: "m3", body: "after bob" });
    // Bob's list has the chat as removed before he comes back.
    await expect.poll(async () => (await bob.api.chats()).chats.find((c) => c.chatId === group.chatId), { timeout: 10_000 }).toMatchObject({ membership: "removed", headSeq: removal.seq });

    const back = openStream(bob.api, new CursorStore(storage));
    await waitFor(() => back.of(group.chatId).some((e) => e.seq === removal.seq), "the end of the membership");
    expect(first.of(group.chatId).map((e) => e.seq)).toEqual([seen.seq]);
    expect(back.of(group.chatId).map((e) => e.seq)).toEqual([missed.seq, removal.seq]);
    expect(back.chats.find((c) => c.chatId === group.chatId)).toMatchObject({ membership: "removed" });
    expect(bob.requests.filter((request) => request === `GET /api/chats/${group.chatId}/messages`)).toHaveLength(1);
  });

  it("a device away when the account was added to a group gets the group from its first event, then live", async () => {
    const [alice, bob] = await Promise.all([device("alice"), device("bob")]);
    const direct = await alice.api.createChat({ kind: "direct", peerId: bob.userId });
    // Bob's device knows a chat: it is not a new install.
    const storage = new MemoryCursorStorage();
    const first = openStream(bob.api, new CursorStore(storage));
    await waitFor(() => first.stream.status === "live" && first.stream.cursors.get(direct.chatId) !== undefined, "bob live");
    first.stream.close();

    const group = await alice.api.createChat({ kind: "group", name: "while bob was away", memberIds: [bob.userId] });
    for (const body of ["one", "two"]) await alice.api.sendMessage(group.chatId, { clientId: body, body });
    await expect.poll(async () => (await bob.api.chats()).chats.find((c) => c.chatId === group.chatId), { timeout: 10_000 }).toMatchObject({ headSeq: 3 });

    const back = openStream(bob.api, new CursorStore(storage));
    await waitFor(() => back.of(group.chatId).length === 3, "the group from its start");
    expect(back.of(group.chatId).map((e) => e.type)).toEqual(["chat.created", "message", "message"]);
    expect(bob.requests.filter((request) => request === `GET /api/chats/${group.chatId}/messages`)).toHaveLength(1);
    expect(back.of(group.chatId)).toEqual(await historyAfter(bob.api, group.chatId, 0));

    const live = await alice.api.sendMessage(group.chatId, { clientId: "live", body: "now live" });
    await waitFor(() => back.of(group.chatId).length === 4, "the live message");
    expect(back.of(group.chatId).map((e) => e.seq)).toEqual([1, 2, 3, live.seq]);
  });

  it("a cursor store ahead of the server's data resumes: the chat past its head is read from its start, the others go on from their cursors", async () => {
    const [alice, bob] = await Promise.all([device("alice"), device("bob")]);
    const direct = await alice.api.createChat({ kind: "direct", peerId: bob.userId });
    await alice.api.sendMessage(direct.chatId, { clientId: "d1", body: "in the direct chat" });
    const group = await alice.api.createChat({ kind: "group", name: "kept", memberIds: [bob.userId] });
    await expect.poll(async () => (await bob.api.chats()).chats.map((c) => [c.chatId, c.headSeq]).sort(), { timeout: 10_000 }).toEqual(
      [
        [direct.chatId, 2],
        [group.chatId, 1],
      ].sort(),
    );
    // Cursors kept from before the server's data was reset: the direct chat's is far past its head.
    const storage = new MemoryCursorStorage();
    storage.save(direct.chatId, 40);
    storage.save(group.chatId, 1);
    const next = await alice.api.sendMessage(group.chatId, { clientId: "g1", body: "in the group" });

    const side = openStream(bob.api, new CursorStore(storage));
    await waitFor(() => side.stream.status === "live" && side.of(direct.chatId).length === 2, "live, the direct chat from its start");
    expect(side.closes).toEqual([]);
    expect(side.of(direct.chatId)).toEqual(await historyAfter(bob.api, direct.chatId, 0));
    await waitFor(() => side.of(group.chatId).length === 1, "the group's new message");
    expect(side.of(group.chatId).map((e) => e.seq)).toEqual([next.seq]);
    expect(side.stream.cursors.all()).toEqual({ [direct.chatId]: 2, [group.chatId]: next.seq });
  });

  it("a revoked device's stream is closed with 4009 and the SDK stops for good", async () => {
    const alice = await device("alice phone");
    const laptop = await device("alice laptop", alice.phone);
    let sockets = 0;
    class CountedWebSocket extends WebSocket {
      constructor(url: string | URL, protocols?: string | string[]) {
        super(url, protocols);
        sockets++;
      }
    }
    const laptopSide = connections.stream({ api: laptop.api, WebSocket: CountedWebSocket, heartbeatMs: 1000 });
    await waitFor(() => laptopSide.stream.status === "live", "the laptop live");
    expect(laptopSide.stream.deviceId).toBe(laptop.api.session!.device.deviceId);

    await alice.api.revokeDevice(laptop.api.session!.device.deviceId);
    await waitFor(() => laptopSide.closes.length === 1, "the final close");
    expect(laptopSide.closes).toEqual([{ code: CloseCode.deviceRevoked, reason: "device_revoked" }]);
    expect(laptopSide.stream.status).toBe("closed");
    // Longer than the first reconnection delay: it does not come back.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(sockets).toBe(1);
    expect(laptopSide.statuses.at(-1)).toBe("closed");
    expect(laptopSide.statuses.filter((s) => s === "connecting")).toHaveLength(1);
  });

  it("unread counts: three messages show on the chat list, and reading on one device clears them live on the other", async () => {
    const alice = await device("alice");
    const phone = await device("bob phone");
    const laptop = await device("bob laptop", phone.phone);
    const chat = await alice.api.createChat({ kind: "direct", peerId: phone.userId });
    const phoneSide = openStream(phone.api);
    const laptopSide = openStream(laptop.api);
    await waitFor(() => phoneSide.stream.status === "live" && laptopSide.stream.status === "live", "both devices live");

    let last = 0;
    for (const body of ["one", "two", "three"]) last = (await alice.api.sendMessage(chat.chatId, { clientId: body, body })).seq;
    await expect.poll(async () => (await phone.api.chats()).chats.find((c) => c.chatId === chat.chatId), { timeout: 10_000 }).toMatchObject({ unreadCount: 3, headSeq: last });
    await waitFor(() => laptopSide.chats.some((c) => c.chatId === chat.chatId && c.unreadCount === 3), "unread 3 on the laptop's stream");
    await waitFor(() => phoneSide.of(chat.chatId).length === 3, "the messages on the phone");

    const seen = laptopSide.chats.length;
    const read = await phoneSide.stream.markRead(chat.chatId, last);
    expect(read).toMatchObject({ chatId: chat.chatId, unreadCount: 0, readSeq: last });
    await waitFor(() => laptopSide.chats.slice(seen).some((c) => c.chatId === chat.chatId && c.unreadCount === 0), "the read on the laptop's stream");
    expect(laptopSide.stream.chats.get(chat.chatId)).toMatchObject({ unreadCount: 0, readSeq: last });
    expect((await laptop.api.chats()).chats.find((c) => c.chatId === chat.chatId)).toMatchObject({ unreadCount: 0 });
  });
});
