import { describe, expect, it } from "vitest";
import { connect, createGroup, history, login, type TestSocket } from "./helpers.ts";

/** seqs of the message events a socket received, in arrival order. */
const messageSeqs = (socket: TestSocket) => socket.events().filter((e) => e.type === "message").map((e) => e.seq);

// A chat with more live sockets than one broadcast turn serves (128): frames reach the
// sockets over several turns, and sends that arrive meanwhile join waiting frames.
describe("broadcast to more sockets than one turn sends to", () => {
  it("delivers every message to every socket once and in order, while others catch up and go live", async () => {
    const alice = await login();
    // 300 live sockets: 3 each from 100 members (a device may have 4 on one chat).
    const members = await Promise.all(Array.from({ length: 100 }, () => login()));
    const bob = members[0]!;
    const chatId = await createGroup(alice, members);
    const sender = await connect(chatId, alice.credentials);
    const live = await Promise.all(members.flatMap((member) => [1, 2, 3].map(() => connect(chatId, member.credentials))));

    // 30 sends without waiting for acks, and 10 sockets resuming from seq 1 (chat.created)
    // opened while the broadcasts are under way.
    const ids = Array.from({ length: 30 }, (_, i) => `f-${i}`);
    const resuming: Promise<TestSocket>[] = [];
    ids.forEach((id, i) => {
      sender.send({ type: "send", id, clientId: `c-${i}`, body: `message ${i}` });
      if (i % 3 === 0) resuming.push(connect(chatId, members[i + 1]!.credentials, 1));
    });
    const replies = await Promise.all(ids.map((id) => sender.reply(id)));
    expect(replies.every((r) => r.ok)).toBe(true);
    const stored = (await history(bob, chatId, "?limit=200")).events.filter((e) => e.type === "message").map((e) => e.seq);
    expect(stored).toHaveLength(30);

    const resumed = await Promise.all(resuming);
    for (const socket of [...live, ...resumed, sender]) {
      await socket.until(() => messageSeqs(socket).length >= 30, "every message");
      // Exactly the stored messages, each once, in seq order.
      expect(messageSeqs(socket)).toEqual(stored);
    }
  }, 30_000);
});
