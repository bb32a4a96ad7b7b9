import { SendMessageRequest, type AttachmentInput, type ErrorBody, type SendResult } from "../protocol/index.ts";
import { ApiError, type ApiClient } from "./api-client.ts";
import type { WebStorageLike } from "./cursor-store.ts";

/**
 * A message the app asked to send, kept until the server acknowledges or refuses it.
 * Every attempt sends exactly these fields: the server tells a retry (the same clientId
 * with the same body, reply and attachments) from a conflict by them.
 */
export type OutboxMessage = {
  chatId: string;
  /** The idempotency key, chosen before the first attempt and reused on every retry. */
  clientId: string;
  /** The text, or the caption of the attachments. */
  body?: string;
  /** Files uploaded to this chat (`api.uploadMedia`), described by the sender. */
  attachments?: AttachmentInput[];
  replyToSeq?: number;
};

/** What to send: text, attachments (then `body` is their caption), or both. */
export type OutgoingMessage = {
  body?: string;
  attachments?: AttachmentInput[];
  replyToSeq?: number;
  /** The idempotency key; default a new random one. */
  clientId?: string;
};

/**
 * Where unsent messages are kept, in the order they were sent. Synchronous, so a
 * message is stored before its first attempt. `MemoryOutboxStorage` is the default;
 * `WebStorageOutboxStorage` keeps them in `localStorage` across restarts.
 */
export interface OutboxStorage {
  /** Every stored message, oldest first. Read once, when the outbox is made. */
  load(): OutboxMessage[];
  add(message: OutboxMessage): void;
  /** Removes the message with this chat and clientId. */
  remove(message: OutboxMessage): void;
}

