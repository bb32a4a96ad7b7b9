import ReconnectingWebSocket from "partysocket/ws";
import {
  ChatEvent,
  CloseCode,
  EventsFrameEnvelope,
  Heartbeat,
  ServerFrame,
  shouldReconnect,
  type ErrorBody,
  type ReplyFrame,
  type EventEnvelope,
  type SendResult,
} from "../protocol/index.ts";
import { ApiError, type ApiClient } from "./api-client.ts";
import { Outbox } from "./outbox.ts";

export type ConnectionStatus = "connecting" | "catching-up" | "live" | "closed";

export type ChatConnectionOptions = {
  api: ApiClient;
  chatId: string;
  /** The last seq this client has: every later event is delivered, in order, once. */
  after?: number;
  /** A WebSocket constructor (defaults to the global one: browsers, Node 22+). */
  WebSocket?: unknown;
  /** Heartbeat interval; the connection is replaced after two without an answer. */
  heartbeatMs?: number;
};

type Listeners = {
  event: (event: ChatEvent) => void;
  status: (status: ConnectionStatus) => void;
  /** Error frames and frames the SDK could not read. */
  error: (error: ErrorBody) => void;
  /** The server closed the connection for good (4000-4499): the code says why. */
  closed: (code: number, reason: string) => void;
};

/**
 * One open chat: a reconnecting socket that resumes from the last seq it delivered,
 * pages through catch-up, delivers every event exactly once in seq order, and sends
 * through an ordered, idempotent outbox.
 *
 * @example
 * const chat = new ChatConnection({ api, chatId, after: lastSeqOnDisk });
 * chat.on("event", (event) => render(event));
 * chat.connect();
 * await chat.send("hello");
 */
