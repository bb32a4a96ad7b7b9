import ReconnectingWebSocket from "partysocket/ws";
import {
  ChatEvent,
  CloseCode,
  EventsFrameEnvelope,
  Heartbeat,
  MessageStatus,
  ServerFrame,
  shouldReconnect,
  SendResult,
  type AttachmentInput,
  type DeleteFrame,
  type DeleteResult,
  type DeleteScope,
  type ErrorBody,
  type HiddenMessage,
  type ReplyFrame,
  type EventEnvelope,
  type SendFrame,
  type ClientFrame,
  type ChatSummary,
  type TypingState,
} from "../protocol/index.ts";
import type { ApiClient } from "./api-client.ts";
import { CursorStore } from "./cursor-store.ts";
import { ConnectionLost, Outbox, SendError, sendFields, type OutboxMessage, type OutgoingMessage, type SendTransport } from "./outbox.ts";
import { deleteResultOf, deletionsIn, hiddenEntryOf, type MessageDeletion } from "./message-deletes.ts";
import { DeliveryReports } from "./delivery-reports.ts";
import { StreamRequestError } from "./device-stream.ts";
import { ReceiptBook, type ChatReceipts } from "./receipt-book.ts";
import { TypingIndicators, TypingReporter } from "./typing.ts";
import { HeartbeatWatch, refreshThenReconnect, Retries, sessionEnded, type Refreshable } from "./retry.ts";

export type ConnectionStatus = "connecting" | "catching-up" | "live" | "closed";

export type ChatConnectionOptions = {
  api: ApiClient;
  chatId: string;
  /** The last seq this client has: every later event is delivered, in order, once. */
  after?: number;
  /**
   * The account's cursors, shared with its other connections (the device stream, other
   * chats): the socket resumes from the chat's cursor there, and an event another
   * connection already delivered is not delivered again. Default: a store of its own.
   * With a shared store, `after` only sets a cursor the store does not have yet.
   */
  cursors?: CursorStore;
  /**
   * The account's outbox, shared with its other connections: this socket sends the
   * chat's messages while it is open, others (or REST) when it is not, and closing this
   * connection leaves them waiting. Default: an outbox of its own over this socket and
   * REST, whose waiting messages are rejected when the connection closes.
   */
  outbox?: Outbox;
  /** A WebSocket constructor (defaults to the global one: browsers, Node 22+). */
  WebSocket?: unknown;
  /** Heartbeat interval; the connection is replaced after two without an answer. */
  heartbeatMs?: number;
};

type Listeners = {
  event: (event: ChatEvent) => void;
  /** The user's own messages moved: DELIVERED up to `deliveredUpTo`, SEEN up to `seenUpTo` (see `statusOf`). */
  receipts: (receipts: ChatReceipts) => void;
  /** The members typing now (empty: nobody). */
  typing: (userIds: string[]) => void;
  status: (status: ConnectionStatus) => void;
  /** Error frames and frames the SDK could not read. */
  error: (error: ErrorBody) => void;
  /** The server closed the connection for good (4000-4499): the code says why. */
  closed: (code: number, reason: string) => void;
  /** A message was deleted for everyone (after its `message.deleted` event): redraw its bubble as deleted. */
  deleted: (deletion: MessageDeletion) => void;
  /** This connection hid a message for the account (`deleteMessage(seq, "me")`); other devices learn it on their streams. */
  hidden: (entries: HiddenMessage[]) => void;
};

