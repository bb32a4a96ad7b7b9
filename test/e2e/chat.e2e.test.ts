import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiClient } from "../../src/client/index.ts";
import { loggedInClient } from "./support/clients.ts";
import { startDevServer, type DevServer } from "./support/dev-server.ts";
import { OpenConnections } from "./support/connections.ts";
import { waitFor } from "./support/waiting.ts";

describe("chatting through wrangler dev", () => {
  let server: DevServer;
  let alice: ApiClient;
  let bob: ApiClient;
  const connections = new OpenConnections();

  beforeAll(async () => {
    // The e2e configuration lifts the per-sender rate so 1,000 messages go out quickly.
    server = await startDevServer({ DEV_MODE: "true", OTP_SENDER: "console", SEND_RATE_PER_SECOND: "100000", SEND_BURST: "100000" });
    [alice, bob] = await Promise.all([loggedInClient(server.url, "alice"), loggedInClient(server.url, "bob")]);
  });
  afterAll(async () => {
    connections.closeAll();
    await server?.stop();
  });

  const connect = (api: ApiClient, chatId: string, after?: number) =>
    connections.connect(after === undefined ? { api, chatId, heartbeatMs: 1000 } : { api, chatId, after, heartbeatMs: 1000 });

  it("two clients chat; one misses 1,000 messages, reconnects and gets exactly those", async () => {
    const bobId = bob.session!.user.userId;
    const chat = await alice.createChat({ kind: "direct", peerId: bobId });
    const aliceSide = connect(alice, chat.chatId);
    const bobSide = connect(bob, chat.chatId);
    await waitFor(() => aliceSide.connection.status === "live" && bobSide.connection.status === "live", "both live");

    const hello = await aliceSide.connection.send("hi bob");
    const answer = await bobSide.connection.send("hi alice", { replyToSeq: hello.seq });
    await waitFor(() => aliceSide.events.length === 2 && bobSide.events.length === 2, "both messages on both sides");
    expect(aliceSide.events.map((e) => e.seq)).toEqual([hello.seq, answer.seq]);
    expect(bobSide.events).toEqual(aliceSide.events);
    expect(bobSide.events[1]).toMatchObject({ type: "message", body: "hi alice", replyToSeq: hello.seq });

    // Bob goes away; his last seq is what a real client keeps on disk.
    const bobCursor = bobSide.connection.cursor!;
    bobSide.connection.close();
    const sends = Array.from({ length: 1000 }, (_, i) => aliceSide.connection.send(`missed ${i}`));
    const acks = await Promise.all(sends);
    expect(acks.map((a) => a.seq)).toEqual(Array.from({ length: 1000 }, (_, i) => bobCursor + 1 + i));

    const resumed = connect(bob, chat.chatId, bobCursor);
    await waitFor(() => resumed.events.length === 1000, "1,000 missed events", 60_000);
    expect(resumed.events.map((e) => e.seq)).toEqual(acks.map((a) => a.seq));
    expect(resumed.events.map((e) => (e.type === "message" ? e.body : null))).toEqual(acks.map((_, i) => `missed ${i}`));
    expect(resumed.statuses).toContain("catching-up");
    await waitFor(() => resumed.connection.status === "live", "live after catch-up");

    // live again, exactly once
    const after = await aliceSide.connection.send("welcome back");
    await waitFor(() => resumed.events.length === 1001, "the live message");
    expect(resumed.events.at(-1)).toMatchObject({ seq: after.seq, body: "welcome back" });
    const history = await bob.history(chat.chatId, { after: bobCursor, limit: 200 });
    expect(history.events.map((e) => e.seq)).toEqual(resumed.events.slice(0, 200).map((e) => e.seq));
  });

  it("a group member's messages reach every member in one order", async () => {
    const carol = await loggedInClient(server.url, "carol");
    const chat = await alice.createChat({ kind: "group", name: "e2e group", memberIds: [bob.session!.user.userId, carol.session!.user.userId] });
    const sides = [alice, bob, carol].map((api) => connect(api, chat.chatId));
    await waitFor(() => sides.every((s) => s.connection.status === "live"), "all live");
    await Promise.all(sides.flatMap((side, index) => Array.from({ length: 20 }, (_, i) => side.connection.send(`${index}:${i}`))));
    await waitFor(() => sides.every((s) => s.events.length === 60), "60 events everywhere");
    expect(sides[1]!.events).toEqual(sides[0]!.events);
    expect(sides[2]!.events).toEqual(sides[0]!.events);
  });

  it("the outbox survives dropped connections: every message stored once, in order", async () => {
    const dave = await loggedInClient(server.url, "dave");
    const chat = await alice.createChat({ kind: "direct", peerId: dave.session!.user.userId });
    const sender = connect(alice, chat.chatId);
    await waitFor(() => sender.connection.status === "live", "live");
    const total = 300;
    const acks = Array.from({ length: total }, (_, i) => sender.connection.send(`m${i}`, { clientId: `drop-${i}` }));
    // Drop the socket three times while messages are still waiting for their ack.
    for (const threshold of [250, 180, 110]) {
      await waitFor(() => sender.connection.pendingSends <= threshold, "progress");
      expect(sender.connection.pendingSends).toBeGreaterThan(0);
      sender.connection.reconnect();
    }
    const results = await Promise.all(acks);
    const seqs = results.map((r) => r.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(new Set(seqs).size).toBe(total);
    const stored = await dave.history(chat.chatId, { after: 0, limit: 200 });
    const bodies = stored.events.flatMap((e) => (e.type === "message" ? [e.body] : []));
    const page2 = await dave.history(chat.chatId, { after: stored.events.at(-1)!.seq, limit: 200 });
    bodies.push(...page2.events.flatMap((e) => (e.type === "message" ? [e.body] : [])));
    expect(bodies).toEqual(Array.from({ length: total }, (_, i) => `m${i}`));
    // and the sender's own stream delivered each exactly once
    await waitFor(() => sender.events.length === total, "every own event");
    expect(sender.events.map((e) => e.seq)).toEqual(seqs);
  });

  it("a socket without a valid token is closed with 4001 and the SDK stops", async () => {
    const chat = await alice.createChat({ kind: "group", name: "locked", memberIds: [] });
    const socket = new WebSocket(alice.socketUrl(chat.chatId), ["chat.v1", "bearer.not-a-token"]);
    const closed = await new Promise<CloseEvent>((resolve) => socket.addEventListener("close", resolve));
    expect(closed.code).toBe(4001);

    // The SDK with a token the server refuses and a refresh token it does not know:
    // it tries one refresh, then stops for good instead of reconnecting in a loop.
    const forged = new ApiClient({ baseUrl: server.url, session: { ...alice.session!, credentials: "not-a-token", refreshToken: `rt1.${alice.session!.user.userId}.${"A".repeat(43)}` } });
    // Events arrive after connect() returns, so the listener added next sees the close.
    const { connection, ...recorded } = connections.connect({ api: forged, chatId: chat.chatId, heartbeatMs: 1000 });
    const finalClose = new Promise<number>((resolve) => connection.on("closed", (code) => resolve(code)));
    expect(await finalClose).toBe(4001);
    expect(connection.status).toBe("closed");
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(connection.status).toBe("closed");
    expect(recorded.statuses.filter((s) => s === "connecting").length).toBeLessThanOrEqual(2);
  });
});