export class MemoryOutboxStorage implements OutboxStorage {
  readonly #messages: OutboxMessage[] = [];
  load(): OutboxMessage[] {
    return [...this.#messages];
  }
  add(message: OutboxMessage): void {
    this.#messages.push(message);
  }
  remove(message: OutboxMessage): void {
    const index = this.#messages.findIndex((m) => sameMessage(m, message));
    if (index >= 0) this.#messages.splice(index, 1);
  }
}

/**
 * Unsent messages in a Web Storage (`localStorage`), as one JSON array under one key.
 * Each signed-in device of an account keeps its own: given the account and device
 * (`{ userId: session.user.userId, deviceId: session.device.deviceId }`), the key is
 * `edgechat.outbox.<userId>.<deviceId>`, so after a switch of accounts in one browser
 * the messages one left waiting are never sent as another; they stay stored under
 * their own key. A string sets the key itself.
 */
export class WebStorageOutboxStorage implements OutboxStorage {
  readonly #storage: WebStorageLike;
  readonly #key: string;
  constructor(storage: WebStorageLike, account: { userId: string; deviceId: string } | string) {
    this.#storage = storage;
    this.#key = typeof account === "string" ? account : `edgechat.outbox.${account.userId}.${account.deviceId}`;
  }
  load(): OutboxMessage[] {
    try {
      const stored: unknown = JSON.parse(this.#storage.getItem(this.#key) ?? "[]");
      return Array.isArray(stored) ? stored.filter(isOutboxMessage) : [];
    } catch {
      return [];
    }
  }
  add(message: OutboxMessage): void {
    this.#storage.setItem(this.#key, JSON.stringify([...this.load(), message]));
  }
  remove(message: OutboxMessage): void {
    this.#storage.setItem(this.#key, JSON.stringify(this.load().filter((m) => !sameMessage(m, message))));
  }
}

/**
 * A way to the server for sends: a device stream, a chat socket, REST. `send`
 * resolves with the ack, rejects with a `SendError` when the server answered with an
 * error, and with anything else (`ConnectionLost`, a network error) when the outcome
 * is unknown: the outbox then sends again with the same clientId.
 */
export interface SendTransport {
  /** Whether a message of `chatId` can go out on this transport now. */
  canSend(chatId: string): boolean;
  send(message: OutboxMessage): Promise<SendResult>;
}

/** A send the server answered with an error (`error.retryable` says whether the outbox tries again). */
export class SendError extends Error {
  readonly error: ErrorBody;
  constructor(error: ErrorBody) {
    super(`${error.code}: ${error.message}`);
    this.name = "SendError";
    this.error = error;
  }
}

/** The connection went away before the answer: the message may or may not be stored. */
export class ConnectionLost extends Error {
  constructor(message = "the connection closed before the server answered") {
    super(message);
    this.name = "ConnectionLost";
  }
}

export type OutboxOptions = {
  /** Sends over REST when no socket can (omit for sockets only). */
  api?: Pick<ApiClient, "sendMessage">;
  storage?: OutboxStorage;
};

type Listeners = {
  /** A message was acknowledged (also one loaded from storage, which no promise waits for). */
  sent: (message: OutboxMessage, result: SendResult) => void;
  /** The server refused a message for good; it is dropped. */
  failed: (message: OutboxMessage, error: ErrorBody) => void;
};

type Waiter = { resolve: (result: SendResult) => void; reject: (error: SendError) => void };

type Queue = {
  messages: OutboxMessage[];
  inFlight: boolean;
  timer: ReturnType<typeof setTimeout> | null;
  /** The timer honours the server's `retryAfterMs` (a connection opening does not cut it short). */
  serverDelay: boolean;
  /** Unknown outcomes in a row, for the backoff. */
  failures: number;
};

/** Backoff after an unknown outcome: 0 (another transport may take it at once), then 0.5 s doubling to 30 s. */
function backoffMs(failures: number): number {
  if (failures <= 1) return 0;
  return Math.min(30_000, 500 * 2 ** (failures - 2)) * (0.75 + Math.random() / 2);
}

/**
 * The messages waiting for their SENT ack, for every chat of an account. Each
 * message gets its clientId (and is stored) before the first attempt. Per chat they
 * go strictly in order, one in flight at a time, so a refused or rate-limited message
 * is never overtaken by the next. Each goes over the best transport open at that
 * moment: the attached ones by priority (the device stream, then the chat's socket),
 * else REST; after a lost connection or a retryable error it goes again with the same
 * clientId, which the server stores once.
 *
 * @example
 * const account = { userId: api.session!.user.userId, deviceId: api.session!.device.deviceId };
 * const outbox = new Outbox({ api, storage: new WebStorageOutboxStorage(localStorage, account) });
 * const stream = new DeviceStream({ api, outbox });
 * const ack = await outbox.send(chatId, "hello"); // or stream.send(chatId, "hello")
 */
export class Outbox {
  readonly #storage: OutboxStorage;
  readonly #rest: SendTransport | null;
  #transports: { transport: SendTransport; priority: number }[] = [];
  readonly #queues = new Map<string, Queue>();
  readonly #waiters = new Map<string, Waiter[]>();
  readonly #listeners: { [K in keyof Listeners]: Set<Listeners[K]> } = { sent: new Set(), failed: new Set() };

