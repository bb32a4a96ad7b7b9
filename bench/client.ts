/**
 * The benchmark's client side: logging users in over the REST API (the SDK's
 * ApiClient), and `ChatSocket`, a chat WebSocket that checks order and counts what it
 * receives.
 */
import WebSocket from "ws";
import { ApiClient, ApiError, EventsFrameEnvelope, HistoryPage, ReadyFrame, ReceiptsFrame, ReplyFrame, type TokenResponse } from "../src/client/index.ts";
import { scanLiveMessage } from "./lib/frames.ts";

export type BenchUser = {
  userId: string;
  deviceId: string;
  credentials: string;
  /** performance.now() when `credentials` was issued: access tokens live 900 s at most. */
  issuedAt: number;
  /** The user's REST client, logged in (the Worker only: the bare server has no accounts). */
  api?: ApiClient;
};

// ---------------------------------------------------------------------------
// REST API

/** No REST call of the benchmark waits longer than this. */
const REQUEST_TIMEOUT_MS = 30_000;

/**
 * Makes the benchmark's REST clients. Every request carries its own
 * `cf-connecting-ip`: the OTP and login routes are limited per client IP (10 and 30
 * per minute), and wrangler dev passes the header through, so each simulated user
 * looks like a different phone on a different network.
 */
export class ServerApi {
  readonly baseUrl: string;
  #nextAddress = 1;

  constructor(baseUrl: string) {
    this.baseUrl = baseUrl;
  }

