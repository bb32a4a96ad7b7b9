import { afterEach, describe, expect, it, vi } from "vitest";
import {
  ApiError,
  ConnectionLost,
  MemoryOutboxStorage,
  Outbox,
  SendError,
  WebStorageOutboxStorage,
  type OutboxMessage,
  type SendMessageRequest,
  type SendResult,
  type SendTransport,
  type WebStorageLike,
} from "../../src/client/index.ts";

const CHAT = "g_CCCCCCCCCCCCCCCCCCCCCC";
const OTHER = "g_DDDDDDDDDDDDDDDDDDDDDD";
const ALICE_PHONE = { userId: "u_AAAAAAAAAAAAAAAAAAAAAA", deviceId: "dv_AAAAAAAAAAAAAAAAAAAAAA" };
const BOB_LAPTOP = { userId: "u_BBBBBBBBBBBBBBBBBBBBBB", deviceId: "dv_BBBBBBBBBBBBBBBBBBBBBB" };

/** A Web Storage in memory, as `localStorage` behaves. */
function webStorage(): WebStorageLike & { items: Map<string, string> } {
  const items = new Map<string, string>();
  return {
    items,
    get length() {
      return items.size;
    },
    key: (index) => [...items.keys()][index] ?? null,
    // Keys and values are strings, whatever is passed.
    getItem: (key) => items.get(String(key)) ?? null,
    setItem: (key, value) => void items.set(String(key), String(value)),
    removeItem: (key) => void items.delete(String(key)),
  };
}

/**
 * A stand-in for a connection: records every attempt and lets the test answer each
 * one (an ack with the next seq of its chat, a refusal, or a lost connection).
 */