  constructor(options: OutboxOptions = {}) {
    this.#storage = options.storage ?? new MemoryOutboxStorage();
    this.#rest = options.api ? restTransport(options.api) : null;
    for (const message of this.#storage.load()) this.#queue(message.chatId).messages.push(message);
    if (this.#queues.size > 0) queueMicrotask(() => this.wake());
  }

  /** Messages waiting (in flight included). */
  get size(): number {
    let size = 0;
    for (const queue of this.#queues.values()) size += queue.messages.length;
    return size;
  }

  /** The waiting messages of one chat, or of all, oldest first. */
  pending(chatId?: string): OutboxMessage[] {
    if (chatId !== undefined) return [...(this.#queues.get(chatId)?.messages ?? [])];
    return [...this.#queues.values()].flatMap((queue) => queue.messages);
  }

  on<K extends keyof Listeners>(type: K, listener: Listeners[K]): () => void {
    this.#listeners[type].add(listener);
    return () => this.#listeners[type].delete(listener);
  }

  /**
   * Adds a way to send; lower `priority` is tried first. Returns the detach function.
   * The transport calls `wake()` whenever it becomes able to send.
   */
  attach(transport: SendTransport, priority = 0): () => void {
    this.#transports = [...this.#transports, { transport, priority }].sort((a, b) => a.priority - b.priority);
    return () => {
      this.#transports = this.#transports.filter((entry) => entry.transport !== transport);
    };
  }

  /**
   * Queues a message; resolves with its SENT ack (seq, id, time), or rejects with a
   * `SendError` when the server refuses it for good. A `clientId` already waiting in
   * this chat is not queued twice: the promise follows the waiting message.
   */
  send(chatId: string, body: string, options: { replyToSeq?: number; clientId?: string; attachments?: AttachmentInput[] } = {}): Promise<SendResult> {
    return this.sendMessage(chatId, { ...options, body });
  }

  /**
   * Queues a message of text, attachments or both, as `send` does. A message the server
   * could never take (no body and no attachments, a malformed attachment) is refused
   * here, before it is stored: the promise rejects with a `validation_failed` SendError.
   *
   * @example
   * const upload = await api.uploadMedia(chatId, file, { name: file.name });
   * await outbox.sendMessage(chatId, { body: "the plan", attachments: [{ mediaId: upload.mediaId, name: file.name }] });
   */
  sendMessage(chatId: string, outgoing: OutgoingMessage): Promise<SendResult> {
    const clientId = outgoing.clientId ?? crypto.randomUUID();
    const fields: Record<string, unknown> = { clientId };
    if (outgoing.body !== undefined) fields.body = outgoing.body;
    if (outgoing.attachments !== undefined) fields.attachments = outgoing.attachments;
    if (outgoing.replyToSeq !== undefined) fields.replyToSeq = outgoing.replyToSeq;
    const parsed = SendMessageRequest.safeParse(fields);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((issue) => ({ path: issue.path.join("."), message: issue.message }));
      return Promise.reject(new SendError({ code: "validation_failed", message: issues.map((i) => `${i.path}: ${i.message}`).join("; "), retryable: false, issues }));
    }
    // The parsed copy is what is stored and sent on every attempt: the app cannot change it meanwhile.
    const message: OutboxMessage = { chatId, ...parsed.data };
    const promise = new Promise<SendResult>((resolve, reject) => {
      const key = keyOf(message);
      this.#waiters.set(key, [...(this.#waiters.get(key) ?? []), { resolve, reject }]);
    });
    const queue = this.#queue(chatId);
    if (!queue.messages.some((m) => m.clientId === message.clientId)) {
      this.#storage.add(message);
      queue.messages.push(message);
    }
    this.#pump(chatId);
    return promise;
  }

  /**
   * A transport can send now: every chat whose head waits for a connection (or an
   * unknown outcome's backoff) goes at once. The server's `retryAfterMs` is still honoured.
   */
  wake(): void {
    for (const [chatId, queue] of this.#queues) {
      if (queue.timer && !queue.serverDelay) {
        clearTimeout(queue.timer);
        queue.timer = null;
      }
      this.#pump(chatId);
    }
  }

  /**
   * Drops the waiting messages of one chat (or of every chat) without sending them:
   * their promises reject with `error`. An attempt already on its way may still be stored.
   */
  discard(chatId: string | undefined, error: ErrorBody): void {
    for (const [id, queue] of [...this.#queues]) {
      if (chatId !== undefined && id !== chatId) continue;
      if (queue.timer) clearTimeout(queue.timer);
      this.#queues.delete(id);
      for (const message of queue.messages) {
        this.#storage.remove(message);
        this.#settle(message, (waiter) => waiter.reject(new SendError(error)));
      }
    }
  }

  #queue(chatId: string): Queue {
    let queue = this.#queues.get(chatId);
    if (!queue) {
      queue = { messages: [], inFlight: false, timer: null, serverDelay: false, failures: 0 };
      this.#queues.set(chatId, queue);
    }
    return queue;
  }

  #transportFor(chatId: string): SendTransport | null {
    for (const { transport } of this.#transports) if (transport.canSend(chatId)) return transport;
    return this.#rest;
  }

  #pump(chatId: string): void {
    const queue = this.#queues.get(chatId);
    if (!queue || queue.inFlight || queue.timer) return;
    const head = queue.messages[0];
    if (!head) {
      this.#queues.delete(chatId);
      return;
    }
    const transport = this.#transportFor(chatId);
    if (!transport) return; // sockets only, none open: wake() sends it
    queue.inFlight = true;
    let outcome: Promise<SendResult>;
    try {
      outcome = transport.send(head);
    } catch (error) {
      outcome = Promise.reject(error);
    }
    outcome.then(
      (result) => this.#answered(queue, head, () => {
        queue.failures = 0;
        this.#done(queue, head);
        this.#settle(head, (waiter) => waiter.resolve(result));
        this.#emit("sent", head, result);
      }),
      (error: unknown) => this.#answered(queue, head, () => {
        if (error instanceof SendError && !error.error.retryable) {
          this.#done(queue, head);
          this.#settle(head, (waiter) => waiter.reject(error));
          this.#emit("failed", head, error.error);
        } else if (error instanceof SendError) {
          this.#retryIn(queue, chatId, error.error.retryAfterMs ?? 1000, true);
        } else {
          this.#retryIn(queue, chatId, backoffMs(++queue.failures), false);
        }
      }),
    );
  }

