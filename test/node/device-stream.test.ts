import { afterEach, describe, expect, it, vi } from "vitest";
import {
  ApiError,
  CursorStore,
  DeviceStream,
  type ApiClient,
  type ChatEvent,
  type ChatSummary,
  type SendMessageRequest,
  type SendResult,
} from "../../src/client/index.ts";
import { FakeServerSocket } from "./support/fake-socket.ts";

const ME = "u_MMMMMMMMMMMMMMMMMMMMMM";
const PEER = "u_PPPPPPPPPPPPPPPPPPPPPP";
const DEVICE = "dv_DDDDDDDDDDDDDDDDDDDDDD";
const SMALL = "g_SSSSSSSSSSSSSSSSSSSSSS";
const BIG = "g_BBBBBBBBBBBBBBBBBBBBBB";
const NEW = "g_NNNNNNNNNNNNNNNNNNNNNN";
const GONE = "g_GGGGGGGGGGGGGGGGGGGGGG";

const message = (seq: number): ChatEvent => ({
  type: "message",
  seq,
  createdAt: seq,
  messageId: `id-${seq}`,
  senderId: PEER,
  senderDeviceId: DEVICE,
  clientId: `c-${seq}`,
  body: `message ${seq}`,
});
const messages = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => message(from + i));

function summary(chatId: string, headSeq: number, extra: Partial<ChatSummary> = {}): ChatSummary {
  return {
    chatId,
    kind: "group",
    name: "chat",
    addedAt: 1,
    headSeq,
    memberCount: 3,
    lastActivityAt: 1,
    membership: "member",
    readSeq: 0,
    unreadCount: 0,
    deliveredUpTo: 0,
    seenUpTo: 0,
    pinned: false,
    archived: false,
    ...extra,
  };
}

/** The device stream's server side: it says `stream.ready`. */
class FakeSocket extends FakeServerSocket {
  protected firstFrame(): object {
    return { type: "stream.ready", userId: ME, deviceId: DEVICE };
  }
}

/**
 * The REST side: history from a per-chat log, the chat list (one entry a page) and
 * each chat's head, sends answered by the test, reads answered at once.
 */
class FakeApi {
  readonly baseUrl = "https://chat.example";
  readonly log = new Map<string, ChatEvent[]>();
  /** The account's chat list, and the heads of its chats where the list trails them. */
  list: ChatSummary[] = [];
  readonly heads = new Map<string, number>();
  readonly listReads: (string | undefined)[] = [];
  readonly historyReads: string[] = [];
  readonly sends: { chatId: string; request: SendMessageRequest; resolve: (result: SendResult) => void }[] = [];
  refreshes = 0;
  /** How the next refreshes fail, in order; once none is left, refreshes succeed. */
  readonly refreshFailures: unknown[] = [];
  accessToken = async () => "token";
  refresh = async () => {
    this.refreshes++;
    const failure = this.refreshFailures.shift();
    if (failure !== undefined) throw failure;
    return {};
  };
  #historyGate: Promise<void> | null = null;
  /** History answers wait until the returned function is called. */
  holdHistory(): () => void {
    let release!: () => void;
    this.#historyGate = new Promise((resolve) => (release = resolve));
    return release;
  }
  request = async (method: string, path: string): Promise<Response> => {
    const url = new URL(path, this.baseUrl);
    const chatId = decodeURIComponent(url.pathname.split("/")[3]!);
    this.historyReads.push(`${method} ${url.pathname}${url.search}`);
    await this.#historyGate;
    const after = Number(url.searchParams.get("after"));
    const events = (this.log.get(chatId) ?? []).filter((event) => event.seq > after);
    return Response.json({ events, hasMore: false, headSeq: events.at(-1)?.seq ?? after });
  };
  sendMessage = (chatId: string, request: SendMessageRequest): Promise<SendResult> =>
    new Promise((resolve) => this.sends.push({ chatId, request, resolve }));
  chats = async (query: { cursor?: string } = {}) => {
    this.listReads.push(query.cursor);
    const index = Number(query.cursor ?? 0);
    const next = index + 1 < this.list.length ? { nextCursor: String(index + 1) } : {};
    return { chats: this.list.slice(index, index + 1), ...next };
  };
  chat = async (chatId: string) => ({ chatId, headSeq: this.heads.get(chatId) ?? this.list.find((c) => c.chatId === chatId)!.headSeq });
}

