/**
 * The benchmark's device stream (`GET /chat`): one socket per device for every chat of
 * the account. `StreamSocket` resumes from the cursors it is given, answers each
 * catch-up batch with `sync`, stamps `stream.ready`, the reply to `resume` and
 * `synced`, and checks per chat that every event arrives once and in order: seqs must
 * follow each other with no gap from the cursor (or, for a chat the device did not
 * list, from the head its announcement gave).
 */
import WebSocket from "ws";
import { EventsFrameEnvelope, PresenceFrame, ReceiptsFrame, ReplyFrame, ResumeResult, StreamReadyFrame, type Presence, type PresenceWatch } from "../src/client/index.ts";
import { mapPool, type BenchUser, type SocketFailure } from "./client.ts";
import { scanStreamMessage } from "./lib/frames.ts";
import { waitUntil } from "./lib/open-loop.ts";

export type StreamSocketOptions = {
  url: string;
  user: BenchUser;
  /** `{chatId: lastSeq}` sent in `resume` ({}: a device that knows no chat). */
  cursors?: Record<string, number>;
  /** Every message event in order as it arrives, with the receive time and its chat. */
  onMessage?: (seq: number, clientId: string, receivedAt: number, socket: StreamSocket, chatId: string) => void;
  /** Replies to this socket's sends (the replies to `resume` and `sync` are the socket's own). */
  onReply?: (reply: ReplyFrame, receivedAt: number, socket: StreamSocket) => void;
  /** Every `receipts` frame (the account's own messages moved in a chat), with the receive time. */
  onReceipts?: (frame: ReceiptsFrame, receivedAt: number, socket: StreamSocket) => void;
  /** Every `presence` frame (a watched user's presence changed), with the receive time. */
  onPresence?: (presence: Presence, receivedAt: number, socket: StreamSocket) => void;
  handshakeTimeoutMs?: number;
};

const RESUME_ID = "resume";
const SYNC_PREFIX = "sync-";

export class StreamSocket {
  readonly user: BenchUser;
  readonly ws: WebSocket;
  readonly startedAt = performance.now();
  openedAt = Number.NaN;
  /** The `stream.ready` frame (the resume goes out when it arrives). */
  readyAt = Number.NaN;
  /** The reply to `resume`. */
  resumedAt = Number.NaN;
  /** The `synced` frame: caught up on every chat, live from here. */
  syncedAt = Number.NaN;
  resumeResult: ResumeResult | null = null;
  /** Per chat: the next seq this device must see. */
  readonly expected = new Map<string, number>();
  gaps = 0;
  duplicates = 0;
  /** Message events received (every chat, catch-up and live). */
  messages = 0;
  /** Events of any type received. */
  events = 0;
  frames = 0;
  /** Bytes of every frame received (payloads, as the client reads them). */
  bytes = 0;
  /** `catching_up` frames answered with `sync`. */
  batches = 0;
  chatFrames = 0;
  /** `receipts` frames received, and the latest watermarks per chat. */
  receiptFrames = 0;
  readonly receipts = new Map<string, { deliveredUpTo: number; seenUpTo: number }>();
  /** `presence` frames received. */
  presenceFrames = 0;
  /** Replies to sends. */
  repliesOk = 0;
  repliesFailed = 0;
  failure: SocketFailure | null = null;
  closed: { code: number; reason: string } | null = null;
  onMessage: StreamSocketOptions["onMessage"];
  onReply: StreamSocketOptions["onReply"];
  onReceipts: StreamSocketOptions["onReceipts"];
  onPresence: StreamSocketOptions["onPresence"];
  #validatedReceipts = false;
  #validatedPresence = false;
  readonly #cursors: Record<string, number>;
  /** `chat` frames right after the resume reply that are its announcements. */
  #announcementsLeft = 0;
  #validatedPage = false;
  #syncs = 0;