  /** A client address never used before in this run (10.0.0.1, 10.0.0.2, ...). */
  nextClientIp(): string {
    const n = this.#nextAddress++;
    return `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
  }

  /**
   * A REST client, logged out or with `session`. Its requests come from a new client
   * address each, or all from `clientIp` when given.
   */
  client(options: { session?: TokenResponse | null; clientIp?: string; fetch?: typeof fetch } = {}): ApiClient {
    const { session, clientIp, fetch: send = fetch } = options;
    return new ApiClient({
      baseUrl: this.baseUrl,
      fetch: (input, init) => send(input, { ...init, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) }),
      headers: clientIp ? { "cf-connecting-ip": clientIp } : () => ({ "cf-connecting-ip": this.nextClientIp() }),
      ...(session ? { session } : {}),
    });
  }

  /**
   * One history page of `user`'s, timed from the request to the last byte of the body;
   * parsing and validating happen after the clock stops (they are the client's cost).
   */
  async timedHistory(user: BenchUser, chatId: string, query: { before?: number; after?: number; limit?: number }): Promise<{ page: HistoryPage; ms: number }> {
    let ms = Number.NaN;
    const timed: typeof fetch = async (input, init) => {
      const startedAt = performance.now();
      const response = await fetch(input, init);
      const body = await response.arrayBuffer();
      ms = performance.now() - startedAt;
      return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
    };
    const page = await this.client({ session: user.api?.session, fetch: timed }).history(chatId, query);
    return { page, ms };
  }
}

/** Runs `fn` over `items` with at most `concurrency` calls in flight, keeping order. */
export async function mapPool<T, R>(items: readonly T[], concurrency: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return results;
}

/** Retries transient failures (5xx, network) a bounded number of times. */
export async function withRetries<T>(what: string, attempts: number, fn: () => Promise<T>): Promise<T> {
  let lastError: unknown;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      return await fn();
    } catch (error) {
      lastError = error;
      if (error instanceof ApiError && error.status < 500) break; // our mistake: retrying will not help
      await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
    }
  }
  throw new Error(`${what} failed: ${lastError instanceof Error ? lastError.message : String(lastError)}`);
}

/**
 * Valid phone numbers (the server refuses numbers its metadata calls invalid), unique
 * within a run: +1 415 NXX XXXX with NXX from 200 to 999, from a random start, so
 * 8 million in all (the per-phone resend interval is 30 s, so nobody logs in twice
 * with one number).
 */
export function phoneNumbers(): () => string {
  let counter = Math.floor(Math.random() * 7_000_000);
  return () => {
    counter += 1;
    const exchange = 200 + (Math.floor(counter / 10_000) % 800);
    return `+1415${exchange}${String(counter % 10_000).padStart(4, "0")}`;
  };
}

/** Logs one new user in: OTP request (the dev server returns the code), then login. */
export async function loginNewUser(api: ServerApi, phone: string): Promise<BenchUser> {
  const client = api.client();
  const otp = await withRetries("OTP request", 3, () => client.requestOtp(phone));
  if (!otp.devCode) throw new Error("the server returned no devCode: is DEV_MODE on?");
  const session = await withRetries("login", 3, () => client.login({ phone, code: otp.devCode!, attemptId: otp.attemptId, deviceName: "bench" }));
  return { userId: session.user.userId, deviceId: session.device.deviceId, credentials: session.credentials, issuedAt: performance.now(), api: client };
}

// ---------------------------------------------------------------------------
// Chat sockets

export type SocketFailure = { stage: "handshake" | "ready" | "resume" | "open"; detail: string };

export type ChatSocketOptions = {
  url: string;
  user: BenchUser;
  /** Called for every message event in seq order as it arrives, with the receive time. */
  onMessage?: (seq: number, clientId: string, receivedAt: number, socket: ChatSocket) => void;
  /** Called for every reply frame (acks of sends, answers to syncs). */
  onReply?: (reply: ReplyFrame, receivedAt: number, socket: ChatSocket) => void;
  /** Every `receipts` frame (the user's own messages moved), with the receive time. */
  onReceipts?: (frame: ReceiptsFrame, receivedAt: number, socket: ChatSocket) => void;
  /** The `after` the socket was opened with, when resuming. */
  after?: number;
  handshakeTimeoutMs?: number;
};

/**
 * One chat WebSocket. It stamps the handshake, the `ready` frame and the moment the
 * socket is current (caught up), answers catch-up pages with `sync`, and checks that
 * every event arrives once and in order: seqs must follow each other with no gap
 * from the first one the server promised (ready.headSeq + 1, or after + 1).
 */
export class ChatSocket {
  readonly user: BenchUser;
  readonly ws: WebSocket;
  readonly startedAt = performance.now();
  openedAt = Number.NaN;
  readyAt = Number.NaN;
  /** When the socket had every event up to the head it was told about (live after catch-up). */
  currentAt = Number.NaN;
  ready: ReadyFrame | null = null;
  /** The next seq this socket must see. */
  expectedSeq = Number.NaN;
  gaps = 0;
  duplicates = 0;
  messages = 0;
  pages = 0;
  pongs = 0;
  repliesOk = 0;
  repliesFailed = 0;
  /** The user's own messages' status as last told (the `ready` frame, then `receipts` frames). */
  deliveredUpTo = 0;
  seenUpTo = 0;
  receiptFrames = 0;
  /** Replies to this socket's `delivered` and `read` reports (not counted in repliesOk/repliesFailed). */
  receiptRepliesOk = 0;
  receiptRepliesFailed = 0;
  /** Reports what this socket receives, when set (see ReceiptReporter). */
  reporter: ReceiptReporter | null = null;
  failure: SocketFailure | null = null;
  closed: { code: number; reason: string } | null = null;
  onMessage: ChatSocketOptions["onMessage"];
  onReply: ChatSocketOptions["onReply"];
  onReceipts: ChatSocketOptions["onReceipts"];
  #validatedPage = false;
  #validatedReceipts = false;
  #syncs = 0;
  #reports = 0;
  #requests = 0;
  readonly #pending = new Map<string, (reply: ReplyFrame) => void>();

  constructor(options: ChatSocketOptions) {
    this.user = options.user;
    this.onMessage = options.onMessage;
    this.onReply = options.onReply;
    this.onReceipts = options.onReceipts;
    if (options.after !== undefined) this.expectedSeq = options.after + 1;
    this.ws = new WebSocket(options.url, {
      headers: { authorization: `Bearer ${options.user.credentials}` },
      perMessageDeflate: false,
      // The servers send valid UTF-8 JSON; skipping the check keeps the receive path cheap.
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
      if (Number.isNaN(this.readyAt)) this.#fail("ready", `closed ${code} ${reason.toString()} before ready`);
    });
  }

  get isReady(): boolean {
    return !Number.isNaN(this.readyAt);
  }

  get isCurrent(): boolean {
    return !Number.isNaN(this.currentAt);
  }

  /** The last seq seen in order. */
  get lastSeq(): number {
    return this.expectedSeq - 1;
  }

  send(frame: object | string): void {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  sendMessage(id: string, clientId: string, body: string): void {
    // Hand-built: the same bytes JSON.stringify would give, without the object.
    this.ws.send(`{"type":"send","id":"${id}","clientId":"${clientId}","body":${JSON.stringify(body)}}`);
  }

  /** A `delivered` or `read` report (SEEN) up to `seq`; its reply is counted in receiptReplies*. */
  sendReceipt(kind: "delivered" | "read", seq: number): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(`{"type":"${kind}","id":"${RECEIPT_REPLY_PREFIX}${++this.#reports}","seq":${seq}}`);
  }

  /** Sends a frame (its `id` added) and waits for its reply (bounded: null on timeout). */
  request(frame: Record<string, unknown>, timeoutMs = 10_000): Promise<ReplyFrame | null> {
    const id = `${REQUEST_PREFIX}${++this.#requests}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        resolve(null);
      }, timeoutMs);
      this.#pending.set(id, (reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
      this.send({ ...frame, id });
    });
  }

  /** Closes and waits (bounded) for the close handshake, then drops the TCP connection. */
  async close(timeoutMs = 2_000): Promise<void> {
    this.reporter?.stop();
    if (this.ws.readyState === WebSocket.CLOSED) return;
    const closed = new Promise<void>((resolve) => this.ws.once("close", () => resolve()));
    try {
      if (this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
      else this.ws.close(1000, "bench done");
    } catch {
      this.ws.terminate();
    }
    const timer = new Promise<void>((resolve) => setTimeout(resolve, timeoutMs));
    await Promise.race([closed, timer]);
    if ((this.ws.readyState as number) !== WebSocket.CLOSED) this.ws.terminate(); // (it changed while we waited)
  }

  #fail(stage: SocketFailure["stage"], detail: string): void {
    this.failure ??= { stage, detail };
  }

  #receive(data: Buffer, isBinary: boolean): void {
    const receivedAt = performance.now();
    if (isBinary) return this.#fail("open", "binary frame from the server");
    const live = scanLiveMessage(data);
    if (live !== null && this.isCurrent) {
      this.#checkSeq(live.seq);
      this.messages++;
      this.onMessage?.(live.seq, live.clientId, receivedAt, this);
      this.reporter?.received(live.seq);
      return;
    }
    const text = data.toString();
    if (text === "pong") {
      this.pongs++;
      return;
    }
    let frame: { type?: string };
    try {
      frame = JSON.parse(text) as { type?: string };
    } catch {
      return this.#fail("open", `not JSON: ${text.slice(0, 80)}`);
    }
    switch (frame.type) {
      case "ready":
        return this.#onReady(frame, receivedAt);
      case "events":
        return this.#onEvents(frame, receivedAt);
      case "receipts":
        return this.#onReceipts(frame, receivedAt);
      case "reply": {
        const reply = frame as ReplyFrame;
        if (reply.id.startsWith(RECEIPT_REPLY_PREFIX)) {
          if (reply.ok) this.receiptRepliesOk++;
          else this.receiptRepliesFailed++;
          return;
        }
        if (reply.id.startsWith(REQUEST_PREFIX)) {
          this.#pending.get(reply.id)?.(reply);
          this.#pending.delete(reply.id);
          return;
        }
        if (reply.ok) this.repliesOk++;
        else this.repliesFailed++;
        this.onReply?.(reply, receivedAt, this);
        return;
      }
      default:
        return this.#fail("open", `unexpected frame: ${text.slice(0, 200)}`);
    }
  }

  #onReady(raw: unknown, receivedAt: number): void {
    // Validated in full: one per socket, and it sets the cursor every check depends on.
    const parsed = ReadyFrame.safeParse(raw);
    if (!parsed.success) return this.#fail("ready", `invalid ready frame: ${parsed.error.message}`);
    this.ready = parsed.data;
    this.readyAt = receivedAt;
    this.deliveredUpTo = parsed.data.deliveredUpTo;
    this.seenUpTo = parsed.data.seenUpTo;
    if (Number.isNaN(this.expectedSeq)) this.expectedSeq = parsed.data.headSeq + 1;
    if (!parsed.data.catchingUp) this.currentAt = receivedAt;
  }

  #onEvents(raw: unknown, receivedAt: number): void {
    // The first full events frame of each socket is checked against the schema (read
    // as envelopes, as clients must: event types a newer server adds still count for
    // the order check); the rest are trusted (live ones never get here: scanLiveMessage).
    if (!this.#validatedPage) {
      const parsed = EventsFrameEnvelope.safeParse(raw);
      if (!parsed.success) return this.#fail("open", `invalid events frame: ${parsed.error.message}`);
      this.#validatedPage = true;
    }
    const frame = raw as EventsFrameEnvelope;
    if (!this.isCurrent) this.pages++;
    let newestMessage = 0;
    for (const event of frame.events) {
      this.#checkSeq(event.seq);
      if (event.type === "message") {
        this.messages++;
        newestMessage = event.seq;
        this.onMessage?.(event.seq, String(event.clientId), receivedAt, this);
      }
    }
    if (newestMessage > 0) this.reporter?.received(newestMessage);
    if (frame.more) {
      this.send({ type: "sync", id: `sync-${++this.#syncs}` });
    } else if (!this.isCurrent) {
      this.currentAt = receivedAt;
    }
  }

  #onReceipts(raw: unknown, receivedAt: number): void {
    // The first is checked against the schema; the rest are trusted.
    if (!this.#validatedReceipts) {
      const parsed = ReceiptsFrame.safeParse(raw);
      if (!parsed.success) return this.#fail("open", `invalid receipts frame: ${parsed.error.message}`);
      this.#validatedReceipts = true;
    }
    const frame = raw as ReceiptsFrame;
    this.receiptFrames++;
    // Watermarks never go down: keep the highest seen.
    if (frame.deliveredUpTo > this.deliveredUpTo) this.deliveredUpTo = frame.deliveredUpTo;
    if (frame.seenUpTo > this.seenUpTo) this.seenUpTo = frame.seenUpTo;
    this.onReceipts?.(frame, receivedAt, this);
  }

  #checkSeq(seq: number): void {
    if (Number.isNaN(this.expectedSeq)) {
      this.#fail("open", "an event arrived before the ready frame");
      this.expectedSeq = seq + 1;
      return;
    }
    if (seq === this.expectedSeq) {
      this.expectedSeq++;
    } else if (seq > this.expectedSeq) {
      this.gaps += seq - this.expectedSeq;
      this.expectedSeq = seq + 1;
    } else {
      this.duplicates++; // already seen (or out of order, which for one log is the same fault)
    }
  }
}

