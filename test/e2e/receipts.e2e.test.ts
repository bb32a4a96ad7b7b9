import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CursorStore, Limits, type ChatReceipts } from "../../src/client/index.ts";
import { clientOptions, logIn, uniquePhone } from "./support/clients.ts";
import { OpenConnections } from "./support/connections.ts";
import { startDevServer, type DevServer } from "./support/dev-server.ts";
import { waitFor } from "./support/waiting.ts";

/**
 * Message status and typing end to end: the SDK reports delivery by itself, the app
 * marks reads, and the sender's connections show each change live (wrangler dev).
 */
describe("receipts and typing through wrangler dev, with the SDK", () => {
  let server: DevServer;
  const connections = new OpenConnections();
  let addresses = 0;

  beforeAll(async () => {
    server = await startDevServer({ DEV_MODE: "true", OTP_SENDER: "console", OTP_RESEND_SECONDS: "0", FAN_OUT_INTERVAL_MS: "50" });
  });
  afterAll(async () => {
    connections.closeAll();
    await server?.stop();
  });

  async function device(name: string, phone = uniquePhone()) {
    const api = await logIn(clientOptions(server.url, `10.78.${Math.floor(++addresses / 250)}.${addresses % 250}`), phone, name);
    return { api, userId: api.session!.user.userId, phone };
  }

  it("an offline recipient's message stays SENT, turns DELIVERED when a device connects and SEEN when read, each seen live by the sender", async () => {
    const alicePhone = await device("alice phone");
    const aliceLaptop = await device("alice laptop", alicePhone.phone);
    const bob = await device("bob");
    const chat = await alicePhone.api.createChat({ kind: "direct", peerId: bob.userId });

    const phone = connections.stream({ api: alicePhone.api, heartbeatMs: 1000 });
    const laptop = connections.connect({ api: aliceLaptop.api, chatId: chat.chatId, heartbeatMs: 1000 });
    const seenOnPhone: ChatReceipts[] = [];
    const seenOnLaptop: ChatReceipts[] = [];
    phone.stream.on("receipts", (chatId, receipts) => chatId === chat.chatId && seenOnPhone.push({ ...receipts }));
    laptop.connection.on("receipts", (receipts) => seenOnLaptop.push({ ...receipts }));
    await waitFor(() => phone.stream.status === "live" && laptop.connection.status === "live", "alice's connections live");

    const { seq } = await phone.stream.send(chat.chatId, "ping me when you see this");
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(phone.stream.statusOf(chat.chatId, seq)).toBe("sent");
    expect((await alicePhone.api.messageStatus(chat.chatId, seq)).status).toBe("sent");

    // Bob's device (which knew the chat from its start) connects: the SDK reports what it received by itself.
    const bobCursors = new CursorStore();
    bobCursors.set(chat.chatId, 1);
    const bobStream = connections.stream({ api: bob.api, cursors: bobCursors, heartbeatMs: 1000 });
    await waitFor(() => bobStream.of(chat.chatId).some((event) => event.seq === seq), "bob receives the message");
    await waitFor(() => phone.stream.statusOf(chat.chatId, seq) === "delivered", "DELIVERED on alice's stream");
    await waitFor(() => laptop.connection.statusOf(seq) === "delivered", "DELIVERED on alice's chat socket");

    await bobStream.stream.markRead(chat.chatId, seq);
    await waitFor(() => phone.stream.statusOf(chat.chatId, seq) === "seen", "SEEN on alice's stream");
    await waitFor(() => laptop.connection.statusOf(seq) === "seen", "SEEN on alice's chat socket");
    // Each connection saw the steps in order, never going back.
    for (const steps of [seenOnPhone, seenOnLaptop]) {
      expect(steps.at(-1)).toEqual({ deliveredUpTo: seq, seenUpTo: seq });
      expect(steps.some((step) => step.deliveredUpTo >= seq && step.seenUpTo < seq)).toBe(true);
    }
    const detail = await phone.stream.messageStatus(chat.chatId, seq);
    expect(detail).toMatchObject({ status: "seen", recipients: 1, delivered: 1, seen: 1 });
    expect(detail.members![0]!.seenAt).toBeGreaterThanOrEqual(detail.members![0]!.deliveredAt!);
  });

  it("group status counts the members whose period contains the message, and typing shows then expires", async () => {
    const [alice, bob, carol, dave] = await Promise.all([device("alice"), device("bob"), device("carol"), device("dave")]);
    const group = await alice.api.createChat({ kind: "group", name: "Trip", memberIds: [bob.userId, carol.userId] });
    const aliceSide = connections.connect({ api: alice.api, chatId: group.chatId, heartbeatMs: 1000 });
    const bobSide = connections.stream({ api: bob.api, heartbeatMs: 1000 });
    await waitFor(() => aliceSide.connection.status === "live" && bobSide.stream.status === "live", "connections live");

    const { seq } = await aliceSide.connection.send("who brings the tent?");
    await waitFor(() => bobSide.of(group.chatId).some((event) => event.seq === seq), "bob receives it");
    // Carol has no device online: the message is not DELIVERED to everyone yet.
    let partial = await alice.api.messageStatus(group.chatId, seq);
    for (let tries = 0; partial.delivered < 1 && tries < 100; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      partial = await alice.api.messageStatus(group.chatId, seq);
    }
    expect(partial).toMatchObject({ status: "sent", recipients: 2, delivered: 1 });
    await alice.api.addMembers(group.chatId, [dave.userId]);
    await carol.api.history(group.chatId, {});
    await waitFor(() => aliceSide.connection.statusOf(seq) === "delivered", "DELIVERED once carol fetched it (dave does not count)");
    const status = await aliceSide.connection.messageStatus(seq);
    expect(status).toMatchObject({ status: "delivered", recipients: 2, delivered: 2, seen: 0 });
    expect(status.members!.map((member) => member.userId).sort()).toEqual([bob.userId, carol.userId].sort());

    // Typing: shown on the others' connections, then gone after its expiry without a renewal.
    const typingSeen: string[][] = [];
    aliceSide.connection.on("typing", (userIds) => typingSeen.push(userIds));
    bobSide.stream.typing(group.chatId);
    await waitFor(() => aliceSide.connection.typingNow.includes(bob.userId), "bob typing, seen by alice");
    // No more keystrokes: the SDK sends `paused` after half the expiry, and it goes.
    await waitFor(() => aliceSide.connection.typingNow.length === 0, "bob's typing gone", Limits.typingExpiresMs * 2);
    expect(typingSeen).toEqual([[bob.userId], []]);
  });
});