const streams: DeviceStream[] = [];
afterEach(() => {
  for (const stream of streams.splice(0)) stream.close();
  FakeSocket.instances = [];
  vi.useRealTimers();
  vi.restoreAllMocks();
});

/** A stream over a fake socket; resolves once it sent its `resume`. */
async function open(cursors: Record<string, number> = {}, restFallbackMs = 50) {
  const api = new FakeApi();
  const store = new CursorStore();
  for (const [chatId, seq] of Object.entries(cursors)) store.set(chatId, seq);
  const stream = new DeviceStream({ api: api as unknown as ApiClient, cursors: store, WebSocket: FakeSocket, restFallbackMs });
  streams.push(stream);
  const delivered: { chatId: string; seq: number }[] = [];
  stream.on("event", (chatId, event) => delivered.push({ chatId, seq: event.seq }));
  stream.connect();
  await until(() => FakeSocket.instances.length > 0 && FakeSocket.latest().frames().some((f) => f.type === "resume"));
  return { api, store, stream, delivered, socket: FakeSocket.latest() };
}

/** Resumes and answers like a server with nothing to catch up. */
async function openLive(cursors: Record<string, number> = {}, restFallbackMs = 50) {
  const opened = await open(cursors, restFallbackMs);
  opened.socket.reply(opened.socket.lastFrame("resume").id, { behind: 0, announced: 0, unknownChats: [] });
  opened.socket.receive({ type: "synced" });
  return opened;
}

