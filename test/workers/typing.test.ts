import { describe, expect, it } from "vitest";
import { Limits, type TypingNotice } from "../../src/protocol/index.ts";
import { connect, createDirect, createGroup, login, resumeStream, socketSend, type TestSocket } from "./helpers.ts";

let frameId = 0;
async function ask(socket: TestSocket, frame: Record<string, unknown>) {
  const id = `t${++frameId}`;
  socket.send({ ...frame, id });
  return socket.reply(id);
}

const typingFrames = (socket: TestSocket) => socket.frames.filter((f): f is TypingNotice => f.type === "typing");

describe("typing indicators", () => {
  it("reach the other members' sockets and streams, never the typist's own, and are throttled", async () => {
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    const chatId = await createGroup(alice, [bob, carol]);
    const aliceSocket = await connect(chatId, alice.credentials);
    const bobSocket = await connect(chatId, bob.credentials);
    const { socket: carolStream } = await resumeStream(carol.credentials, { [chatId]: 1 });
    await carolStream.until(() => carolStream.frames.find((f) => f.type === "synced"), "synced");

    expect(await ask(aliceSocket, { type: "typing", state: "typing" })).toMatchObject({ ok: true, result: { forwarded: true } });
    const notice = { type: "typing", chatId, userId: alice.user.userId, state: "typing", expiresInMs: Limits.typingExpiresMs };
    expect(await bobSocket.until(() => typingFrames(bobSocket)[0], "typing on the socket")).toEqual(notice);
    expect(await carolStream.until(() => typingFrames(carolStream)[0], "typing on the stream")).toEqual(notice);

    // A flood within the interval is answered, not passed on.
    for (let index = 0; index < 20; index++) {
      expect(await ask(aliceSocket, { type: "typing", state: "typing" })).toMatchObject({ ok: true, result: { forwarded: false } });
    }
    // Stopping is passed on at once, and only once.
    expect(await ask(aliceSocket, { type: "typing", state: "paused" })).toMatchObject({ ok: true, result: { forwarded: true } });
    expect(await ask(aliceSocket, { type: "typing", state: "paused" })).toMatchObject({ ok: true, result: { forwarded: false } });
    await bobSocket.until(() => typingFrames(bobSocket).find((f) => f.state === "paused"), "paused");
    await carolStream.until(() => typingFrames(carolStream).find((f) => f.state === "paused"), "paused on the stream");
    expect(typingFrames(bobSocket).map((f) => f.state)).toEqual(["typing", "paused"]);
    expect(typingFrames(aliceSocket)).toEqual([]);

    // From a stream too; and a message from the typist lets the next `typing` through at once.
    expect(await ask(carolStream, { type: "typing", chatId, state: "typing" })).toMatchObject({ ok: true, result: { forwarded: true } });
    await aliceSocket.until(() => typingFrames(aliceSocket).find((f) => f.userId === carol.user.userId), "carol typing");
    await socketSend(aliceSocket, crypto.randomUUID(), "done typing");
    expect(await ask(aliceSocket, { type: "typing", state: "typing" })).toMatchObject({ ok: true, result: { forwarded: true } });
  });

  it("cannot be flooded by alternating typing and paused", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const aliceSocket = await connect(chatId, alice.credentials);
    const bobSocket = await connect(chatId, bob.credentials);
    let forwarded = 0;
    for (let index = 0; index < 40; index++) {
      const reply = await ask(aliceSocket, { type: "typing", state: index % 2 === 0 ? "typing" : "paused" });
      if (reply.ok && (reply.result as { forwarded: boolean }).forwarded) forwarded++;
    }
    // A burst of a few, then about one a second: far fewer than the 40 sent.
    expect(forwarded).toBeLessThanOrEqual(6);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(typingFrames(bobSocket)).toHaveLength(forwarded);
  });

  it("are refused outside one's chats and in broadcast chats for non-admins, and nothing disturbs the stream", async () => {
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    const broadcastId = await createGroup(alice, [bob], "broadcast");
    const directId = await createDirect(alice, carol);
    const bobSocket = await connect(broadcastId, bob.credentials);
    expect(await ask(bobSocket, { type: "typing", state: "typing" })).toMatchObject({ ok: false, error: { code: "admins_only" } });
    expect(await ask(bobSocket, { type: "typing", state: "shouting" })).toMatchObject({ ok: false, error: { code: "validation_failed" } });
    const { socket: bobStream } = await resumeStream(bob.credentials);
    expect(await ask(bobStream, { type: "typing", chatId: directId, state: "typing" })).toMatchObject({ ok: false, error: { code: "not_a_member" } });
    expect(bobStream.closed).toBeNull();
    expect(bobSocket.closed).toBeNull();
  });
});
