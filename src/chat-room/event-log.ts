import { AppError } from "../lib/app-error.ts";
import { utf8ByteLength, type ChatEvent, type MessageEvent, type SendMessageRequest } from "../protocol/index.ts";

/** The columns of one `events` row, as SQLite returns them. */
type EventRow = {
  seq: number;
  type: string;
  created_at: number;
  actor_id: string;
  actor_device_id: string | null;
  client_id: string | null;
  message_id: string | null;
  body: string | null;
  reply_to_seq: number | null;
  data: string | null;
};

export type Sender = { userId: string; deviceId: string };
export type AppendedMessage = { event: MessageEvent; duplicate: boolean };
/** A non-message event before it has a seq. */
export type NewEvent = Exclude<ChatEvent, MessageEvent> extends infer E
  ? E extends ChatEvent
    ? Omit<E, "seq" | "createdAt">
    : never
  : never;

const SELECT_COLUMNS =
  "seq, type, created_at, actor_id, actor_device_id, client_id, message_id, body, reply_to_seq, data";

/**
 * The chat's event log: the sequencer and its storage. Every statement here is
 * synchronous, so an append and the broadcast that follows it run in one turn of
 * the object and commit together (the output gate holds replies until then).
 *
 * This is the hot path, so it uses prepared-free raw SQL on `ctx.storage.sql`
 * rather than the query builder: one INSERT per message, nothing else.
 */
export class EventLog {
  readonly #sql: SqlStorage;
  #headSeq: number;

  constructor(sql: SqlStorage, headSeq?: number) {
    this.#sql = sql;
    this.#headSeq = headSeq ?? sql.exec<{ head: number }>("SELECT coalesce(max(seq), 0) AS head FROM events").one().head;
  }

  /** The log of a chat that does not exist: nothing is read (there is no table yet). */
  static empty(sql: SqlStorage): EventLog {
    return new EventLog(sql, 0);
  }

  /** The seq of the latest event (0 before the chat exists). */
  get headSeq(): number {
    return this.#headSeq;
  }

  /**
   * Stores a message exactly once per (device, clientId). A retry returns the stored
   * original; the same clientId with other content is `idempotency_conflict`.
   */
  appendMessage(sender: Sender, input: SendMessageRequest, now: number): AppendedMessage {
    const seq = this.#headSeq + 1;
    const messageId = crypto.randomUUID();
    const { rowsWritten } = this.#sql.exec(
      `INSERT INTO events (seq, type, created_at, actor_id, actor_device_id, client_id, message_id, body, reply_to_seq)
       VALUES (?, 'message', ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (actor_device_id, client_id) DO NOTHING`,
      seq, now, sender.userId, sender.deviceId, input.clientId, messageId, input.body, input.replyToSeq ?? null,
    );
    if (rowsWritten > 0) {
      this.#headSeq = seq;
      const event: MessageEvent = {
        type: "message", seq, createdAt: now, messageId, senderId: sender.userId,
        senderDeviceId: sender.deviceId, clientId: input.clientId, body: input.body,
      };
      if (input.replyToSeq !== undefined) event.replyToSeq = input.replyToSeq;
      return { event, duplicate: false };
    }
    const original = this.findByClientId(sender.deviceId, input.clientId);
    if (!original) throw new Error("insert conflicted but no row holds the clientId");
    return { event: assertSameContent(original, input), duplicate: true };
  }

  /** The message a device stored under `clientId`, if any. */
  findByClientId(deviceId: string, clientId: string): MessageEvent | null {
    const row = this.#sql
      .exec<EventRow>(`SELECT ${SELECT_COLUMNS} FROM events WHERE actor_device_id = ? AND client_id = ?`, deviceId, clientId)
      .toArray()[0];
    return row ? (toEvent(row) as MessageEvent) : null;
  }

  /** Appends a non-message event (chat created, later membership changes and deletes). */
  append(event: NewEvent, now: number): ChatEvent {
    const seq = this.#headSeq + 1;
    const { type, actorId, ...data } = event;
    this.#sql.exec(
      "INSERT INTO events (seq, type, created_at, actor_id, data) VALUES (?, ?, ?, ?, ?)",
      seq, type, now, actorId, JSON.stringify(data),
    );
    this.#headSeq = seq;
    return { ...event, seq, createdAt: now } as ChatEvent;
  }

  typeAt(seq: number): string | null {
    return this.#sql.exec<{ type: string }>("SELECT type FROM events WHERE seq = ?", seq).toArray()[0]?.type ?? null;
  }

  /**
   * Up to `limit` events with seq > `after`, ascending, holding at most `maxBytes` of
   * event JSON (always at least one event, so one event larger than that still moves
   * a reader forward). Rows are read one at a time and reading stops at the cap: a
   * page of big messages never sits in memory beyond what is returned.
   */
  after(after: number, limit: number, maxBytes = Number.POSITIVE_INFINITY): EventPage {
    const rows = this.#sql.exec<EventRow>(`SELECT ${SELECT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit);
    return takePage(rows, maxBytes);
  }

  /** Up to `limit` events with `floor` <= seq < `before`, the newest first read, returned ascending; capped like `after`. */
  before(before: number, floor: number, limit: number, maxBytes = Number.POSITIVE_INFINITY): EventPage {
    const rows = this.#sql.exec<EventRow>(
      `SELECT ${SELECT_COLUMNS} FROM events WHERE seq < ? AND seq >= ? ORDER BY seq DESC LIMIT ?`,
      before, floor, limit,
    );
    const page = takePage(rows, maxBytes);
    page.events.reverse();
    page.json.reverse();
    return page;
  }
}

/** Events in read order with their JSON (for frames built without serializing twice). */
export type EventPage = { events: ChatEvent[]; json: string[]; bytes: number };

function takePage(rows: Iterable<EventRow>, maxBytes: number): EventPage {
  const page: EventPage = { events: [], json: [], bytes: 0 };
  for (const row of rows) {
    const event = toEvent(row);
    const json = JSON.stringify(event);
    const bytes = utf8ByteLength(json) + 1; // and its comma
    if (page.events.length > 0 && page.bytes + bytes > maxBytes) break;
    page.events.push(event);
    page.json.push(json);
    page.bytes += bytes;
  }
  return page;
}

function toEvent(row: EventRow): ChatEvent {
  if (row.type === "message") {
    const event: MessageEvent = {
      type: "message",
      seq: row.seq,
      createdAt: row.created_at,
      messageId: row.message_id!,
      senderId: row.actor_id,
      senderDeviceId: row.actor_device_id!,
      clientId: row.client_id!,
      body: row.body!,
    };
    if (row.reply_to_seq !== null) event.replyToSeq = row.reply_to_seq;
    return event;
  }
  return { ...JSON.parse(row.data ?? "{}"), type: row.type, seq: row.seq, createdAt: row.created_at, actorId: row.actor_id } as ChatEvent;
}

function assertSameContent(original: MessageEvent, input: SendMessageRequest): MessageEvent {
  if (original.body !== input.body || original.replyToSeq !== input.replyToSeq) {
    throw new AppError("idempotency_conflict", 409, `clientId ${input.clientId} was already used for another message`, {
      retryable: false,
    });
  }
  return original;
}
