import ReconnectingWebSocket from "partysocket/ws";
import { z } from "zod";
import {
  ChatEvent,
  ChatSummary,
  type ChatList,
  CloseCode,
  ErrorResponse,
  EventEnvelope,
  EventsFrameEnvelope,
  Heartbeat,
  HistoryPage,
  Limits,
  MessageStatus,
  ResumeResult,
  SendResult,
  StreamServerFrame,
  shouldReconnect,
  type AppState,
  type AttachmentInput,
  type DeleteResult,
  type DeleteScope,
  type ErrorBody,
  type HiddenMessage,
  type Presence,
  type PresenceSubscribeResult,
  type PresenceWatch,
  type ReplyFrame,
  type StreamClientFrame,
  type StreamDeleteFrame,
  type StreamSendFrame,
  type ResumeFrame,
  type TypingState,
} from "../protocol/index.ts";
import { ApiError, type ApiClient } from "./api-client.ts";
import type { ConnectionStatus } from "./chat-connection.ts";
import { CursorStore } from "./cursor-store.ts";
import { ConnectionLost, Outbox, SendError, sendFields, type OutboxMessage, type OutgoingMessage, type SendTransport } from "./outbox.ts";
import { deleteResultOf, deletionsIn, hiddenEntryOf, type MessageDeletion } from "./message-deletes.ts";
import { DeliveryReports } from "./delivery-reports.ts";
import { ReceiptBook, type ChatReceipts } from "./receipt-book.ts";
import { TypingIndicators, TypingReporter } from "./typing.ts";
import { backoffMs, HeartbeatWatch, refreshThenReconnect, Retries, sessionEnded, type Refreshable } from "./retry.ts";
import { PresenceWatcher } from "./presence-watch.ts";

export type DeviceStreamOptions = {
  api: ApiClient;
  /**
   * Where the device is in each chat, shared with its chat sockets if it opens any.
   * The stream resumes from every cursor here. Give it persistent storage to resume
   * where the app stopped. Default: an empty store in memory (a new device).
   */
  cursors?: CursorStore;
  /** The account's outbox, shared with chat sockets if any. Default: one of its own, over this stream and REST. */
  outbox?: Outbox;
  /** A WebSocket constructor (defaults to the global one: browsers, Node 22+). */
  WebSocket?: unknown;
  /**
   * Heartbeat interval; the connection is replaced after two without an answer.
   * Default: the server's (`stream.ready`'s `heartbeatMs`), else 30 s. The server counts
   * a stream silent for twice its own interval as offline, so a longer one here makes
   * the user look offline.
   */
  heartbeatMs?: number;
  /**
   * How long a small chat's entry may announce events the stream has not brought,
   * once live, before they are fetched over REST history (default 3 s).
   */
  restFallbackMs?: number;
};

type Listeners = {
  /** An event of a chat, each exactly once and in seq order per chat (across the stream, REST fetches and shared chat sockets). */
  event: (chatId: string, event: ChatEvent) => void;
  /**
   * A chat's list entry: new to this device, or changed (renamed, unread count, read
   * elsewhere, settings, left or removed). Never an entry older than one already given:
   * the greater headSeq, then readSeq, is the newer; with both equal, the later frame.
   */
  chat: (chat: ChatSummary) => void;
  /**
   * The account's own messages in `chatId` moved: those up to `deliveredUpTo` are
   * DELIVERED, up to `seenUpTo` SEEN (see `statusOf`). Live, and at a resume for what
   * moved while away.
   */
  receipts: (chatId: string, receipts: ChatReceipts) => void;
  /** The members typing in `chatId` now (empty: nobody); each shows until their indicator expires. */
  typing: (chatId: string, userIds: string[]) => void;
  status: (status: ConnectionStatus) => void;
  /** Error frames, refusals the SDK could not act on, frames it could not read. */
  error: (error: ErrorBody) => void;
  /** The server closed the stream for good (4000-4499): the code says why. */
  closed: (code: number, reason: string) => void;
  /** A watched user's presence: at each subscription's answer and at every change (see `watchPresence`). */
  presence: (presence: Presence) => void;
  /**
   * A message was deleted for everyone (after its `message.deleted` event went to the
   * `event` listeners): redraw its bubble as deleted. Messages deleted before the device
   * read them come as tombstones instead (a `message` event with `deletedSeq`).
   */
  deleted: (deletion: MessageDeletion) => void;
  /**
   * The account hid messages for itself ("delete for me", on this device or another):
   * remove their bubbles. Each entry once; the set is kept in the cursor store
   * (`cursors.isHidden`, `cursors.visible`).
   */
  hidden: (entries: HiddenMessage[]) => void;
};

/** Frames the stream sends and waits for a reply to. */
type StreamRequestFrame = StreamClientFrame | StreamDeleteFrame;