  constructor(options: StreamSocketOptions) {
    this.user = options.user;
    this.onMessage = options.onMessage;
    this.onReply = options.onReply;
    this.onReceipts = options.onReceipts;
    this.onPresence = options.onPresence;
    this.#cursors = options.cursors ?? {};
    for (const [chatId, seq] of Object.entries(this.#cursors)) this.expected.set(chatId, seq + 1);
    this.ws = new WebSocket(options.url, {
      headers: { authorization: `Bearer ${options.user.credentials}` },
      perMessageDeflate: false,
      skipUTF8Validation: true,
      handshakeTimeout: options.handshakeTimeoutMs ?? 15_000,
      maxPayload: 16 * 1024 * 1024,
    });
    this.ws.on("open", () => {
      this.openedAt = performance.now();
    });
    this.ws.on("message", (data: Buffer, isBinary: boolean) => this.#receive(data, isBinary));
    this.ws.on("unexpected-response", (_request, response) => {
      this.#fail("handshake", `HTTP ${response.statusCode}`);
      response.resume();
      this.ws.terminate();
    });
    this.ws.on("error", (error) => this.#fail(Number.isNaN(this.openedAt) ? "handshake" : "open", error.message));
    this.ws.on("close", (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      if (!this.isSynced) this.#fail(this.isResumed ? "open" : "ready", `closed ${code} ${reason.toString()} before synced`);
    });
  }

  get isReady(): boolean {
    return !Number.isNaN(this.readyAt);
  }

  get isResumed(): boolean {
    return !Number.isNaN(this.resumedAt);
  }

  get isSynced(): boolean {
    return !Number.isNaN(this.syncedAt);
  }

  /** Where the device is now in each chat it has seen: the cursors to resume from next time. */
  cursors(): Record<string, number> {
    return Object.fromEntries([...this.expected].map(([chatId, next]) => [chatId, next - 1]));
  }

  sendMessage(chatId: string, id: string, clientId: string, body: string): void {
    this.ws.send(`{"type":"send","id":"${id}","chatId":"${chatId}","clientId":"${clientId}","body":${JSON.stringify(body)}}`);
  }

  /** Marks `chatId` read up to `seq` (SEEN); the reply goes to onReply like a send's. */
  sendRead(chatId: string, id: string, seq: number): void {
    this.ws.send(`{"type":"read","id":"${id}","chatId":"${chatId}","seq":${seq}}`);
  }

  /** Replaces this stream's presence watch list; the reply goes to onReply like a send's. */
  sendPresenceSubscribe(id: string, watch: readonly PresenceWatch[]): void {
    this.ws.send(JSON.stringify({ type: "presence.subscribe", id, watch }));
  }

  /** Closes and waits (bounded) for the close handshake, then drops the TCP connection. */
  async close(timeoutMs = 2_000): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    const closed = new Promise<void>((resolve) => this.ws.once("close", () => resolve()));
    try {
      if (this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
      else this.ws.close(1000, "bench done");
    } catch {
      this.ws.terminate();
    }
    await Promise.race([closed, new Promise<void>((resolve) => setTimeout(resolve, timeoutMs))]);
    if ((this.ws.readyState as number) !== WebSocket.CLOSED) this.ws.terminate();
  }

  #fail(stage: SocketFailure["stage"], detail: string): void {
    this.failure ??= { stage, detail };
  }

  #receive(data: Buffer, isBinary: boolean): void {
    const receivedAt = performance.now();
    this.frames++;
    this.bytes += data.length;
    if (isBinary) return this.#fail("open", "binary frame from the server");
    const live = this.isResumed ? scanStreamMessage(data) : null;
    if (live !== null) {
      this.#checkSeq(live.chatId, live.seq);
      this.events++;
      this.messages++;
      this.onMessage?.(live.seq, live.clientId, receivedAt, this, live.chatId);
      return;
    }
    const text = data.toString();
    if (text === "pong") return;
    let frame: { type?: string; id?: string; chatId?: string };
    try {
      frame = JSON.parse(text) as typeof frame;
    } catch {
      return this.#fail("open", `not JSON: ${text.slice(0, 80)}`);
    }
    switch (frame.type) {
      case "stream.ready": {
        const parsed = StreamReadyFrame.safeParse(frame);
        if (!parsed.success) return this.#fail("ready", `invalid stream.ready frame: ${parsed.error.message}`);
        this.readyAt = receivedAt;
        this.ws.send(JSON.stringify({ type: "resume", id: RESUME_ID, cursors: this.#cursors }));
        return;
      }
      case "reply":
        return this.#onReply(frame as ReplyFrame, receivedAt);
      case "chat": {
        this.chatFrames++;
        const chat = (frame as { chat?: { chatId?: unknown; headSeq?: unknown } }).chat;
        if (this.#announcementsLeft > 0 && typeof chat?.chatId === "string" && typeof chat.headSeq === "number") {
          this.#announcementsLeft--;
          // Announced: live from the head it gives (a chat it listed keeps its cursor).
          if (!this.expected.has(chat.chatId)) this.expected.set(chat.chatId, chat.headSeq + 1);
        }
        return;
      }
      case "events":
        return this.#onEvents(frame, receivedAt);
      case "catching_up":
        this.batches++;
        this.ws.send(`{"type":"sync","id":"${SYNC_PREFIX}${++this.#syncs}"}`);
        return;
      case "synced":
        this.syncedAt = receivedAt;
        return;
      case "receipts":
        return this.#onReceipts(frame, receivedAt);
      case "presence":
        return this.#onPresence(frame, receivedAt);
      case "error":
        return this.#fail(this.isResumed ? "open" : "resume", `error frame: ${text.slice(0, 200)}`);
      default:
        return this.#fail("open", `unexpected frame: ${text.slice(0, 200)}`);
    }
  }

  #onReply(reply: ReplyFrame, receivedAt: number): void {
    if (reply.id === RESUME_ID) {
      if (!reply.ok) return this.#fail("resume", `resume refused: ${reply.error.code} ${reply.error.message}`);
      const parsed = ResumeResult.safeParse(reply.result);
      if (!parsed.success) return this.#fail("resume", `invalid resume result: ${parsed.error.message}`);
      this.resumeResult = parsed.data;
      this.resumedAt = receivedAt;
      this.#announcementsLeft = parsed.data.announced;
      return;
    }
    if (reply.id.startsWith(SYNC_PREFIX)) {
      if (!reply.ok) this.#fail("open", `sync refused: ${reply.error.code}`);
      return;
    }
    if (reply.ok) this.repliesOk++;
    else this.repliesFailed++;
    this.onReply?.(reply, receivedAt, this);
  }

  #onEvents(raw: unknown, receivedAt: number): void {
    if (!this.#validatedPage) {
      const parsed = EventsFrameEnvelope.safeParse(raw);
      if (!parsed.success) return this.#fail("open", `invalid events frame: ${parsed.error.message}`);
      this.#validatedPage = true;
    }
    const frame = raw as EventsFrameEnvelope & { chatId: string };
    for (const event of frame.events) {
      this.#checkSeq(frame.chatId, event.seq);
      this.events++;
      if (event.type === "message") {
        this.messages++;
        this.onMessage?.(event.seq, String(event.clientId), receivedAt, this, frame.chatId);
      }
    }
  }

  #onReceipts(raw: unknown, receivedAt: number): void {
    if (!this.#validatedReceipts) {
      const parsed = ReceiptsFrame.safeParse(raw);
      if (!parsed.success) return this.#fail("open", `invalid receipts frame: ${parsed.error.message}`);
      this.#validatedReceipts = true;
    }
    const frame = raw as ReceiptsFrame;
    this.receiptFrames++;
    const known = this.receipts.get(frame.chatId);
    this.receipts.set(frame.chatId, {
      deliveredUpTo: Math.max(known?.deliveredUpTo ?? 0, frame.deliveredUpTo),
      seenUpTo: Math.max(known?.seenUpTo ?? 0, frame.seenUpTo),
    });
    this.onReceipts?.(frame, receivedAt, this);
  }

  #onPresence(raw: unknown, receivedAt: number): void {
    if (!this.#validatedPresence) {
      const parsed = PresenceFrame.safeParse(raw);
      if (!parsed.success) return this.#fail("open", `invalid presence frame: ${parsed.error.message}`);
      this.#validatedPresence = true;
    }
    this.presenceFrames++;
    this.onPresence?.((raw as PresenceFrame).presence, receivedAt, this);
  }

  #checkSeq(chatId: string, seq: number): void {
    const expected = this.expected.get(chatId);
    if (expected === undefined || seq === expected) {
      // A chat the device neither listed nor had announced (joined while live) starts here.
      this.expected.set(chatId, seq + 1);
    } else if (seq > expected) {
      this.gaps += seq - expected;
      this.expected.set(chatId, seq + 1);
    } else {
      this.duplicates++;
    }
  }
}

/**
 * Opens device streams `concurrency` at a time and waits until each is synced or failed
 * (setup, not measured: the storm has its own all-at-once opener).
 */
export async function openStreams(specs: readonly StreamSocketOptions[], concurrency = 50, timeoutMs = 30_000): Promise<StreamSocket[]> {
  const streams = await mapPool(specs, concurrency, async (spec) => {
    const stream = new StreamSocket(spec);
    await waitUntil(() => stream.isSynced || stream.failure !== null, timeoutMs, 5);
    return stream;
  });
  const failed = streams.filter((s) => s.failure !== null || !s.isSynced);
  if (failed.length > 0) {
    await Promise.all(streams.map((s) => s.close()));
    const samples = [...new Set(failed.map((s) => (s.failure ? `${s.failure.stage}: ${s.failure.detail}` : "not synced in time")))].slice(0, 3);
    throw new Error(`could not open ${failed.length} of ${streams.length} device streams: ${samples.join("; ")}`);
  }
  return streams;
}
