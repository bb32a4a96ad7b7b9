import { afterEach, describe, expect, it, vi } from "vitest";
import { DeviceStream, type ApiClient, type Presence } from "../../src/client/index.ts";
import { FakeServerSocket } from "./support/fake-socket.ts";

const ME = "u_MMMMMMMMMMMMMMMMMMMMMM";
const BOB = "u_BBBBBBBBBBBBBBBBBBBBBB";
const CAROL = "u_CCCCCCCCCCCCCCCCCCCCCC";
const DEVICE = "dv_DDDDDDDDDDDDDDDDDDDDDD";
const CHAT = "d_SSSSSSSSSSSSSSSSSSSSSS";

/** The device stream's server side; `ready` is what its `stream.ready` adds. */
class FakeSocket extends FakeServerSocket {
  static ready: Record<string, unknown> = {};
  protected firstFrame(): object {
    return { type: "stream.ready", userId: ME, deviceId: DEVICE, ...FakeSocket.ready };
  }
  /** Answers the resume like a server with nothing to catch up. */
  resume(): void {
    this.reply(this.framesOf("resume").at(-1)!.id, { behind: 0, announced: 0, unknownChats: [] });
    this.receive({ type: "synced" });
  }
}

const api = { baseUrl: "https://chat.example", accessToken: async () => "token" } as unknown as ApiClient;
const streams: DeviceStream[] = [];
afterEach(() => {
  vi.useRealTimers();
  for (const stream of streams.splice(0)) stream.close();
  FakeSocket.instances = [];
  FakeSocket.ready = {};
});