const RECEIPT_REPLY_PREFIX = "rcpt-";
const REQUEST_PREFIX = "q-";

/**
 * Reports what a chat socket receives the way the SDK is to: `delivered` and `read` up
 * to the newest message received (the benchmark's reader reads every message as it
 * arrives), at most one report of each per `intervalMs` per chat and device. The
 * first message after a quiet interval is reported at once; the ones that arrive
 * within the interval are reported together at its end.
 */
export class ReceiptReporter {
  readonly #socket: ChatSocket;
  readonly #intervalMs: number;
  #enabled: boolean;
  #received = 0;
  #reported = 0;
  #lastReportAt = -Infinity;
  #timer: NodeJS.Timeout | null = null;
  /** Reports sent (each a `delivered` and a `read` frame). */
  reports = 0;

  constructor(socket: ChatSocket, options: { intervalMs: number; enabled: boolean }) {
    this.#socket = socket;
    this.#intervalMs = options.intervalMs;
    this.#enabled = options.enabled;
    socket.reporter = this;
  }

  /** The newest seq reported as read. */
  get reportedSeq(): number {
    return this.#reported;
  }

  /** Reports from now on (the messages received meanwhile included). */
  enable(): void {
    this.#enabled = true;
    if (this.#received > this.#reported) this.#schedule();
  }

  received(seq: number): void {
    if (seq <= this.#received) return;
    this.#received = seq;
    if (this.#enabled) this.#schedule();
  }

  stop(): void {
    this.#enabled = false;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #schedule(): void {
    if (this.#timer) return;
    const waitMs = this.#lastReportAt + this.#intervalMs - performance.now();
    if (waitMs <= 0) return this.#report();
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (this.#enabled) this.#report();
    }, waitMs);
  }

  #report(): void {
    const seq = this.#received;
    if (seq <= this.#reported) return;
    this.#lastReportAt = performance.now();
    this.#reported = seq;
    this.reports++;
    this.#socket.sendReceipt("delivered", seq);
    this.#socket.sendReceipt("read", seq);
  }
}

/** What the order and loss checks count on a socket (a chat socket or a device stream). */
export type CheckedSocket = { gaps: number; duplicates: number; failure: SocketFailure | null };

/** Order and loss counters summed over sockets. */
export function integrityOf(sockets: readonly CheckedSocket[]): { gaps: number; duplicates: number; failures: number; failureSamples: string[] } {
  let gaps = 0;
  let duplicates = 0;
  const failed: string[] = [];
  for (const socket of sockets) {
    gaps += socket.gaps;
    duplicates += socket.duplicates;
    if (socket.failure) failed.push(`${socket.failure.stage}: ${socket.failure.detail}`);
  }
  return { gaps, duplicates, failures: failed.length, failureSamples: [...new Set(failed)].slice(0, 3) };
}

/** Closes many sockets, a bounded number at a time. */
export async function closeAll(sockets: readonly { close(): Promise<void> }[]): Promise<void> {
  await mapPool(sockets, 200, (socket) => socket.close());
}