/**
 * One open chat: a reconnecting socket that resumes from the last seq it delivered,
 * pages through catch-up, delivers every event exactly once in seq order, and sends
 * through an ordered, idempotent outbox. For every chat of an account on one socket,
 * see DeviceStream; both can share a CursorStore and an Outbox.
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
  readonly #cursors: CursorStore;
  readonly #outbox: Outbox;
  /** Whether the outbox is this connection's own (its messages end with the connection). */
  readonly #ownOutbox: boolean;
  /** How the outbox sends on this socket. */
  readonly #transport: SendTransport = {
    canSend: (chatId) => chatId === this.chatId && this.#ready && this.#socket?.readyState === ReconnectingWebSocket.OPEN,
    send: (message) => this.#sendFrame(message),
  };
  #detachOutbox: (() => void) | null = null;
  /** Sends on the current socket waiting for their reply, by frame id. */
  readonly #sends = new Map<string, { resolve: (result: SendResult) => void; reject: (error: unknown) => void }>();
  readonly #listeners: { [K in keyof Listeners]: Set<Listeners[K]> } = {
    event: new Set(),
    receipts: new Set(),
    typing: new Set(),
    status: new Set(),
    error: new Set(),
    closed: new Set(),
    deleted: new Set(),
    hidden: new Set(),
  };
  #socket: ReconnectingWebSocket | null = null;
  /** Who this connection is signed in as (from the `ready` frame). */
  #userId: string | undefined;
  #status: ConnectionStatus = "closed";
  readonly #heartbeat = new HeartbeatWatch(() => this.#socket, () => this.#options.heartbeatMs ?? 30_000);
  /** Other requests on the current socket (receipts, status, typing) waiting for their reply. */
  readonly #requests = new Map<string, { resolve: (result: unknown) => void; reject: (error: unknown) => void }>();
  #requestCounter = 0;
  readonly #receipts = new ReceiptBook();
  readonly #deliveryReports = new DeliveryReports((_chatId, seq) => this.#request({ type: "delivered", id: "", seq }, () => this.#api.reportDelivered(this.chatId, seq)));
  readonly #typingIn = new TypingIndicators((_chatId, userIds) => this.#emit("typing", userIds));
  readonly #typingOut = new TypingReporter((_chatId, state) => this.#typingFrame(state));
  #syncCounter = 0;
  #sendCounter = 0;
  /** Whether the current socket said `ready`: sends may go on it. */
  #ready = false;
  /** The connection's own retries (a refresh), cancelled when it stops. */
  readonly #retries = new Retries();
  /** What the token refresh needs of this connection. */
  readonly #refreshable: Refreshable = {
    refresh: () => this.#api.refresh(),
    retries: this.#retries,
    stopped: () => this.#status === "closed",
    reconnect: () => this.#socket?.reconnect(),
    end: (code, reason) => this.#finalClose(code, reason),
  };

  constructor(options: ChatConnectionOptions) {
    this.chatId = options.chatId;
    this.#api = options.api;
    this.#options = options;
    this.#cursors = options.cursors ?? new CursorStore();
    if (options.after !== undefined && this.#cursors.get(this.chatId) === undefined) this.#cursors.set(this.chatId, options.after);
    this.#ownOutbox = !options.outbox;
    this.#outbox = options.outbox ?? new Outbox({ api: options.api });
  }

  /** The seq of the last event delivered (undefined before the first connection). */
  get cursor(): number | undefined {
    return this.#cursors.get(this.chatId);
  }

  get status(): ConnectionStatus {
    return this.#status;
  }

  /** Messages of this chat waiting for their SENT ack. */
  get pendingSends(): number {
    return this.#outbox.pending(this.chatId).length;
  }

  on<K extends keyof Listeners>(type: K, listener: Listeners[K]): () => void {
    this.#listeners[type].add(listener);
    return () => this.#listeners[type].delete(listener);
  }

  connect(): void {
    if (this.#socket) return;
    this.#setStatus("connecting");
    // After the device stream, before REST.
    this.#detachOutbox = this.#outbox.attach(this.#transport, 1);
    const socket = new ReconnectingWebSocket(
      () => this.#api.socketUrl(this.chatId, this.cursor),
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
      this.#lostSends();
      if (this.#status !== "closed") this.#setStatus("connecting");
    });
    this.#socket = socket;
    this.#heartbeat.start();
  }

  /**
   * Queues a message in the outbox; resolves with its SENT ack (seq, id, time). It goes
   * on this socket when open, else on another transport of the outbox (REST).
   */
  send(body: string, options: { replyToSeq?: number; clientId?: string; attachments?: AttachmentInput[] } = {}): Promise<SendResult> {
    return this.#outbox.send(this.chatId, body, options);
  }

  /** Queues a message of text, files (from `api.uploadMedia`; `body` is their caption) or both, as `send` does. */
  sendMessage(message: OutgoingMessage): Promise<SendResult> {
    return this.#outbox.sendMessage(this.chatId, message);
  }

  /**
   * Deletes the message at `seq`: for everyone (its sender within the delete window, or
   * a group admin) or for the account only (recorded in the cursor store as hidden, and
   * announced by the `hidden` event). On this socket when open, else over REST. Rejects
   * with a StreamRequestError (or an ApiError over REST) when refused.
   */
  async deleteMessage(seq: number, scope: DeleteScope): Promise<DeleteResult> {
    const frame: DeleteFrame = { type: "delete", id: "", seq, for: scope };
    const result = deleteResultOf(await this.#request(frame, () => this.#api.deleteMessage(this.chatId, seq, scope)));
    const entry = hiddenEntryOf(result);
    const fresh = entry ? this.#cursors.hide([entry]) : [];
    if (fresh.length > 0) this.#emit("hidden", fresh);
    return result;
  }

  /**
   * The user read the chat up to `seq` (SEEN for the senders; the unread count clears on
   * every device). On this socket when open, else over REST.
   */
  async markRead(seq: number): Promise<void> {
    await this.#request({ type: "read", id: "", seq }, () => this.#api.markRead(this.chatId, seq));
  }

  /** The status of the user's own message at `seq`, as last heard (live, no request). */
  statusOf(seq: number): "sent" | "delivered" | "seen" {
    return this.#receipts.statusOf(this.chatId, seq);
  }

  /** Asks the server for one of the user's own messages' status, with the detail per recipient in chats up to 256 members. */
  async messageStatus(seq: number): Promise<MessageStatus> {
    return MessageStatus.parse(await this.#request({ type: "status", id: "", seq }, () => this.#api.messageStatus(this.chatId, seq)));
  }

  /** The user typed: call on each keystroke (throttled; `paused` follows a pause). */
  typing(): void {
    this.#typingOut.typing(this.chatId);
  }

  /** The user stopped typing (sent, or left the screen). */
  stopTyping(): void {
    this.#typingOut.stop(this.chatId);
  }

  /** Who is typing now. */
  get typingNow(): string[] {
    return this.#typingIn.typing(this.chatId);
  }

  /** Drops the socket and resumes on a new one (for example after the network changed). */
  reconnect(): void {
    this.#socket?.reconnect(CloseCode.normal, "client reconnect");
  }

  /**
   * Closes the connection; it does not reconnect. Waiting sends are rejected, unless
   * the outbox is shared (then another connection or REST sends them).
   */
  close(): void {
    this.#stop();
    if (this.#ownOutbox) this.#outbox.discard(this.chatId, { code: "unavailable", message: "the connection was closed", retryable: true });
  }

  #receive(text: string): void {
    this.#heartbeat.heard();
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
        // Without a cursor the socket opened live at the head: the app starts there.
        if (this.cursor === undefined) this.#cursors.set(this.chatId, frame.headSeq);
        this.#setStatus(frame.catchingUp ? "catching-up" : "live");
        this.#ready = true;
        this.#mergeReceipts(frame);
        this.#outbox.wake();
        return;
      case "events":
        return this.#deliver(frame.events, frame.more);
      case "receipts":
        return this.#mergeReceipts(frame);
      case "typing":
        return this.#typingIn.notice(frame);
      case "reply":
        if (frame.id.startsWith("sync")) return this.#syncAnswered(frame);
        if (frame.id.startsWith("q")) return this.#requestAnswered(frame);
        return this.#sendAnswered(frame);
      case "error":
        return this.#emit("error", frame.error);
    }
  }

  #deliver(events: EventEnvelope[], more: boolean): void {
    // Already delivered events (a resend after reconnect, or brought by another connection) are dropped.
    const fresh = this.#cursors.accept(this.chatId, events, this.#userId === undefined ? {} : { userId: this.#userId });
    const known: ChatEvent[] = [];
    for (const event of fresh) {
      const parsed = ChatEvent.safeParse(event);
      if (parsed.success) known.push(parsed.data); // unknown types are skipped, not a gap
    }
    this.#typingIn.received(this.chatId, known);
    for (const event of known) this.#emit("event", event);
    for (const deletion of deletionsIn(this.chatId, known)) this.#emit("deleted", deletion);
    this.#deliveryReports.received(this.chatId, known, this.#userId);
    const last = events.at(-1);
    if (last && (this.cursor ?? 0) < last.seq) {
      // A gap: never expected from the server; resuming from the cursor repairs it.
      this.#socket?.reconnect(CloseCode.normal, "gap");
      return;
    }
    if (more) this.#requestNextPage();
    else this.#setStatus("live");
  }

  /** One attempt of the outbox's on this socket: resolves with the ack. */
  #sendFrame(message: OutboxMessage): Promise<SendResult> {
    return new Promise((resolve, reject) => {
      const id = `m${++this.#sendCounter}`;
      const frame: SendFrame = { type: "send", id, ...sendFields(message) };
      this.#sends.set(id, { resolve, reject });
      if (!this.#transmit(JSON.stringify(frame))) {
        this.#sends.delete(id);
        reject(new ConnectionLost("the chat socket is not open"));
      }
    });
  }

  #sendAnswered(reply: ReplyFrame): void {
    const pending = this.#sends.get(reply.id);
    if (!pending) return;
    this.#sends.delete(reply.id);
    if (!reply.ok) return pending.reject(new SendError(reply.error));
    const result = SendResult.safeParse(reply.result);
    if (result.success) pending.resolve(result.data);
    else pending.reject(new ConnectionLost("unreadable acknowledgement"));
  }

  #mergeReceipts(receipts: ChatReceipts | ChatSummary): void {
    if (this.#receipts.merge(this.chatId, receipts)) this.#emit("receipts", this.#receipts.get(this.chatId)!);
  }

  /**
   * A request answered by a reply, on this socket when it is ready; otherwise (or if the
   * socket goes first) by `fallback`, over REST.
   */
  async #request(frame: Extract<ClientFrame, { type: "delivered" | "read" | "status" | "typing" }> | DeleteFrame, fallback: () => Promise<unknown>): Promise<unknown> {
    if (this.#ready) {
      const id = `q${++this.#requestCounter}`;
      try {
        return await new Promise((resolve, reject) => {
          this.#requests.set(id, { resolve, reject });
          if (!this.#transmit(JSON.stringify({ ...frame, id }))) {
            this.#requests.delete(id);
            reject(new ConnectionLost("the chat socket is not open"));
          }
        });
      } catch (error) {
        if (!(error instanceof ConnectionLost)) throw error;
      }
    }
    return fallback();
  }

  #requestAnswered(reply: ReplyFrame): void {
    const pending = this.#requests.get(reply.id);
    if (!pending) return;
    this.#requests.delete(reply.id);
    if (reply.ok) pending.resolve(reply.result);
    else pending.reject(new StreamRequestError(reply.error));
  }

  /** A typing indicator goes on the socket only (ephemeral). */
  #typingFrame(state: TypingState): Promise<unknown> {
    if (!this.#ready) return Promise.resolve();
    return this.#request({ type: "typing", id: "", state }, () => Promise.resolve());
  }

  /** The socket closed: sends waiting for a reply on it go again, elsewhere or on the next socket. */
  #lostSends(): void {
    this.#ready = false;
    const lostRequests = [...this.#requests.values()];
    this.#requests.clear();
    for (const pending of lostRequests) pending.reject(new ConnectionLost());
    const lost = [...this.#sends.values()];
    this.#sends.clear();
    for (const pending of lost) pending.reject(new ConnectionLost());
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
      const ended = sessionEnded(error);
      if (ended) {
        queueMicrotask(() => {
          if (this.#status !== "closed") this.#finalClose(ended.code, ended.reason);
        });
      }
      throw error;
    }
  }

  #shouldReconnect(code: number, reason: string): boolean {
    if (this.#status === "closed") return false;
    if (shouldReconnect(code)) return true;
    if (code === CloseCode.unauthorized) {
      refreshThenReconnect(this.#refreshable);
      return false;
    }
    if (code === CloseCode.badRequest && reason === "invalid_cursor") {
      this.#repairCursor(code, reason);
      return false;
    }
    this.#finalClose(code, reason);
    return false;
  }

  /**
   * The server refused the cursor: it is past the chat's head (the server's data was
   * reset, or the store came from elsewhere). The chat's head is asked once; a cursor
   * past it is brought back to it (the store believed it had everything up to the
   * cursor, so it has everything up to the head) and the socket resumes. A cursor that
   * is not past the head, or a chat that cannot be read, ends the connection.
   */
  #repairCursor(code: number, reason: string): void {
    this.#api.chat(this.chatId).then(
      (chat) => {
        if (this.#status === "closed") return;
        const cursor = this.cursor;
        if (cursor === undefined || cursor <= chat.headSeq) return this.#finalClose(code, reason);
        this.#cursors.set(this.chatId, chat.headSeq);
        this.#socket?.reconnect();
      },
      () => {
        if (this.#status !== "closed") this.#finalClose(code, reason);
      },
    );
  }

  #finalClose(code: number, reason: string): void {
    this.#stop();
    if (this.#ownOutbox) this.#outbox.discard(this.chatId, { code: "unavailable", message: `the server closed the chat: ${reason || code}`, retryable: false });
    this.#emit("closed", code, reason);
  }

  #stop(): void {
    this.#typingOut.stopAll(); // `paused` to the others while the socket is still open
    this.#setStatus("closed");
    this.#deliveryReports.stop();
    this.#typingIn.stop();
    this.#heartbeat.stop();
    this.#retries.cancel();
    this.#socket?.close(CloseCode.normal, "client closed");
    this.#socket = null;
    this.#lostSends();
    this.#detachOutbox?.();
    this.#detachOutbox = null;
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