  /** Runs `handle` if the message is still the one in flight (not discarded meanwhile), then sends the next. */
  #answered(queue: Queue, message: OutboxMessage, handle: () => void): void {
    if (this.#queues.get(message.chatId) !== queue || queue.messages[0] !== message) return;
    queue.inFlight = false;
    handle();
    this.#pump(message.chatId);
  }

  #done(queue: Queue, message: OutboxMessage): void {
    queue.messages.shift();
    this.#storage.remove(message);
  }

  #retryIn(queue: Queue, chatId: string, delayMs: number, serverDelay: boolean): void {
    if (delayMs <= 0) return; // #answered pumps again now
    queue.serverDelay = serverDelay;
    queue.timer = setTimeout(() => {
      queue.timer = null;
      queue.serverDelay = false;
      this.#pump(chatId);
    }, delayMs);
  }

  #settle(message: OutboxMessage, settle: (waiter: Waiter) => void): void {
    const key = keyOf(message);
    const waiters = this.#waiters.get(key) ?? [];
    this.#waiters.delete(key);
    for (const waiter of waiters) settle(waiter);
  }

  #emit<K extends keyof Listeners>(type: K, ...args: Parameters<Listeners[K]>): void {
    for (const listener of this.#listeners[type]) (listener as (...a: Parameters<Listeners[K]>) => void)(...args);
  }
}

/** Sends over `POST /api/chats/:chatId/messages`; the server's error bodies become SendErrors. */
function restTransport(api: Pick<ApiClient, "sendMessage">): SendTransport {
  return {
    canSend: () => true,
    async send(message) {
      try {
        return await api.sendMessage(message.chatId, sendFields(message));
      } catch (error) {
        if (error instanceof ApiError) throw new SendError(error.body);
        throw error; // a network failure: the outcome is unknown
      }
    },
  };
}

/** The fields of a stored message every transport sends, the same on every attempt. */
export function sendFields(message: OutboxMessage): SendMessageRequest {
  const fields: SendMessageRequest = { clientId: message.clientId };
  if (message.body !== undefined) fields.body = message.body;
  if (message.attachments !== undefined) fields.attachments = message.attachments;
  if (message.replyToSeq !== undefined) fields.replyToSeq = message.replyToSeq;
  return fields;
}

const keyOf = (message: OutboxMessage) => `${message.chatId}\n${message.clientId}`;
const sameMessage = (a: OutboxMessage, b: OutboxMessage) => a.chatId === b.chatId && a.clientId === b.clientId;

function isOutboxMessage(value: unknown): value is OutboxMessage {
  if (typeof value !== "object" || value === null) return false;
  const message = value as Record<string, unknown>;
  return (
    typeof message.chatId === "string" &&
    typeof message.clientId === "string" &&
    (message.body === undefined || typeof message.body === "string") &&
    (message.attachments === undefined || Array.isArray(message.attachments)) &&
    (message.body !== undefined || message.attachments !== undefined) &&
    (message.replyToSeq === undefined || typeof message.replyToSeq === "number")
  );
}