async function until(condition: () => boolean, what = "the condition"): Promise<void> {
  for (let i = 0; i < 500 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  if (!condition()) throw new Error(`never happened: ${what}`);
}

const seqsOf = (delivered: { chatId: string; seq: number }[], chatId: string) => delivered.filter((d) => d.chatId === chatId).map((d) => d.seq);

describe("the device stream client", () => {
  it("resumes with every cursor, answers each batch with sync, and delivers each event once", async () => {
    const { socket, stream, delivered, store } = await open({ [SMALL]: 1 });
    expect(socket.url).toBe("wss://chat.example/chat");
    expect(socket.protocols).toEqual(["chat.v1", "bearer.token"]);
    expect(socket.lastFrame("resume")).toMatchObject({ cursors: { [SMALL]: 1 } });
    expect(stream.status).toBe("catching-up");
    socket.reply(socket.lastFrame("resume").id, { behind: 1, announced: 0, unknownChats: [] });
    socket.receive({ type: "events", chatId: SMALL, events: messages(2, 3), more: true });
    socket.receive({ type: "catching_up", behind: 1 });
    expect(socket.frames().filter((f) => f.type === "sync")).toHaveLength(1);
    socket.receive({ type: "events", chatId: SMALL, events: messages(3, 4), more: false });
    socket.receive({ type: "synced" });
    expect(stream.status).toBe("live");
    expect(seqsOf(delivered, SMALL)).toEqual([2, 3, 4]);
    expect(store.get(SMALL)).toBe(4);
  });

  it("on a new device (no cursors), starts an announced chat at its head", async () => {
    const { socket, api, delivered, store } = await open();
    socket.reply(socket.lastFrame("resume").id, { behind: 0, announced: 1, unknownChats: [] });
    socket.receive({ type: "chat", chat: summary(NEW, 7) });
    socket.receive({ type: "synced" });
    // A reconnection now resumes the chat from its head: nothing after it is missed.
    expect(store.all()).toEqual({ [NEW]: 7 });
    socket.receive({ type: "events", chatId: NEW, events: messages(8, 8), more: false });
    expect(seqsOf(delivered, NEW)).toEqual([8]);
    expect(api.historyReads).toEqual([]);
  });

  it("forgets chats the server says the account never had", async () => {
    const { socket, store } = await open({ [GONE]: 5, [SMALL]: 2 });
    socket.reply(socket.lastFrame("resume").id, { behind: 0, announced: 0, unknownChats: [GONE] });
    expect(store.all()).toEqual({ [SMALL]: 2 });
  });

  it("fetches a chat joined while the device was away from its start, holding the stream's events until it is in", async () => {
    const { socket, api, delivered, store } = await open({ [SMALL]: 2 });
    api.log.set(NEW, messages(1, 3));
    const release = api.holdHistory();
    socket.reply(socket.lastFrame("resume").id, { behind: 0, announced: 1, unknownChats: [] });
    socket.receive({ type: "chat", chat: summary(NEW, 3) });
    socket.receive({ type: "synced" });
    // Live from the announced head on, while the history is read.
    socket.receive({ type: "events", chatId: NEW, events: messages(4, 4), more: false });
    await until(() => api.historyReads.length === 1, "the history read");
    expect(seqsOf(delivered, NEW)).toEqual([]);
    release();
    await until(() => seqsOf(delivered, NEW).length === 4, "the chat from its start");
    expect(seqsOf(delivered, NEW)).toEqual([1, 2, 3, 4]);
    expect(api.historyReads).toEqual([`GET /api/chats/${NEW}/messages?after=0&limit=200`]);
    expect(store.get(NEW)).toBe(4);
  });

  it("a new device, once it has resumed, fetches chats joined while it was disconnected from their start", async () => {
    const { socket, api, delivered } = await openLive();
    api.log.set(NEW, messages(1, 2));
    socket.drop(1006);
    await until(() => FakeSocket.instances.length === 2 && FakeSocket.latest().frames().some((f) => f.type === "resume"), "a new resume");
    const again = FakeSocket.latest();
    expect(again.lastFrame("resume")).toMatchObject({ cursors: {} });
    again.reply(again.lastFrame("resume").id, { behind: 0, announced: 1, unknownChats: [] });
    again.receive({ type: "chat", chat: summary(NEW, 2) });
    await until(() => seqsOf(delivered, NEW).length === 2, "the chat from its start");
    expect(seqsOf(delivered, NEW)).toEqual([1, 2]);
  });

  it("delivers a chat joined while live from its first event", async () => {
    const { socket, delivered } = await openLive();
    socket.receive({ type: "chat", chat: summary(NEW, 1) });
    socket.receive({ type: "events", chatId: NEW, events: messages(1, 1), more: false });
    expect(seqsOf(delivered, NEW)).toEqual([1]);
  });

  it("fetches a big chat's new events over REST history from the cursor, once", async () => {
    const { socket, api, delivered } = await openLive({ [BIG]: 3 });
    api.log.set(BIG, messages(1, 6));
    socket.receive({ type: "chat", chat: summary(BIG, 6, { memberCount: 300 }) });
    await until(() => delivered.length === 3, "the fetched events");
    expect(api.historyReads).toEqual([`GET /api/chats/${BIG}/messages?after=3&limit=200`]);
    expect(seqsOf(delivered, BIG)).toEqual([4, 5, 6]);
  });

  it("fetches the rest of a membership that ended while the device was away", async () => {
    const { socket, api, delivered } = await open({ [SMALL]: 2 });
    api.log.set(SMALL, messages(1, 4));
    socket.reply(socket.lastFrame("resume").id, { behind: 0, announced: 1, unknownChats: [] });
    socket.receive({ type: "chat", chat: summary(SMALL, 4, { membership: "removed" }) });
    await until(() => delivered.length === 2, "the rest of the membership");
    expect(seqsOf(delivered, SMALL)).toEqual([3, 4]);
  });

  it("fetches a small chat's events over REST when its entry is ahead and they do not follow", async () => {
    const { socket, api, delivered } = await openLive({ [SMALL]: 2 });
    api.log.set(SMALL, messages(1, 4));
    socket.receive({ type: "chat", chat: summary(SMALL, 4) });
    await until(() => delivered.length === 2, "the fetched events");
    expect(seqsOf(delivered, SMALL)).toEqual([3, 4]);
    // The stream's copies, when they come late, are not delivered again.
    socket.receive({ type: "events", chatId: SMALL, events: messages(3, 5), more: false });
    expect(seqsOf(delivered, SMALL)).toEqual([3, 4, 5]);
  });

  it("does not fetch when the events follow the entry", async () => {
    const { socket, api, delivered } = await openLive({ [SMALL]: 2 }, 20);
    socket.receive({ type: "chat", chat: summary(SMALL, 3) });
    socket.receive({ type: "events", chatId: SMALL, events: messages(3, 3), more: false });
    socket.receive({ type: "chat", chat: summary(SMALL, 4) });
    socket.receive({ type: "events", chatId: SMALL, events: messages(4, 4), more: false });
    // Another chat's fetch, started after both waits would have ended, marks the time.
    api.log.set(BIG, messages(1, 1));
    await new Promise((resolve) => setTimeout(resolve, 40));
    socket.receive({ type: "chat", chat: summary(BIG, 1, { memberCount: 300 }) });
    await until(() => api.historyReads.length === 1);
    expect(api.historyReads[0]).toContain(BIG);
    expect(seqsOf(delivered, SMALL)).toEqual([3, 4]);
  });

  it("fills a gap in the stream's events from REST history before delivering what follows it", async () => {
    const { socket, api, delivered } = await openLive({ [SMALL]: 2 });
    api.log.set(SMALL, messages(1, 5));
    socket.receive({ type: "events", chatId: SMALL, events: messages(5, 6), more: false });
    socket.receive({ type: "events", chatId: SMALL, events: messages(7, 7), more: false });
    await until(() => delivered.length === 5, "the gap filled");
    expect(seqsOf(delivered, SMALL)).toEqual([3, 4, 5, 6, 7]);
  });

  it("sends on the stream, and after a lost connection again over REST with the same clientId", async () => {
    const { socket, stream, api } = await openLive();
    const ack = stream.send(SMALL, "hello");
    await until(() => socket.frames().some((f) => f.type === "send"));
    const frame = socket.lastFrame("send");
    expect(frame).toMatchObject({ chatId: SMALL, body: "hello" });
    socket.drop(1006);
    await until(() => api.sends.length === 1, "the REST send");
    expect(api.sends[0]).toMatchObject({ chatId: SMALL, request: { clientId: frame.clientId, body: "hello" } });
    api.sends[0]!.resolve({ seq: 9, messageId: "m", createdAt: 1, duplicate: true });
    expect(await ack).toMatchObject({ seq: 9 });
  });

  it("marks a chat read over the stream", async () => {
    const { socket, stream } = await openLive();
    const read = stream.markRead(SMALL, 4);
    const frame = socket.lastFrame("read");
    expect(frame).toMatchObject({ chatId: SMALL, seq: 4 });
    socket.reply(frame.id, summary(SMALL, 4, { readSeq: 4 }));
    expect(await read).toMatchObject({ readSeq: 4, unreadCount: 0 });
  });

  it("refreshes the token on 4001 and resumes from the cursors on a new socket", async () => {
    const { socket, api, store } = await openLive({ [SMALL]: 2 });
    socket.receive({ type: "events", chatId: SMALL, events: messages(3, 3), more: false });
    socket.drop(4001, "token_expired");
    await until(() => FakeSocket.instances.length === 2 && FakeSocket.latest().frames().some((f) => f.type === "resume"), "a new resume");
    expect(api.refreshes).toBe(1);
    expect(FakeSocket.latest().lastFrame("resume")).toMatchObject({ cursors: { [SMALL]: 3 } });
    expect(store.get(SMALL)).toBe(3);
  });

  it("tries a refresh that failed for a moment (network, 429) again, then resumes on a new socket", async () => {
    const { socket, api, stream } = await openLive({ [SMALL]: 2 });
    const closes: number[] = [];
    stream.on("closed", (code) => closes.push(code));
    api.refreshFailures.push(
      new TypeError("fetch failed"),
      new ApiError(429, { code: "rate_limited", message: "slow down", retryable: true, retryAfterMs: 10 }),
    );
    socket.drop(4001, "token_expired");
    await until(() => FakeSocket.instances.length === 2 && FakeSocket.latest().frames().some((f) => f.type === "resume"), "a new resume");
    expect(api.refreshes).toBe(3);
    expect(closes).toEqual([]);
    expect(FakeSocket.latest().lastFrame("resume")).toMatchObject({ cursors: { [SMALL]: 2 } });
  });

  it("stops for good when the refresh is refused for good, rejecting its waiting sends", async () => {
    const { socket, api, stream } = await openLive();
    api.sendMessage = () => new Promise(() => {}); // REST never answers: the send waits
    const closes: { code: number; reason: string }[] = [];
    stream.on("closed", (code, reason) => closes.push({ code, reason }));
    const ack = stream.send(SMALL, "hello");
    api.refreshFailures.push(new ApiError(401, { code: "refresh_token_reused", message: "reused", retryable: false }));
    socket.drop(4001, "token_expired");
    await expect(ack).rejects.toThrow(/unavailable/);
    expect(closes).toEqual([{ code: 4001, reason: "refresh_token_reused" }]);
    expect(stream.status).toBe("closed");
    expect(FakeSocket.instances).toHaveLength(1);
  });

  it("drops the cursors a refused resume had past their chats' heads (a store older than the server's data) and resumes again", async () => {
    const { socket, api, stream } = await open({ [SMALL]: 9, [BIG]: 2, [NEW]: 6 });
    // SMALL's cursor is past its head; NEW's is past the list's entry, which trails the chat.
    api.list = [summary(SMALL, 4), summary(BIG, 5, { memberCount: 300 }), summary(NEW, 5)];
    api.heads.set(NEW, 6);
    const closes: number[] = [];
    stream.on("closed", (code) => closes.push(code));
    api.sendMessage = () => new Promise(() => {}); // REST never answers: the send waits
    const ack = stream.send(BIG, "hello");
    let rejected = false;
    ack.catch(() => (rejected = true));
    socket.refuse(socket.lastFrame("resume").id, { code: "invalid_cursor", message: "the cursor must be a seq between 0 and 4", retryable: false });
    await until(() => socket.frames().filter((f) => f.type === "resume").length === 2, "a second resume");
    expect(api.listReads).toEqual([undefined, "1", "2"]);
    expect(socket.lastFrame("resume")).toMatchObject({ cursors: { [BIG]: 2, [NEW]: 6 } });
    expect(stream.cursors.get(SMALL)).toBeUndefined();
    socket.reply(socket.lastFrame("resume").id, { behind: 0, announced: 0, unknownChats: [] });
    socket.receive({ type: "synced" });
    expect(stream.status).toBe("live");
    expect(closes).toEqual([]);
    expect(rejected).toBe(false);
    expect(stream.pendingSends).toBe(1);
  });

  it("after any other refused resume, connects again after a backoff that doubles, and never stops", async () => {
    vi.useFakeTimers();
    vi.spyOn(Math, "random").mockReturnValue(0.5); // no jitter: the delays are exact
    const api = new FakeApi();
    const stream = new DeviceStream({ api: api as unknown as ApiClient, WebSocket: FakeSocket });
    streams.push(stream);
    const closes: number[] = [];
    stream.on("closed", (code) => closes.push(code));
    stream.connect();
    /** Lets time pass until the `socket`th socket sent its resume; returns the frame's id. */
    const resumeOn = async (socket: number) => {
      const waiting = () => FakeSocket.instances.length < socket || !FakeSocket.instances[socket - 1]!.frames().some((f) => f.type === "resume");
      for (let i = 0; i < 10_000 && waiting(); i++) await vi.advanceTimersByTimeAsync(10);
      return FakeSocket.instances[socket - 1]!.lastFrame("resume").id;
    };
    const refusals = [
      { code: "validation_failed", message: "bad cursors", retryable: false },
      { code: "unavailable", message: "try again", retryable: true },
      { code: "internal", message: "oops", retryable: true },
    ];
    /** From each refusal to the client closing that socket for a new one. */
    const waits: number[] = [];
    for (const [index, error] of refusals.entries()) {
      const id = await resumeOn(index + 1);
      const refused = FakeSocket.latest();
      const refusedAt = Date.now();
      refused.refuse(id, error);
      await resumeOn(index + 2);
      waits.push(refused.closedAt! - refusedAt);
    }
    const id = await resumeOn(4);
    FakeSocket.latest().reply(id, { behind: 0, announced: 0, unknownChats: [] });
    FakeSocket.latest().receive({ type: "synced" });
    expect(waits).toEqual([500, 1000, 2000]);
    expect(stream.status).toBe("live");
    expect(closes).toEqual([]);
  });

  it("keeps a chat's newest entry when an older one arrives after it", async () => {
    const { socket, stream } = await open({ [BIG]: 3 });
    const drawn: ChatSummary[] = [];
    stream.on("chat", (chat) => drawn.push(chat));
    const big = { memberCount: 300 };
    // Read on another device while the resume was planned; then the announcement, built before the read.
    socket.receive({ type: "chat", chat: summary(BIG, 6, { ...big, readSeq: 6, unreadCount: 0 }) });
    socket.reply(socket.lastFrame("resume").id, { behind: 0, announced: 1, unknownChats: [] });
    socket.receive({ type: "chat", chat: summary(BIG, 6, { ...big, readSeq: 3, unreadCount: 3 }) });
    socket.receive({ type: "synced" });
    expect(stream.chats.get(BIG)).toMatchObject({ headSeq: 6, readSeq: 6, unreadCount: 0 });
    // An entry with an older head is older, whatever its readSeq.
    socket.receive({ type: "chat", chat: summary(BIG, 5, { ...big, readSeq: 6, unreadCount: 0, name: "old name" }) });
    // With the same head and readSeq, the later one's settings stand.
    socket.receive({ type: "chat", chat: summary(BIG, 6, { ...big, readSeq: 6, unreadCount: 0, pinned: true }) });
    socket.receive({ type: "chat", chat: summary(BIG, 7, { ...big, readSeq: 6, unreadCount: 1, pinned: true, archived: true }) });
    expect(drawn.map((chat) => [chat.headSeq, chat.readSeq, chat.pinned, chat.archived])).toEqual([
      [6, 6, false, false],
      [6, 6, true, false],
      [7, 6, true, true],
    ]);
    expect(stream.chats.get(BIG)).toMatchObject({ headSeq: 7, readSeq: 6, unreadCount: 1, name: "chat", pinned: true, archived: true });
  });

  it("stops for good when the device is revoked", async () => {
    const { socket, stream } = await openLive();
    const closes: number[] = [];
    stream.on("closed", (code) => closes.push(code));
    socket.drop(4009, "device_revoked");
    expect(closes).toEqual([4009]);
    expect(stream.status).toBe("closed");
  });
});