class FakeTransport implements SendTransport {
  open = true;
  readonly attempts: { message: OutboxMessage; resolve: (result: SendResult) => void; reject: (error: unknown) => void }[] = [];
  constructor(readonly chats: string[] | "all" = "all") {}
  canSend(chatId: string): boolean {
    return this.open && (this.chats === "all" || this.chats.includes(chatId));
  }
  send(message: OutboxMessage): Promise<SendResult> {
    return new Promise((resolve, reject) => this.attempts.push({ message, resolve, reject }));
  }
  /** Answers the oldest unanswered attempt with an ack. */
  ack(seq: number, duplicate = false): void {
    this.next().resolve({ seq, messageId: `id-${seq}`, createdAt: seq, duplicate });
  }
  fail(error: unknown): void {
    this.next().reject(error);
  }
  #answered = 0;
  next() {
    const attempt = this.attempts[this.#answered++];
    if (!attempt) throw new Error("no attempt waiting");
    return attempt;
  }
  get waiting(): number {
    return this.attempts.length - this.#answered;
  }
}

/** REST as the outbox sees it: `sendMessage`, answered by the test. */
class FakeRest {
  readonly calls: { chatId: string; request: SendMessageRequest; resolve: (result: SendResult) => void; reject: (error: unknown) => void }[] = [];
  sendMessage = (chatId: string, request: SendMessageRequest): Promise<SendResult> =>
    new Promise((resolve, reject) => this.calls.push({ chatId, request, resolve, reject }));
}

/** Lets promise callbacks run. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

afterEach(() => {
  vi.useRealTimers();
});

describe("the outbox", () => {
  it("sends one message of a chat at a time, in order, while chats go side by side", async () => {
    const outbox = new Outbox();
    const socket = new FakeTransport();
    outbox.attach(socket);
    const first = outbox.send(CHAT, "one");
    const second = outbox.send(CHAT, "two");
    const elsewhere = outbox.send(OTHER, "other chat");
    expect(socket.attempts.map((a) => a.message.body)).toEqual(["one", "other chat"]);
    socket.ack(5);
    expect(await first).toMatchObject({ seq: 5 });
    await settle();
    expect(socket.attempts.map((a) => a.message.body)).toEqual(["one", "other chat", "two"]);
    socket.ack(1);
    socket.ack(6);
    expect(await elsewhere).toMatchObject({ seq: 1 });
    expect(await second).toMatchObject({ seq: 6 });
    expect(outbox.size).toBe(0);
  });

  it("sends again with the same clientId when the connection is lost, over the next transport", async () => {
    const rest = new FakeRest();
    const outbox = new Outbox({ api: rest });
    const stream = new FakeTransport();
    outbox.attach(stream, 0);
    const ack = outbox.send(CHAT, "hello", { replyToSeq: 3 });
    const clientId = stream.attempts[0]!.message.clientId;
    stream.open = false;
    stream.fail(new ConnectionLost());
    await settle();
    expect(rest.calls).toHaveLength(1);
    expect(rest.calls[0]).toMatchObject({ chatId: CHAT, request: { clientId, body: "hello", replyToSeq: 3 } });
    rest.calls[0]!.resolve({ seq: 4, messageId: "m", createdAt: 1, duplicate: true });
    expect(await ack).toMatchObject({ seq: 4, duplicate: true });
  });

  it("prefers the device stream, then the chat's socket, then REST", async () => {
    const rest = new FakeRest();
    const outbox = new Outbox({ api: rest });
    const chatSocket = new FakeTransport([CHAT]);
    const stream = new FakeTransport();
    outbox.attach(chatSocket, 1);
    outbox.attach(stream, 0);

    void outbox.send(CHAT, "a");
    expect(stream.attempts).toHaveLength(1);
    stream.ack(2);
    await settle();

    stream.open = false;
    void outbox.send(CHAT, "b");
    void outbox.send(OTHER, "c"); // no socket of its own: REST
    expect(chatSocket.attempts.map((a) => a.message.body)).toEqual(["b"]);
    expect(rest.calls.map((call) => call.request.body)).toEqual(["c"]);
  });

  it("waits for a connection when it has no REST to fall back on, and sends when one wakes it", async () => {
    const outbox = new Outbox();
    const socket = new FakeTransport();
    socket.open = false;
    outbox.attach(socket);
    const ack = outbox.send(CHAT, "later");
    expect(socket.attempts).toHaveLength(0);
    socket.open = true;
    outbox.wake();
    expect(socket.attempts).toHaveLength(1);
    socket.ack(3);
    expect(await ack).toMatchObject({ seq: 3 });
  });

  it("waits as long as the server says after a retryable refusal, even when a connection opens", async () => {
    vi.useFakeTimers();
    const outbox = new Outbox();
    const socket = new FakeTransport();
    outbox.attach(socket);
    const ack = outbox.send(CHAT, "busy");
    socket.fail(new SendError({ code: "rate_limited", message: "slow down", retryable: true, retryAfterMs: 2_000 }));
    await vi.advanceTimersByTimeAsync(1_000);
    outbox.wake();
    expect(socket.attempts).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(socket.attempts).toHaveLength(2);
    expect(socket.attempts[1]!.message.clientId).toBe(socket.attempts[0]!.message.clientId);
    socket.ack(8);
    expect(await ack).toMatchObject({ seq: 8 });
  });

  it("drops a message the server refuses for good, and the next one goes", async () => {
    const rest = new FakeRest();
    const outbox = new Outbox({ api: rest });
    const failed: string[] = [];
    outbox.on("failed", (message, error) => failed.push(`${message.body}: ${error.code}`));
    const refused = outbox.send(CHAT, "refused");
    const next = outbox.send(CHAT, "next");
    rest.calls[0]!.reject(new ApiError(403, { code: "not_a_member", message: "no", retryable: false }));
    await expect(refused).rejects.toMatchObject({ name: "SendError", error: { code: "not_a_member" } });
    await settle();
    expect(rest.calls.map((call) => call.request.body)).toEqual(["refused", "next"]);
    rest.calls[1]!.resolve({ seq: 9, messageId: "m", createdAt: 1, duplicate: false });
    expect(await next).toMatchObject({ seq: 9 });
    expect(failed).toEqual(["refused: not_a_member"]);
  });

  it("stores a message before its first attempt and forgets it once acknowledged", async () => {
    const storage = new MemoryOutboxStorage();
    const outbox = new Outbox({ storage });
    const socket = new FakeTransport();
    outbox.attach(socket);
    const ack = outbox.send(CHAT, "kept", { clientId: "c-1" });
    expect(storage.load()).toEqual([{ chatId: CHAT, clientId: "c-1", body: "kept" }]);
    socket.ack(2);
    await ack;
    expect(storage.load()).toEqual([]);
  });

  it("sends what an earlier run left unsent, in order, with the same clientIds", async () => {
    const storage = new MemoryOutboxStorage();
    storage.add({ chatId: CHAT, clientId: "c-1", body: "first" });
    storage.add({ chatId: CHAT, clientId: "c-2", body: "second" });
    const rest = new FakeRest();
    const outbox = new Outbox({ api: rest, storage });
    const sent: string[] = [];
    outbox.on("sent", (message, result) => sent.push(`${message.clientId}@${result.seq}`));
    await settle();
    expect(rest.calls.map((call) => call.request.clientId)).toEqual(["c-1"]);
    rest.calls[0]!.resolve({ seq: 3, messageId: "m", createdAt: 1, duplicate: true });
    await settle();
    rest.calls[1]!.resolve({ seq: 4, messageId: "n", createdAt: 1, duplicate: false });
    await settle();
    expect(sent).toEqual(["c-1@3", "c-2@4"]);
    expect(storage.load()).toEqual([]);
  });

  it("does not queue a clientId twice: both promises follow the one message", async () => {
    const outbox = new Outbox();
    const socket = new FakeTransport();
    outbox.attach(socket);
    const first = outbox.send(CHAT, "once", { clientId: "c-9" });
    const again = outbox.send(CHAT, "once", { clientId: "c-9" });
    expect(outbox.size).toBe(1);
    socket.ack(4);
    expect(await Promise.all([first, again])).toEqual([expect.objectContaining({ seq: 4 }), expect.objectContaining({ seq: 4 })]);
    expect(socket.attempts).toHaveLength(1);
  });

  it("discards a chat's waiting messages on request, rejecting their promises", async () => {
    const outbox = new Outbox();
    const socket = new FakeTransport();
    outbox.attach(socket);
    const waiting = outbox.send(CHAT, "gone");
    const kept = outbox.send(OTHER, "kept");
    outbox.discard(CHAT, { code: "unavailable", message: "closed", retryable: true });
    await expect(waiting).rejects.toBeInstanceOf(SendError);
    expect(outbox.pending().map((m) => m.body)).toEqual(["kept"]);
    socket.next(); // the discarded chat's attempt: its answer no longer matters
    socket.ack(1);
    expect(await kept).toMatchObject({ seq: 1 });
  });

  it("keeps unsent messages in a Web Storage, under a key of the account and device", () => {
    const storage = webStorage();
    const outbox = new Outbox({ storage: new WebStorageOutboxStorage(storage, ALICE_PHONE) });
    void outbox.send(CHAT, "one", { clientId: "c-1" });
    void outbox.send(OTHER, "two", { clientId: "c-2", replyToSeq: 4 });
    expect([...storage.items.keys()]).toEqual([`edgechat.outbox.${ALICE_PHONE.userId}.${ALICE_PHONE.deviceId}`]);
    expect(new WebStorageOutboxStorage(storage, ALICE_PHONE).load()).toEqual([
      { chatId: CHAT, clientId: "c-1", body: "one" },
      { chatId: OTHER, clientId: "c-2", body: "two", replyToSeq: 4 },
    ]);
  });

  it("never sends one account's waiting messages as another account signed in later in the same browser", async () => {
    const storage = webStorage();
    // Alice's message waits (no connection) when she signs out.
    void new Outbox({ storage: new WebStorageOutboxStorage(storage, ALICE_PHONE) }).send(CHAT, "from alice", { clientId: "c-1" });
    const rest = new FakeRest();
    const bobs = new Outbox({ api: rest, storage: new WebStorageOutboxStorage(storage, BOB_LAPTOP) });
    await settle();
    expect(bobs.size).toBe(0);
    expect(rest.calls).toEqual([]);
    void bobs.send(OTHER, "from bob", { clientId: "c-2" });
    expect(rest.calls.map((call) => call.request.body)).toEqual(["from bob"]);
    // Alice's message is still there for her.
    expect(new Outbox({ storage: new WebStorageOutboxStorage(storage, ALICE_PHONE) }).pending()).toEqual([
      { chatId: CHAT, clientId: "c-1", body: "from alice" },
    ]);
  });
});