async function until(condition: () => boolean, what = "the condition"): Promise<void> {
  for (let i = 0; i < 500 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  if (!condition()) throw new Error(`never happened: ${what}`);
}

function connect(options: { heartbeatMs?: number } = {}) {
  const stream = new DeviceStream({ api, WebSocket: FakeSocket, ...options });
  streams.push(stream);
  const seen: Presence[] = [];
  stream.on("presence", (presence) => seen.push(presence));
  stream.connect();
  return { stream, seen };
}

const sentResume = () => FakeSocket.instances.length > 0 && FakeSocket.latest().framesOf("resume").length > 0;

describe("presence in the SDK's device stream", () => {
  it("subscribes once resumed, reports the answer and each push, renews before the lease ends, and subscribes again after a reconnect", async () => {
    const { stream, seen } = connect();
    const watch = [{ userId: BOB, chatId: CHAT }, { userId: CAROL, chatId: CHAT }];
    expect(await stream.watchPresence(watch)).toBeNull(); // not up yet: sent once it is
    await until(sentResume, "the resume");
    const socket = FakeSocket.latest();
    expect(socket.framesOf("presence.subscribe")).toEqual([]);
    socket.resume();
    await until(() => socket.framesOf("presence.subscribe").length === 1, "the subscription");
    const subscribe = socket.framesOf("presence.subscribe")[0]!;
    expect(subscribe.watch).toEqual(watch);
    // A short lease: renewed at three quarters of it.
    socket.reply(subscribe.id, { presence: [{ userId: BOB, online: true }], refused: [CAROL], leaseMs: 40 });
    await until(() => seen.length === 1, "bob's presence");
    expect(seen).toEqual([{ userId: BOB, online: true }]);
    socket.receive({ type: "presence", presence: { userId: BOB, online: false, lastSeenAt: 1000 } });
    expect(stream.presence.get(BOB)).toEqual({ userId: BOB, online: false, lastSeenAt: 1000 });
    expect(seen.at(-1)).toEqual({ userId: BOB, online: false, lastSeenAt: 1000 });
    await until(() => socket.framesOf("presence.subscribe").length === 2, "the renewal");
    expect(socket.framesOf("presence.subscribe")[1]!.watch).toEqual(watch);

    // A new connection resumes, then subscribes again.
    socket.drop();
    await until(() => FakeSocket.instances.length === 2 && sentResume(), "the new socket's resume");
    const next = FakeSocket.latest();
    expect(next.framesOf("presence.subscribe")).toEqual([]);
    next.resume();
    await until(() => next.framesOf("presence.subscribe").length === 1, "the subscription on the new socket");
    expect(next.framesOf("presence.subscribe")[0]!.watch).toEqual(watch);

    // An empty list stops watching, with no renewal after it.
    const stop = stream.watchPresence([]);
    await until(() => next.framesOf("presence.subscribe").length === 2, "the unsubscription");
    next.reply(next.framesOf("presence.subscribe")[1]!.id, { presence: [], refused: [], leaseMs: 40 });
    expect(await stop).toEqual({ presence: [], refused: [], leaseMs: 40 });
    next.receive({ type: "presence", presence: { userId: BOB, online: true } });
    expect(seen.at(-1)).toEqual({ userId: BOB, online: false, lastSeenAt: 1000 }); // not watched any more
  });

  it("tells the server the app is in the background at once, and on each new socket before resuming", async () => {
    const { stream } = connect();
    await until(sentResume, "the resume");
    const socket = FakeSocket.latest();
    socket.resume();
    const state = stream.setAppState("background");
    await until(() => socket.framesOf("presence.state").length === 1, "the state");
    socket.reply(socket.framesOf("presence.state")[0]!.id, { state: "background" });
    await state;
    expect(socket.framesOf("presence.state")[0]).toMatchObject({ state: "background" });

    socket.drop();
    await until(() => FakeSocket.instances.length === 2 && sentResume(), "the new socket's resume");
    const types = FakeSocket.latest().frames().map((frame) => frame.type);
    expect(types.slice(0, 2)).toEqual(["presence.state", "resume"]);
  });

  it("pings at the server's heartbeat interval unless the app set its own", async () => {
    FakeSocket.ready = { heartbeatMs: 10 };
    connect();
    await until(() => FakeSocket.instances.length > 0 && FakeSocket.latest().sent.includes("ping"), "a heartbeat at the server's pace");
    streams.splice(0).forEach((stream) => stream.close());

    FakeSocket.instances = [];
    connect({ heartbeatMs: 60_000 });
    await until(sentResume, "the resume");
    // The app's interval wins: no ping before the first resume's round trip would show one.
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(FakeSocket.latest().sent).not.toContain("ping");
  });

  it("keeps a push that arrived after the subscription was sent over the older presence in its reply", async () => {
    const { stream, seen } = connect();
    await until(sentResume, "the resume");
    const socket = FakeSocket.latest();
    socket.resume();
    const answer = stream.watchPresence([{ userId: BOB, chatId: CHAT }, { userId: CAROL, chatId: CHAT }]);
    await until(() => socket.framesOf("presence.subscribe").length === 1, "the subscription");
    // Bob answered online at once, then closed his app: his push comes before the reply,
    // which waited for a slower account.
    socket.receive({ type: "presence", presence: { userId: BOB, online: false, lastSeenAt: 2000 } });
    socket.reply(socket.framesOf("presence.subscribe")[0]!.id, {
      presence: [{ userId: BOB, online: true }, { userId: CAROL, online: true }],
      refused: [],
      leaseMs: 60_000,
    });
    expect(await answer).toMatchObject({ presence: [{ userId: BOB, online: true }, { userId: CAROL, online: true }] });
    expect(stream.presence.get(BOB)).toEqual({ userId: BOB, online: false, lastSeenAt: 2000 });
    expect(stream.presence.get(CAROL)).toEqual({ userId: CAROL, online: true });
    expect(seen).toEqual([{ userId: BOB, online: false, lastSeenAt: 2000 }, { userId: CAROL, online: true }]);
    // Later pushes still count.
    socket.receive({ type: "presence", presence: { userId: BOB, online: true } });
    expect(stream.presence.get(BOB)).toEqual({ userId: BOB, online: true });
  });

  it("sends a failed subscription again with backoff, but not one refused as invalid", async () => {
    const { stream } = connect();
    await until(sentResume, "the resume");
    const socket = FakeSocket.latest();
    socket.resume();
    const subscriptions = () => socket.framesOf("presence.subscribe");
    const first = stream.watchPresence([{ userId: BOB, chatId: CHAT }]).catch((error: unknown) => error);
    await until(() => subscriptions().length === 1, "the subscription");

    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    socket.receive({ type: "reply", id: subscriptions()[0]!.id, ok: false, error: { code: "internal", message: "boom", retryable: true } });
    expect(await first).toMatchObject({ error: { code: "internal" } });
    await vi.advanceTimersByTimeAsync(1_000); // the first backoff is 375 to 625 ms
    expect(subscriptions()).toHaveLength(2);

    socket.receive({ type: "reply", id: subscriptions()[1]!.id, ok: false, error: { code: "validation_failed", message: "no", retryable: false } });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(subscriptions()).toHaveLength(2);
  });
});