export class ChatConnection {
  readonly chatId: string;
  readonly #api: ApiClient;
  readonly #options: ChatConnectionOptions;
  readonly #outbox: Outbox;
  readonly #listeners: { [K in keyof Listeners]: Set<Listeners[K]> } = {
    event: new Set(),
    status: new Set(),
    error: new Set(),
    closed: new Set(),
  };
  #socket: ReconnectingWebSocket | null = null;
  #cursor: number | undefined;
  /** Who this connection is signed in as (from the `ready` frame). */
  #userId: string | undefined;
  #status: ConnectionStatus = "closed";
  #heartbeat: ReturnType<typeof setInterval> | null = null;
  #lastHeardAt = 0;
  #syncCounter = 0;

  constructor(options: ChatConnectionOptions) {
    this.chatId = options.chatId;
    this.#api = options.api;
    this.#options = options;
    this.#cursor = options.after;
    this.#outbox = new Outbox((frame) => this.#transmit(JSON.stringify(frame)));
  }

  /** The seq of the last event delivered (undefined before the first connection). */
  get cursor(): number | undefined {
    return this.#cursor;
  }

  get status(): ConnectionStatus {
    return this.#status;
  }

  /** Messages waiting for their SENT ack. */
  get pendingSends(): number {
    return this.#outbox.size;
  }

  on<K extends keyof Listeners>(type: K, listener: Listeners[K]): () => void {
    this.#listeners[type].add(listener);
    return () => this.#listeners[type].delete(listener);
  }

  connect(): void {
    if (this.#socket) return;
    this.#setStatus("connecting");
    const socket = new ReconnectingWebSocket(
      () => this.#api.socketUrl(this.chatId, this.#cursor),
      async () => ["chat.v1", `bearer.${await this.#credentials()}`],
      {
        WebSocket: this.#options.WebSocket,
        minReconnectionDelay: 200 + Math.random() * 800, // jitter: a herd does not return at once
        maxReconnectionDelay: 15_000,
        connectionTimeout: 10_000,
        maxEnqueuedMessages: 0, // the outbox resends; nothing else is worth replaying
        shouldReconnectOnClose: (event) => this.#shouldReconnect(event.code, event.reason),
      },
    );
    socket.addEventListener("message", (event) => this.#receive(String(event.data)));
    socket.addEventListener("close", () => {
      this.#outbox.disconnected();
      if (this.#status !== "closed") this.#setStatus("connecting");
    });
    this.#socket = socket;
    this.#startHeartbeat();
  }

  /** Queues a message; resolves with its SENT ack (seq, id, time). */
  send(body: string, options: { replyToSeq?: number; clientId?: string } = {}): Promise<SendResult> {
    return this.#outbox.enqueue(body, options);
  }

  /** Drops the socket and resumes on a new one (for example after the network changed). */
  reconnect(): void {
    this.#socket?.reconnect(CloseCode.normal, "client reconnect");
  }

  /** Closes the connection; it does not reconnect. Waiting sends are rejected. */
  close(): void {
    this.#stop();
    this.#outbox.failAll({ code: "unavailable", message: "the connection was closed", retryable: true });
  }

  #receive(text: string): void {
    this.#lastHeardAt = Date.now();
    if (text === Heartbeat.response) return;
    let frame: ServerFrame | EventsFrameEnvelope;
    try {
      const raw = JSON.parse(text) as { type?: unknown };
      // Events are read leniently so a newer server's event types cannot stall the stream.
      frame = raw.type === "events" ? EventsFrameEnvelope.parse(raw) : ServerFrame.parse(raw);
    } catch {
      return this.#emit("error", { code: "internal", message: "unreadable frame from the server", retryable: false });
    }
    switch (frame.type) {
      case "ready":
        this.#userId = frame.userId;
        this.#cursor ??= frame.headSeq;
        this.#setStatus(frame.catchingUp ? "catching-up" : "live");
        this.#outbox.connected();
        return;
      case "events":
        return this.#deliver(frame.events, frame.more);
      case "reply":
        if (frame.id.startsWith("sync")) return this.#syncAnswered(frame);
        this.#outbox.handleReply(frame);
        return;
      case "error":
        return this.#emit("error", frame.error);
    }
  }

  #deliver(events: EventEnvelope[], more: boolean): void {
    for (const event of events) {
      const cursor = this.#cursor ?? event.seq - 1;
      if (event.seq <= cursor) continue; // already delivered (a resend after reconnect)
      if (event.seq !== cursor + 1 && !this.#startsMyPeriod(event)) {
        // Never expected from the server; resuming from the cursor repairs it.
        this.#socket?.reconnect(CloseCode.normal, "gap");
        return;
      }
      this.#cursor = event.seq;
      const known = ChatEvent.safeParse(event);
      if (known.success) this.#emit("event", known.data); // unknown types are skipped, not a gap
    }
    if (more) this.#requestNextPage();
    else this.#setStatus("live");
  }

  /**
   * Between two of this user's membership periods the server sends nothing: the next
   * event after a period is the `member.added` that starts the following one.
   */
  #startsMyPeriod(event: EventEnvelope): boolean {
    const known = ChatEvent.safeParse(event);
    return known.success && known.data.type === "member.added" && known.data.members.some((member) => member.userId === this.#userId);
  }

  #requestNextPage(): void {
    this.#transmit(JSON.stringify({ type: "sync", id: `sync${++this.#syncCounter}` }));
  }

  /** The server paces catch-up: a refused `sync` is sent again when it says. */
  #syncAnswered(reply: ReplyFrame): void {
    if (reply.ok) return;
    if (!reply.error.retryable) return this.#emit("error", reply.error);
    const socket = this.#socket;
    setTimeout(() => {
      if (this.#socket === socket && this.#status === "catching-up") this.#requestNextPage();
    }, reply.error.retryAfterMs ?? 1000);
  }

  /**
   * The access token for the next connection. When getting one needs a refresh that
   * the server refuses for good (unknown or reused refresh token, device logged out),
   * no connection can succeed: stop, as a 4001 or 4009 close would.
   */
  async #credentials(): Promise<string> {
    try {
      return await this.#api.accessToken();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        const code = error.code === "device_revoked" ? CloseCode.deviceRevoked : CloseCode.unauthorized;
        queueMicrotask(() => {
          if (this.#status !== "closed") this.#finalClose(code, error.code);
        });
      }
      throw error;
    }
  }

  #shouldReconnect(code: number, reason: string): boolean {
    if (this.#status === "closed") return false;
    if (shouldReconnect(code)) return true;
    if (code === CloseCode.unauthorized) {
      // The token was refused: refresh it once, then try again.
      this.#api.refresh().then(
        () => this.#socket?.reconnect(),
        () => this.#finalClose(code, reason),
      );
      return false;
    }
    this.#finalClose(code, reason);
    return false;
  }

  #finalClose(code: number, reason: string): void {
    this.#stop();
    this.#outbox.failAll({ code: "unavailable", message: `the server closed the chat: ${reason || code}`, retryable: false });
    this.#emit("closed", code, reason);
  }

  #stop(): void {
    this.#setStatus("closed");
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#heartbeat = null;
    this.#socket?.close(CloseCode.normal, "client closed");
    this.#socket = null;
  }

  #startHeartbeat(): void {
    const interval = this.#options.heartbeatMs ?? 30_000;
    this.#lastHeardAt = Date.now();
    this.#heartbeat = setInterval(() => {
      if (this.#socket?.readyState !== ReconnectingWebSocket.OPEN) return;
      if (Date.now() - this.#lastHeardAt > 2 * interval) {
        this.#lastHeardAt = Date.now();
        this.#socket.reconnect(CloseCode.normal, "heartbeat timeout");
        return;
      }
      this.#socket.send(Heartbeat.request);
    }, interval);
  }

  #transmit(text: string): boolean {
    const socket = this.#socket;
    if (!socket || socket.readyState !== ReconnectingWebSocket.OPEN) return false;
    return socket.send(text);
  }

  #setStatus(status: ConnectionStatus): void {
    if (this.#status === status) return;
    this.#status = status;
    this.#emit("status", status);
  }

  #emit<K extends keyof Listeners>(type: K, ...args: Parameters<Listeners[K]>): void {
    for (const listener of this.#listeners[type]) (listener as (...a: Parameters<Listeners[K]>) => void)(...args);
  }
}