/** A request other than a send (`read`, `status`, a receipt…) that the server refused, on the stream or a chat socket. */
export class StreamRequestError extends Error {
  readonly error: ErrorBody;
  constructor(error: ErrorBody) {
    super(`${error.code}: ${error.message}`);
    this.name = "StreamRequestError";
    this.error = error;
  }
  get code(): ErrorBody["code"] {
    return this.error.code;
  }
}

/** A history page read leniently: event types this SDK does not know still parse (and are skipped). */
const HistoryPageEnvelope = HistoryPage.extend({ events: z.array(EventEnvelope) });

/**
 * Whether `incoming` replaces `current`, two list entries of one chat. `chat` frames may
 * arrive out of order (an announcement built from a snapshot older than a change sent
 * meanwhile), and neither an entry's headSeq nor its readSeq ever moves back, so the
 * entry with the greater headSeq, then the greater readSeq, is the newer one, and an
 * older one is dropped whole. When both are equal the later arrival wins, so its
 * settings (pinned, mutedUntil, archived) and everything else replace the current ones.
 */
function supersedes(incoming: ChatSummary, current: ChatSummary): boolean {
  if (incoming.headSeq !== current.headSeq) return incoming.headSeq > current.headSeq;
  return incoming.readSeq >= current.readSeq;
}

/** The WebSocket URL of the device stream. */
export function streamUrl(baseUrl: string): string {
  const url = new URL(`${baseUrl.replace(/\/+$/, "")}/chat`);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

/**
 * Every chat of the account on one socket (GET /chat): the device resumes with its
 * cursor in every chat it knows, catches up in batches, then receives every chat's
 * events and list entries live. Reconnects with jittered backoff, refreshes an expired
 * token, stops for good on close codes that say not to reconnect.
 *
 * Events reach the app through the cursor store, so each is delivered once and in
 * order per chat. What the stream does not carry is fetched over REST history from
 * the cursor: chats of more than `Limits.maxStreamedChatMembers` members and former
 * chats whose entry shows new events, and a small chat whose entry shows events that
 * do not follow within `restFallbackMs`.
 *
 * A chat the device does not know when it resumes (the server announces it at its
 * head) depends on the device. A new device (an empty cursor store, never resumed)
 * starts it at the head: the app reads older history for the screen it shows. A device
 * that knew chats was away when the account joined this one: the stream reads its
 * history over REST from the start (only the account's membership periods) and
 * delivers it, then what came live meanwhile, so the chat's first events are not missed.
 *
 * A refused resume does not stop the stream: cursors past their chat's head (a store
 * older than the server's data) are dropped, and those chats are read from the start
 * as above; other refusals reconnect after a backoff.
 *
 * @example
 * const cursors = new CursorStore(new WebStorageCursorStorage(localStorage, api.session!.user));
 * const stream = new DeviceStream({ api, cursors });
 * stream.on("chat", (chat) => drawListEntry(chat));
 * stream.on("event", (chatId, event) => show(chatId, event));
 * stream.connect();
 * const ack = await stream.send(chatId, "hello");
 */
export class DeviceStream {
  readonly #api: ApiClient;
  readonly #options: DeviceStreamOptions;
  readonly #cursors: CursorStore;
  readonly #outbox: Outbox;
  readonly #ownOutbox: boolean;
  readonly #transport: SendTransport = {
    canSend: () => this.#resumed && this.#socket?.readyState === ReconnectingWebSocket.OPEN,
    send: (message) => this.#sendFrame(message),
  };
  #detachOutbox: (() => void) | null = null;
  readonly #listeners: { [K in keyof Listeners]: Set<Listeners[K]> } = {
    event: new Set(),
    chat: new Set(),
    receipts: new Set(),
    typing: new Set(),
    status: new Set(),
    error: new Set(),
    closed: new Set(),
    presence: new Set(),
    deleted: new Set(),
    hidden: new Set(),
  };
  #socket: ReconnectingWebSocket | null = null;
  #status: ConnectionStatus = "closed";
  #userId: string | undefined;
  #deviceId: string | undefined;
  /** The server's heartbeat interval, from `stream.ready`. */
  #serverHeartbeatMs: number | undefined;
  readonly #heartbeat = new HeartbeatWatch(() => this.#socket, () => this.#options.heartbeatMs ?? this.#serverHeartbeatMs ?? 30_000);
  readonly #presence = new PresenceWatcher(
    {
      ready: () => this.#resumed && this.#socket?.readyState === ReconnectingWebSocket.OPEN,
      open: () => this.#socket?.readyState === ReconnectingWebSocket.OPEN,
      request: (frame) => this.#request(frame),
      nextId: () => this.#nextId("presence"),
      stopped: () => this.#status === "closed",
    },
    (presence) => this.#emit("presence", presence),
  );
  #frameCounter = 0;
  /** The id of the `resume` waiting for its reply on this socket. */
  #resumeId: string | null = null;
  /** Whether this socket's `resume` was answered: sends and reads may go on it. */
  #resumed = false;
  /** Counts the sockets: a retry planned for one is dropped once it is gone. */
  #connection = 0;
  /** Resumes refused in a row, for the backoff. */
  #resumeFailures = 0;
  /**
   * Whether the device is not a new install: it had cursors when this stream resumed,
   * or this stream resumed before. A chat it does not know was joined while it was away.
   */
  #knownDevice = false;
  /** Whether the chats the current resume announces are read from their start (see `#chatChanged`). */
  #fetchAnnounced = false;
  /** `chat` frames still to come that announce what the resume reply counted. */
  #announcing = 0;
  /**
   * Whether the resume's `hiddenSince` is still being answered: until its page with
   * `more: false`, or `synced`. Only its pages (frames with `after`) may move the hidden
   * cursor over a jump in the numbers; a live frame moves it only to the next number.
   */
  #hiddenResuming = false;
  /** Requests on the current socket waiting for their reply, by frame id. */
  readonly #requests = new Map<string, { resolve: (result: unknown) => void; reject: (error: unknown) => void }>();
  readonly #chats = new Map<string, ChatSummary>();
  readonly #receipts = new ReceiptBook();
  /** What this device received is reported, so senders see DELIVERED (see DeliveryReports). */
  readonly #deliveryReports = new DeliveryReports((chatId, seq) => this.#reportDelivered(chatId, seq));
  readonly #typingIn = new TypingIndicators((chatId, userIds) => this.#emit("typing", chatId, userIds));
  readonly #typingOut = new TypingReporter((chatId, state) => this.#typingFrame(chatId, state));
  /** REST fetches running, by chat; events the stream brings meanwhile wait in `#held`. */
  readonly #fetches = new Set<string>();
  /** Chats whose entry moved on while their fetch ran: read once more when it ends. */
  readonly #fetchAgain = new Set<string>();
  readonly #held = new Map<string, EventEnvelope[]>();
  /** Small chats whose entry announced a head the stream has not brought yet. */
  readonly #expected = new Map<string, { seq: number; timer: ReturnType<typeof setTimeout> }>();
  /** The stream's own retries (a refresh, a resume), cancelled when it stops. */
  readonly #retries = new Retries();
  /** What the token refresh needs of this connection. */
  readonly #refreshable: Refreshable = {
    refresh: () => this.#api.refresh(),
    retries: this.#retries,
    stopped: () => this.#status === "closed",
    reconnect: () => this.#socket?.reconnect(),
    end: (code, reason) => this.#finalClose(code, reason),
  };

  constructor(options: DeviceStreamOptions) {
    this.#api = options.api;
    this.#options = options;
    this.#cursors = options.cursors ?? new CursorStore();
    this.#ownOutbox = !options.outbox;
    this.#outbox = options.outbox ?? new Outbox({ api: options.api });
  }

  get status(): ConnectionStatus {
    return this.#status;
  }

  /** The cursor store the stream delivers through. */
  get cursors(): CursorStore {
    return this.#cursors;
  }

  /** The newest list entry of every chat the stream told of (see the `chat` event for what is newest). */
  get chats(): ReadonlyMap<string, ChatSummary> {
    return this.#chats;
  }

  /** The device this stream is signed in as (after the first connection). */
  get deviceId(): string | undefined {
    return this.#deviceId;
  }

  /** Messages waiting for their SENT ack, in every chat. */
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
    this.#detachOutbox = this.#outbox.attach(this.#transport, 0);
    const socket = new ReconnectingWebSocket(
      () => streamUrl(this.#api.baseUrl),
      async () => ["chat.v1", `bearer.${await this.#credentials()}`],
      {
        WebSocket: this.#options.WebSocket,
        minReconnectionDelay: 200 + Math.random() * 800, // jitter: a herd does not return at once
        maxReconnectionDelay: 15_000,
        connectionTimeout: 10_000,
        maxEnqueuedMessages: 0, // every connection starts with its own resume
        shouldReconnectOnClose: (event) => this.#shouldReconnect(event.code, event.reason),
      },
    );
    socket.addEventListener("message", (event) => this.#receive(String(event.data)));
    socket.addEventListener("close", () => {
      this.#socketGone();
      if (this.#status !== "closed") this.#setStatus("connecting");
    });
    this.#socket = socket;
    this.#heartbeat.start();
  }

  /**
   * Queues a message in the outbox; resolves with its SENT ack (seq, id, time). It goes
   * on this stream when open, else on a chat socket of the shared outbox, else REST.
   */
  send(chatId: string, body: string, options: { replyToSeq?: number; clientId?: string; attachments?: AttachmentInput[] } = {}): Promise<SendResult> {
    return this.#outbox.send(chatId, body, options);
  }

  /**
   * Queues a message of text, files (uploaded first with `api.uploadMedia`; `body` is
   * then their caption) or both, as `send` does. The outbox stores the attachments with
   * the message, so every retry sends the same request.
   *
   * @example
   * const upload = await api.uploadMedia(chatId, file, { name: file.name, onProgress });
   * await stream.sendMessage(chatId, { body: "the plan", attachments: [{ mediaId: upload.mediaId, name: file.name }] });
   */
  sendMessage(chatId: string, message: OutgoingMessage): Promise<SendResult> {
    return this.#outbox.sendMessage(chatId, message);
  }

  /**
   * Deletes the message at `seq` of `chatId`: for everyone (its sender within the
   * delete window, or a group admin; every member then gets `message.deleted`) or for
   * the account only (hidden on all its devices; recorded in the cursor store and
   * announced by the `hidden` event). Deleting again answers the same with `duplicate`.
   * Over the stream when it is open, else over REST. Rejects with a StreamRequestError
   * (or an ApiError over REST): `forbidden`, `delete_window_passed`, `not_found`,
   * `not_a_member`, `too_many_hidden`.
   */
  async deleteMessage(chatId: string, seq: number, scope: DeleteScope): Promise<DeleteResult> {
    let result: DeleteResult | null = null;
    if (this.#transport.canSend(chatId)) {
      try {
        result = deleteResultOf(await this.#request({ type: "delete", id: this.#nextId("delete"), chatId, seq, for: scope }));
      } catch (error) {
        // Lost with the socket, or refused for now (the stream's frame rate): REST. A delete is idempotent.
        const retry = error instanceof ConnectionLost || (error instanceof StreamRequestError && error.error.retryable);
        if (!retry) throw error;
      }
    }
    result ??= await this.#api.deleteMessage(chatId, seq, scope);
    // Recorded even when the stream is closed (the delete went over REST): the app asked for it.
    const entry = hiddenEntryOf(result);
    const fresh = entry ? this.#cursors.hide([entry]) : [];
    if (fresh.length > 0) this.#emit("hidden", fresh);
    return result;
  }

  /**
   * The user has read `chatId` up to `seq`: its unread count clears on every device
   * (their streams get the entry). Over the stream when it is open, else over REST.
   * Resolves with the chat's entry; rejects with a StreamRequestError or an ApiError.
   */
  async markRead(chatId: string, seq: number): Promise<ChatSummary> {
    if (this.#transport.canSend(chatId)) {
      try {
        return ChatSummary.parse(await this.#request({ type: "read", id: this.#nextId("read"), chatId, seq }));
      } catch (error) {
        // Lost with the socket, or refused for now (the stream's frame rate): REST. A read is idempotent.
        const retry = error instanceof ConnectionLost || (error instanceof StreamRequestError && error.error.retryable);
        if (!retry) throw error;
      }
    }
    return this.#api.markRead(chatId, seq);
  }

  /** The status of the account's own message at `seq`, as last heard (live, no request). */
  statusOf(chatId: string, seq: number): "sent" | "delivered" | "seen" {
    return this.#receipts.statusOf(chatId, seq);
  }

  /** The account's own messages' watermarks in `chatId` (undefined until the stream heard of the chat). */
  receiptsOf(chatId: string): ChatReceipts | undefined {
    return this.#receipts.get(chatId);
  }

  /**
   * Asks the server for one of the account's own messages' status, with the detail per
   * recipient (times delivered and seen) in chats up to 256 members.
   */
  async messageStatus(chatId: string, seq: number): Promise<MessageStatus> {
    if (this.#transport.canSend(chatId)) {
      try {
        return MessageStatus.parse(await this.#request({ type: "status", id: this.#nextId("status"), chatId, seq }));
      } catch (error) {
        if (!(error instanceof ConnectionLost)) throw error;
      }
    }
    return this.#api.messageStatus(chatId, seq);
  }

  /** The user typed in `chatId`: call on each keystroke (the SDK throttles and sends `paused` after a pause). */
  typing(chatId: string): void {
    this.#typingOut.typing(chatId);
  }

  /** The user stopped typing (sent the message, left the screen). */
  stopTyping(chatId: string): void {
    this.#typingOut.stop(chatId);
  }

  /** Who is typing in `chatId` now. */
  typingIn(chatId: string): string[] {
    return this.#typingIn.typing(chatId);
  }

  /**
   * The app went to the foreground or the background: in the background this device
   * does not count as online (docs/protocol.md §8.6). Kept across reconnections.
   */
  setAppState(state: AppState): Promise<void> {
    return this.#presence.setAppState(state);
  }

  /**
   * Watches the presence of the people on screen, each with a chat shared with them
   * (at most 64; an empty list stops). Replaces the previous list. The subscription is
   * renewed while the stream is up and sent again after each reconnection; the
   * `presence` event gives each user's presence at once and at every change. Resolves
   * with the server's answer (who was refused), or null when the stream is not up (the
   * list goes when it is).
   */
  watchPresence(watch: PresenceWatch[]): Promise<PresenceSubscribeResult | null> {
    return this.#presence.watch(watch);
  }

  /** The latest presence of each watched user. */
  get presence(): ReadonlyMap<string, Presence> {
    return this.#presence.known;
  }

  /** Drops the socket and resumes on a new one (for example after the network changed). */
  reconnect(): void {
    this.#socket?.reconnect(CloseCode.normal, "client reconnect");
  }

  /**
   * Closes the stream; it does not reconnect. Waiting sends are rejected, unless the
   * outbox is shared (then a chat socket or REST sends them).
   */
  close(): void {
    this.#stop();
    if (this.#ownOutbox) this.#outbox.discard(undefined, { code: "unavailable", message: "the stream was closed", retryable: true });
  }

  // ---- Frames ----

  #receive(text: string): void {
    this.#heartbeat.heard();
    if (text === Heartbeat.response) return;
    let frame: StreamServerFrame | EventsFrameEnvelope;
    try {
      const raw = JSON.parse(text) as { type?: unknown };
      // Events are read leniently so a newer server's event types cannot stall the stream.
      frame = raw.type === "events" ? EventsFrameEnvelope.parse(raw) : StreamServerFrame.parse(raw);
    } catch {
      return this.#emit("error", { code: "internal", message: "unreadable frame from the server", retryable: false });
    }
    switch (frame.type) {
      case "stream.ready":
        this.#userId = frame.userId;
        this.#deviceId = frame.deviceId;
        this.#useServerHeartbeat(frame.heartbeatMs);
        this.#presence.connected();
        return this.#resume();
      case "presence":
        return this.#presence.received(frame.presence);
      case "reply":
        return this.#answered(frame);
      case "chat":
        return this.#chatChanged(frame.chat);
      case "events":
        return this.#streamEvents(frame.chatId, frame.events);
      case "catching_up":
        // A batch ended (of the resume's catch-up, or of a chat joined while live): the next one.
        this.#transmit({ type: "sync", id: this.#nextId("sync") });
        return;
      case "synced":
        this.#hiddenResuming = false;
        this.#setStatus("live");
        return;
      case "receipts":
        if (this.#receipts.frame(frame)) this.#emit("receipts", frame.chatId, this.#receipts.get(frame.chatId)!);
        return;
      case "typing":
        return this.#typingIn.notice(frame);
      case "hidden": {
        const page = this.#hiddenResuming && frame.after !== undefined;
        this.#hidden(frame.entries, page ? frame.after : undefined);
        if (page && !frame.more) this.#hiddenResuming = false;
        return;
      }
      case "error":
        return this.#emit("error", frame.error);
    }
  }

  /** Hidden messages reached the device: recorded, and the new ones announced. */
  #hidden(entries: readonly HiddenMessage[], after: number | undefined): void {
    if (this.#status === "closed") return;
    const fresh = this.#cursors.hide(entries, after === undefined ? {} : { after });
    if (fresh.length > 0) this.#emit("hidden", fresh);
  }

  /** The first frame of every connection: where the device is in each chat it knows. */
  #resume(): void {
    const cursors = Object.fromEntries(Object.entries(this.#cursors.all()).slice(0, Limits.maxStreamCursors));
    if (Object.keys(cursors).length > 0) this.#knownDevice = true;
    this.#fetchAnnounced = this.#knownDevice;
    this.#resumeId = this.#nextId("resume");
    this.#announcing = 0;
    this.#setStatus("catching-up");
    const resume: ResumeFrame = { type: "resume", id: this.#resumeId, cursors };
    // Receipts that moved while away come first. A device that knows chats but heard no
    // receipts since it started (an app restart) asks for every chat's.
    const since = this.#receipts.since ?? (Object.keys(cursors).length > 0 ? 0 : undefined);
    if (since !== undefined) resume.receiptsSince = since;
    // Hidden messages after the device's hidden cursor; all of them when it has none (a
    // new device, or an app whose storage keeps no hidden cursor): unlike receipts, chat
    // entries do not carry them, and history pages need them to leave hidden messages out.
    resume.hiddenSince = this.#cursors.hiddenNo ?? 0;
    this.#hiddenResuming = true;
    this.#transmit(resume);
  }

  #answered(reply: ReplyFrame): void {
    if (reply.id === this.#resumeId) return this.#resumeAnswered(reply);
    if (reply.id.startsWith("sync")) return this.#syncAnswered(reply);
    const request = this.#requests.get(reply.id);
    if (!request) return;
    this.#requests.delete(reply.id);
    if (reply.ok) request.resolve(reply.result);
    else request.reject(new StreamRequestError(reply.error));
  }

  /**
   * A refused resume never stops the stream (its outbox keeps its messages): a cursor
   * past a chat's head is dropped and the stream resumes again; after any other refusal
   * it connects again after a jittered backoff that doubles with each refusal in a row.
   */
  #resumeAnswered(reply: ReplyFrame): void {
    this.#resumeId = null;
    if (!reply.ok) {
      this.#emit("error", reply.error);
      this.#setStatus("connecting");
      const failures = ++this.#resumeFailures;
      const connection = this.#connection;
      if (reply.error.code === "invalid_cursor") void this.#repairCursors(connection, failures);
      else this.#resumeLater(connection, reply.error.retryAfterMs ?? backoffMs(failures));
      return;
    }
    this.#resumeFailures = 0;
    this.#knownDevice = true;
    const result = ResumeResult.safeParse(reply.result);
    if (result.success) {
      for (const chatId of result.data.unknownChats) this.#cursors.forget(chatId);
      this.#announcing = result.data.announced;
    }
    this.#resumed = true;
    this.#outbox.wake();
    this.#presence.resumed();
  }

  /** The server's heartbeat interval, unless the app chose one: the watch restarts at its pace. */
  #useServerHeartbeat(heartbeatMs: number | undefined): void {
    if (heartbeatMs === undefined || this.#options.heartbeatMs !== undefined || heartbeatMs === this.#serverHeartbeatMs) return;
    this.#serverHeartbeatMs = heartbeatMs;
    this.#heartbeat.stop();
    this.#heartbeat.start();
  }

  /** Resumes on a new socket after `delayMs`, unless the socket was replaced meanwhile (the new one resumes by itself). */
  #resumeLater(connection: number, delayMs: number): void {
    this.#retryIn(delayMs, () => {
      if (connection === this.#connection) this.#socket?.reconnect(CloseCode.normal, "resume again");
    });
  }

  /**
   * The server refused a cursor past its chat's head (a cursor store older than the
   * server's data, after a reset say); the refusal does not say which. Every cursor past
   * its chat's head in the chat list is dropped (for a chat the account is still in, the
   * head is read from the chat itself, since the list may trail it by a moment): the
   * server then announces the chat as one the device did not list, and it is read from
   * its start. Then the stream resumes again on this socket; if nothing could be
   * dropped, it connects again after a backoff.
   */
  async #repairCursors(connection: number, failures: number): Promise<void> {
    let dropped = 0;
    try {
      dropped = await this.#dropCursorsPastHeads();
    } catch (error) {
      if (error instanceof ApiError) this.#emit("error", error.body);
    }
    if (this.#status === "closed") return;
    if (dropped === 0) return this.#resumeLater(connection, backoffMs(failures));
    if (connection === this.#connection && this.#socket?.readyState === ReconnectingWebSocket.OPEN) this.#resume();
  }

  /** Drops every cursor past its chat's head; returns how many. */
  async #dropCursorsPastHeads(): Promise<number> {
    const cursors = this.#cursors.all();
    let dropped = 0;
    let page: ChatList | null = null;
    do {
      const limit = Limits.maxChatListPageSize;
      page = await this.#api.chats(page?.nextCursor === undefined ? { limit } : { limit, cursor: page.nextCursor });
      for (const chat of page.chats) {
        const cursor = cursors[chat.chatId];
        if (cursor === undefined || cursor <= chat.headSeq) continue;
        if (cursor <= (await this.#headOf(chat))) continue;
        this.#cursors.forget(chat.chatId);
        dropped++;
      }
    } while (page.nextCursor !== undefined);
    return dropped;
  }

  /** A chat's head: for a former member the list's (it no longer changes), else the chat's own. */
  async #headOf(chat: ChatSummary): Promise<number> {
    if (chat.membership !== "member") return chat.headSeq;
    try {
      return (await this.#api.chat(chat.chatId)).headSeq;
    } catch (error) {
      // No longer a member (or no such chat): the list's entry is all there is.
      if (error instanceof ApiError && !error.body.retryable) return chat.headSeq;
      throw error;
    }
  }

  /** Catch-up batches are paced by the client: a refused `sync` is sent again when the server says. */
  #syncAnswered(reply: ReplyFrame): void {
    if (reply.ok) return;
    if (!reply.error.retryable) return this.#emit("error", reply.error);
    const connection = this.#connection;
    this.#retryIn(reply.error.retryAfterMs ?? 1000, () => {
      if (connection === this.#connection) this.#transmit({ type: "sync", id: this.#nextId("sync") });
    });
  }

  /**
   * A chat's entry. Right after the resume reply come the announcements: chats the
   * device did not list, live from their head (a new device starts there, a known one
   * reads the history before it), and chats the stream does not carry that moved past
   * the device's cursor. Later entries show
   * changes; an entry ahead of the cursor is either followed by its events (small
   * chats) or fetched over REST (big and former chats).
   */
  #chatChanged(chat: ChatSummary): void {
    const { chatId } = chat;
    const announcement = this.#announcing > 0;
    if (announcement) this.#announcing--;
    const current = this.#chats.get(chatId);
    if (this.#receipts.entry(chat)) this.#emit("receipts", chatId, this.#receipts.get(chatId)!);
    if (current === undefined || supersedes(chat, current)) {
      this.#chats.set(chatId, chat);
      this.#emit("chat", chat);
    } else if (!announcement) {
      return; // an older entry than one already handled: nothing new in it
    }
    // An announcement, even one older than the entry, says where the stream starts the chat.
    const cursor = this.#cursors.get(chatId);
    const streamed = chat.membership === "member" && chat.memberCount <= Limits.maxStreamedChatMembers;
    if (cursor === undefined) {
      if (announcement) {
        // A chat the device did not list, live from the announced head. A device that
        // knew chats was away when the account joined it: its history is read from the
        // start (the server gives only the account's periods), and the events the stream
        // brings meanwhile wait for it. A new device starts at the head.
        if (this.#fetchAnnounced && chat.membership === "member") this.#fetch(chatId);
        else this.#cursors.set(chatId, chat.headSeq);
        return;
      }
      // A chat the account just joined: a small one's events follow from the start of
      // the membership, a big one's are fetched.
      if (chat.membership === "member" && !streamed) this.#fetch(chatId);
      return;
    }
    if (chat.headSeq <= cursor) return;
    if (announcement || !streamed) this.#fetch(chatId);
    else this.#expect(chatId, chat.headSeq);
  }

  #streamEvents(chatId: string, events: EventEnvelope[]): void {
    if (this.#fetches.has(chatId)) {
      this.#held.set(chatId, [...(this.#held.get(chatId) ?? []), ...events]);
      return;
    }
    const rest = this.#deliver(chatId, events);
    if (rest.length > 0) {
      // A gap before these (never expected from the server): REST history fills it first.
      this.#held.set(chatId, rest);
      this.#fetch(chatId);
    }
  }

  /** Delivers what the store takes; returns the events after a gap, which it did not take. */
  #deliver(chatId: string, events: readonly EventEnvelope[], jumps = false): EventEnvelope[] {
    // A fetch that answers after close() delivers nothing (no event after close, no report).
    if (this.#status === "closed") return [];
    const fresh = this.#cursors.accept(chatId, events, { ...(this.#userId === undefined ? {} : { userId: this.#userId }), jumps });
    const known: ChatEvent[] = [];
    for (const event of fresh) {
      const parsed = ChatEvent.safeParse(event);
      if (parsed.success) known.push(parsed.data); // unknown types are skipped, not a gap
    }
    this.#typingIn.received(chatId, known);
    for (const event of known) this.#emit("event", chatId, event);
    for (const deletion of deletionsIn(chatId, known)) this.#emit("deleted", deletion);
    this.#deliveryReports.received(chatId, known, this.#userId);
    const cursor = this.#cursors.get(chatId) ?? 0;
    const expected = this.#expected.get(chatId);
    if (expected && cursor >= expected.seq) {
      clearTimeout(expected.timer);
      this.#expected.delete(chatId);
    }
    return events.filter((event) => event.seq > cursor);
  }

  // ---- What the stream does not carry: REST history ----

  /** A small chat's entry is ahead of the cursor: its events should follow; if not, they are fetched. */
  #expect(chatId: string, seq: number): void {
    const current = this.#expected.get(chatId);
    if (current) {
      current.seq = Math.max(current.seq, seq);
      return;
    }
    const check = () => {
      const entry = this.#expected.get(chatId);
      if (!entry || this.#status === "closed") return;
      if ((this.#cursors.get(chatId) ?? 0) >= entry.seq) {
        this.#expected.delete(chatId);
        return;
      }
      // While catching up (or reconnecting, which resumes) the stream may still bring them.
      if (this.#status !== "live") {
        entry.timer = setTimeout(check, this.#options.restFallbackMs ?? 3_000);
        return;
      }
      this.#expected.delete(chatId);
      this.#fetch(chatId);
    };
    this.#expected.set(chatId, { seq, timer: setTimeout(check, this.#options.restFallbackMs ?? 3_000) });
  }

  /**
   * Reads the chat's history after the cursor up to its head and delivers it; then the
   * events the stream brought meanwhile. One fetch per chat at a time.
   */
  #fetch(chatId: string): void {
    if (this.#status === "closed") return;
    if (this.#fetches.has(chatId)) {
      this.#fetchAgain.add(chatId);
      return;
    }
    this.#fetches.add(chatId);
    void (async () => {
      do await this.#fetchHistory(chatId);
      while (this.#fetchAgain.delete(chatId) && this.#status !== "closed");
    })().finally(() => {
      this.#fetches.delete(chatId);
      this.#fetchAgain.delete(chatId);
    });
  }

  async #fetchHistory(chatId: string): Promise<void> {
    let failures = 0;
    let rereadForGap = false;
    for (;;) {
      if (this.#status === "closed") return;
      let page: z.infer<typeof HistoryPageEnvelope>;
      try {
        page = await this.#historyPage(chatId, this.#cursors.get(chatId) ?? 0);
        failures = 0;
      } catch (error) {
        const body = error instanceof ApiError ? error.body : null;
        if (body && !body.retryable) {
          this.#emit("error", body);
          // The stream's own events are not lost for it.
          this.#deliver(chatId, this.#takeHeld(chatId), true);
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, body?.retryAfterMs ?? backoffMs(++failures)));
        continue;
      }
      // History leaves out exactly what the user may not see: its jumps are not gaps.
      this.#deliver(chatId, page.events, true);
      if (page.hasMore) continue;
      const held = this.#takeHeld(chatId);
      const rest = this.#deliver(chatId, held);
      if (rest.length === 0) return;
      if (rereadForGap) {
        // History was read after these arrived and shows nothing between: nothing is missing.
        this.#deliver(chatId, rest, true);
        return;
      }
      // Pushed after the page was read: read once more.
      rereadForGap = true;
      this.#held.set(chatId, rest);
    }
  }

  #takeHeld(chatId: string): EventEnvelope[] {
    const held = this.#held.get(chatId) ?? [];
    this.#held.delete(chatId);
    return held;
  }

  async #historyPage(chatId: string, after: number): Promise<z.infer<typeof HistoryPageEnvelope>> {
    const response = await this.#api.request("GET", `/api/chats/${encodeURIComponent(chatId)}/messages?after=${after}&limit=${Limits.maxPageSize}`);
    const json: unknown = await response.json().catch(() => null);
    if (!response.ok) {
      const parsed = ErrorResponse.safeParse(json);
      throw new ApiError(
        response.status,
        parsed.success ? parsed.data.error : { code: "internal", message: `HTTP ${response.status}`, retryable: response.status >= 500 },
      );
    }
    return HistoryPageEnvelope.parse(json);
  }

  // ---- Requests: sends (for the outbox) and reads ----

  #sendFrame(message: OutboxMessage): Promise<SendResult> {
    const frame: StreamSendFrame = { type: "send", id: this.#nextId("send"), chatId: message.chatId, ...sendFields(message) };
    return this.#request(frame).then(
      (result) => {
        const ack = SendResult.safeParse(result);
        if (!ack.success) throw new ConnectionLost("unreadable acknowledgement");
        return ack.data;
      },
      (error: unknown) => {
        throw error instanceof StreamRequestError ? new SendError(error.error) : error;
      },
    );
  }

  /** A `delivered` report: on the stream when it is open, else over REST. */
  #reportDelivered(chatId: string, seq: number): Promise<unknown> {
    if (this.#transport.canSend(chatId)) return this.#request({ type: "delivered", id: this.#nextId("delivered"), chatId, seq });
    return this.#api.reportDelivered(chatId, seq);
  }

  /** A typing indicator, on the stream only (ephemeral: when it is not open, there is nothing to show). */
  #typingFrame(chatId: string, state: TypingState): Promise<unknown> {
    if (!this.#transport.canSend(chatId)) return Promise.resolve();
    return this.#request({ type: "typing", id: this.#nextId("typing"), chatId, state });
  }

  /** Sends a frame answered by a reply; rejects with ConnectionLost if the socket goes first. */
  #request(frame: StreamRequestFrame): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.#requests.set(frame.id, { resolve, reject });
      if (!this.#transmit(frame)) {
        this.#requests.delete(frame.id);
        reject(new ConnectionLost("the device stream is not open"));
      }
    });
  }

  /** The socket closed: requests on it go again (sends elsewhere, reads over REST), and the next socket resumes. */
  #socketGone(): void {
    this.#connection++;
    this.#resumed = false;
    this.#resumeId = null;
    this.#announcing = 0;
    this.#presence.disconnected();
    const lost = [...this.#requests.values()];
    this.#requests.clear();
    for (const request of lost) request.reject(new ConnectionLost());
  }

  // ---- Connection ----

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
    this.#finalClose(code, reason);
    return false;
  }

  /** Runs `retry` after `delayMs` unless the stream has stopped by then. */
  #retryIn(delayMs: number, retry: () => void): void {
    this.#retries.in(delayMs, this.#refreshable.stopped, retry);
  }

  #finalClose(code: number, reason: string): void {
    this.#stop();
    if (this.#ownOutbox) this.#outbox.discard(undefined, { code: "unavailable", message: `the server closed the stream: ${reason || code}`, retryable: false });
    this.#emit("closed", code, reason);
  }

  #stop(): void {
    this.#setStatus("closed");
    this.#typingOut.stopAll(); // `paused` to the others while the socket is still open
    this.#deliveryReports.stop();
    this.#typingIn.stop();
    this.#heartbeat.stop();
    this.#presence.stop();
    for (const { timer } of this.#expected.values()) clearTimeout(timer);
    this.#expected.clear();
    this.#retries.cancel();
    this.#socket?.close(CloseCode.normal, "client closed");
    this.#socket = null;
    this.#socketGone();
    this.#detachOutbox?.();
    this.#detachOutbox = null;
  }

  #nextId(kind: "resume" | "sync" | "send" | "read" | "delivered" | "status" | "typing" | "presence" | "delete"): string {
    return `${kind}${++this.#frameCounter}`;
  }

  #transmit(frame: StreamRequestFrame): boolean {
    const socket = this.#socket;
    if (!socket || socket.readyState !== ReconnectingWebSocket.OPEN) return false;
    return socket.send(JSON.stringify(frame));
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
