import { getTableColumns } from "drizzle-orm";
import { events } from "../db/chat-room-schema.ts";
import { AppError } from "../lib/app-error.ts";
import { requestHash } from "./request-hash.ts";
import { utf8ByteLength, type Attachment, type ChatEvent, type MediaKind, type MessageEvent, type SendMessageRequest } from "../protocol/index.ts";

/** One `events` row as the raw statements below return it (columns aliased to the drizzle keys). */
type EventRow = typeof events.$inferSelect;
/** A row as pages read it: what an event carries, without the request hash (only a retry needs it). */
type PageRow = Omit<EventRow, "requestHash">;
type EventColumn = keyof EventRow;

/** The SQL name of a column of the drizzle table: the table is defined once, in the schema. */
const column = (key: EventColumn): string => getTableColumns(events)[key].name;
const selectList = (keys: EventColumn[]) => keys.map((key) => `${column(key)} AS "${key}"`).join(", ");
const SELECT_COLUMNS = selectList(Object.keys(getTableColumns(events)) as EventColumn[]);
const PAGE_COLUMNS = selectList((Object.keys(getTableColumns(events)) as EventColumn[]).filter((key) => key !== "requestHash"));
const MESSAGE_COLUMNS = (["seq", "type", "createdAt", "actorId", "actorDeviceId", "clientId", "messageId", "body", "replyToSeq", "messageNo", "requestHash", "attachments"] as const).map(column);
const INSERT_MESSAGE = `INSERT INTO events (${MESSAGE_COLUMNS.join(", ")}) VALUES (?, 'message', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
  ON CONFLICT (${column("actorDeviceId")}, ${column("clientId")}) DO NOTHING`;
const INSERT_OTHER = `INSERT INTO events (${(["seq", "type", "createdAt", "actorId", "data"] as const).map(column).join(", ")}) VALUES (?, ?, ?, ?, ?)`;
const SELECT_BY_CLIENT_ID = `SELECT ${SELECT_COLUMNS} FROM events WHERE ${column("actorDeviceId")} = ? AND ${column("clientId")} = ?`;
const SELECT_HEAD = `SELECT seq, ${column("createdAt")} AS "createdAt" FROM events ORDER BY seq DESC LIMIT 1`;
/**
 * The latest message at or before a seq. It walks the primary key down from that seq,
 * past the non-message events in between only (membership changes, renames): no count
 * and no extra index on the hot path's table.
 */
const SELECT_MESSAGE_AT_OR_BEFORE = `SELECT seq, ${column("messageNo")} AS "messageNo", ${column("actorId")} AS "senderId", ${column("body")} AS "body",
  ${column("attachments")} AS "attachments", ${column("deletedSeq")} AS "deletedSeq", ${column("createdAt")} AS "createdAt" FROM events WHERE seq <= ? AND ${column("messageNo")} IS NOT NULL ORDER BY seq DESC LIMIT 1`;
const SELECT_MESSAGE_NO_AT_OR_BEFORE = `SELECT ${column("messageNo")} AS "messageNo" FROM events
  WHERE seq <= ? AND ${column("messageNo")} IS NOT NULL ORDER BY seq DESC LIMIT 1`;
const SELECT_SENDERS_BETWEEN = `SELECT DISTINCT ${column("actorId")} AS "senderId" FROM events
  WHERE seq > ? AND seq <= ? AND ${column("messageNo")} IS NOT NULL`;
const SELECT_MESSAGE_FROM_BETWEEN = `SELECT 1 AS "found" FROM events
  WHERE seq > ? AND seq <= ? AND ${column("actorId")} = ? AND ${column("messageNo")} IS NOT NULL LIMIT 1`;
const SELECT_FIRST_MESSAGE_AFTER = `SELECT seq, ${column("createdAt")} AS "createdAt" FROM events
  WHERE seq > ? AND ${column("messageNo")} IS NOT NULL ORDER BY seq LIMIT 1`;
const SELECT_MESSAGE_AT = `SELECT seq, ${column("actorId")} AS "senderId", ${column("createdAt")} AS "createdAt", ${column("deletedSeq")} AS "deletedSeq"
  FROM events WHERE seq = ? AND ${column("messageNo")} IS NOT NULL`;
/**
 * A message deleted for everyone keeps its row (seq, sender, time, clientId and request
 * hash, so a retried send still gets its original ack) and loses its content. A row
 * stored before request hashes were kept gets one here, from the content it loses (the
 * second parameter; its own hash stays when it has one).
 */
const TOMBSTONE = `UPDATE events SET ${column("body")} = NULL, ${column("attachments")} = NULL, ${column("replyToSeq")} = NULL, ${column("deletedSeq")} = ?,
  ${column("requestHash")} = COALESCE(${column("requestHash")}, ?)
  WHERE seq = ? AND ${column("messageNo")} IS NOT NULL AND ${column("deletedSeq")} IS NULL`;
/** The content of a message stored without a request hash (before hashes were kept), which a retry was compared with. */
const SELECT_UNHASHED_CONTENT = `SELECT ${column("body")} AS "body", ${column("replyToSeq")} AS "replyToSeq" FROM events
  WHERE seq = ? AND ${column("messageNo")} IS NOT NULL AND ${column("requestHash")} IS NULL`;
const SELECT_SENDER_AT = `SELECT ${column("actorId")} AS "senderId" FROM events WHERE seq = ? AND ${column("messageNo")} IS NOT NULL`;
const SELECT_AFTER = `SELECT ${PAGE_COLUMNS} FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?`;
const SELECT_BEFORE = `SELECT ${PAGE_COLUMNS} FROM events WHERE seq < ? AND seq >= ? ORDER BY seq DESC LIMIT ?`;

export type Sender = { userId: string; deviceId: string };
/** A message as a chat list shows it, with its number among the chat's messages (1, 2, 3…). */
export type NumberedMessage = {
  seq: number;
  messageNo: number;
  senderId: string;
  body: string | null;
  /** Its files as stored (JSON `Attachment[]`), or null. */
  attachments: string | null;
  deletedSeq: number | null;
  createdAt: number;
};
/** What a delete needs to know of a message: who sent it, when, and whether it is already a tombstone. */
export type MessageRef = { seq: number; senderId: string; createdAt: number; deletedSeq: number | null };
export type AppendedMessage = { event: MessageEvent; duplicate: boolean };
/** A non-message event before it has a seq. */
export type NewEvent = Exclude<ChatEvent, MessageEvent> extends infer E
  ? E extends ChatEvent
    ? Omit<E, "seq" | "createdAt">
    : never
  : never;

/**
 * The chat's event log: the sequencer and its storage. Every statement here is
 * synchronous, so an append and the broadcast that follows it run in one turn of
 * the object and commit together (the output gate holds replies until then).
 *
 * This is the hot path, so it uses raw SQL on `ctx.storage.sql` rather than the query
 * builder (one INSERT per message, nothing else), with every statement built from the
 * drizzle table in `src/db/chat-room-schema.ts`, so the table is defined once.
 */
export class EventLog {
  readonly #sql: SqlStorage;
  #headSeq: number;
  #headCreatedAt: number;
  /** The chat's latest message (kept in memory: every member's chat-list entry shows it). */
  #lastMessage: NumberedMessage | null;

  constructor(sql: SqlStorage, empty = false) {
    this.#sql = sql;
    const head = empty ? undefined : sql.exec<{ seq: number; createdAt: number }>(SELECT_HEAD).toArray()[0];
    this.#headSeq = head?.seq ?? 0;
    this.#headCreatedAt = head?.createdAt ?? 0;
    this.#lastMessage = head ? this.#messageAtOrBefore(head.seq) : null;
  }

  /** The log of a chat that does not exist: nothing is read (there is no table yet). */
  static empty(sql: SqlStorage): EventLog {
    return new EventLog(sql, true);
  }

  /** When the latest event was stored (ms; 0 before the chat exists): the chat's last activity. */
  get headCreatedAt(): number {
    return this.#headCreatedAt;
  }

  /** The seq of the latest event (0 before the chat exists). */
  get headSeq(): number {
    return this.#headSeq;
  }

  /** The number of the latest message (0 before the first): how many messages the chat has. */
  get headMessageNo(): number {
    return this.#lastMessage?.messageNo ?? 0;
  }

  /** The latest message with seq <= `seq`, if any (in memory when it is the chat's latest). */
  messageAtOrBefore(seq: number): NumberedMessage | null {
    const last = this.#lastMessage;
    if (!last || seq >= last.seq) return last;
    return this.#messageAtOrBefore(seq);
  }

  /** The number of the latest message with seq <= `seq` (0 when none): messages up to there. */
  messageNoAtOrBefore(seq: number): number {
    const last = this.#lastMessage;
    if (!last || seq >= last.seq) return last?.messageNo ?? 0;
    return this.#sql.exec<{ messageNo: number }>(SELECT_MESSAGE_NO_AT_OR_BEFORE, seq).toArray()[0]?.messageNo ?? 0;
  }

  #messageAtOrBefore(seq: number): NumberedMessage | null {
    return this.#sql.exec<NumberedMessage>(SELECT_MESSAGE_AT_OR_BEFORE, seq).toArray()[0] ?? null;
  }

  /**
   * Stores a message exactly once per (device, clientId). A retry returns the stored
   * original; the same clientId with other content is `idempotency_conflict`.
   */
  appendMessage(sender: Sender, input: SendMessageRequest, now: number, attachments?: Attachment[]): AppendedMessage {
    const seq = this.#headSeq + 1;
    const messageNo = this.headMessageNo + 1;
    const messageId = crypto.randomUUID();
    const hash = requestHash(input);
    const attachmentsJson = attachments && attachments.length > 0 ? JSON.stringify(attachments) : null;
    const { rowsWritten } = this.#sql.exec(
      INSERT_MESSAGE,
      seq, now, sender.userId, sender.deviceId, input.clientId, messageId, input.body ?? null, input.replyToSeq ?? null, messageNo, hash, attachmentsJson,
    );
    if (rowsWritten > 0) {
      this.#headSeq = seq;
      this.#headCreatedAt = now;
      this.#lastMessage = { seq, messageNo, senderId: sender.userId, body: input.body ?? null, attachments: attachmentsJson, deletedSeq: null, createdAt: now };
      const event: MessageEvent = {
        type: "message", seq, createdAt: now, messageId, senderId: sender.userId,
        senderDeviceId: sender.deviceId, clientId: input.clientId,
      };
      if (input.body !== undefined) event.body = input.body;
      if (attachmentsJson !== null) event.attachments = attachments;
      if (input.replyToSeq !== undefined) event.replyToSeq = input.replyToSeq;
      return { event, duplicate: false };
    }
    const row = this.#sql.exec<EventRow>(SELECT_BY_CLIENT_ID, sender.deviceId, input.clientId).toArray()[0];
    if (!row) throw new Error("insert conflicted but no row holds the clientId");
    // The hash, when the row has one; a row stored before hashes were kept has its body.
    const same = row.requestHash !== null ? row.requestHash === hash : row.body === input.body && (row.replyToSeq ?? undefined) === input.replyToSeq;
    if (!same) {
      throw new AppError("idempotency_conflict", 409, `clientId ${input.clientId} was already used for another message`, { retryable: false });
    }
    return { event: toEvent(row) as MessageEvent, duplicate: true };
  }

  /** The message a device stored under `clientId`, if any. */
  findByClientId(deviceId: string, clientId: string): MessageEvent | null {
    const row = this.#sql
      .exec<EventRow>(SELECT_BY_CLIENT_ID, deviceId, clientId)
      .toArray()[0];
    return row ? (toEvent(row) as MessageEvent) : null;
  }

  /** Appends a non-message event (chat created, later membership changes and deletes). */
  append(event: NewEvent, now: number): ChatEvent {
    const seq = this.#headSeq + 1;
    const { type, actorId, ...data } = event;
    this.#sql.exec(
      INSERT_OTHER,
      seq, type, now, actorId, JSON.stringify(data),
    );
    this.#headSeq = seq;
    this.#headCreatedAt = now;
    return { ...event, seq, createdAt: now } as ChatEvent;
  }

  /** Who sent the messages with `after` < seq <= `upTo` (each once). */
  sendersBetween(after: number, upTo: number): string[] {
    if (upTo <= after) return [];
    return this.#sql.exec<{ senderId: string }>(SELECT_SENDERS_BETWEEN, after, upTo).toArray().map((row) => row.senderId);
  }

  /** Whether `senderId` sent a message with `after` < seq <= `upTo`. */
  hasMessageFrom(senderId: string, after: number, upTo: number): boolean {
    if (upTo <= after) return false;
    return this.#sql.exec(SELECT_MESSAGE_FROM_BETWEEN, after, upTo, senderId).toArray().length > 0;
  }

  /** The first message after `seq` (its seq and when it was stored), if any. */
  firstMessageAfter(seq: number): { seq: number; createdAt: number } | null {
    return this.#sql.exec<{ seq: number; createdAt: number }>(SELECT_FIRST_MESSAGE_AFTER, seq).toArray()[0] ?? null;
  }

  /** The sender of the message at `seq`; null when that seq is not a message. */
  senderAt(seq: number): string | null {
    return this.#sql.exec<{ senderId: string }>(SELECT_SENDER_AT, seq).toArray()[0]?.senderId ?? null;
  }

  /** The message at `seq`; null when that seq is not a message (another event, or past the head). */
  messageAt(seq: number): MessageRef | null {
    return this.#sql.exec<MessageRef>(SELECT_MESSAGE_AT, seq).toArray()[0] ?? null;
  }

  /**
   * Makes the message at `targetSeq` a tombstone of the delete event `deletedSeq`: its
   * body, files and reply are gone from storage (and from the in-memory latest message,
   * which every chat-list entry previews). False when it is not a message or already one.
   */
  tombstone(targetSeq: number, deletedSeq: number): boolean {
    // A row without a request hash was told from a conflict by its content: its hash
    // keeps that answer once the content is gone.
    const unhashed = this.#sql.exec<{ body: string | null; replyToSeq: number | null }>(SELECT_UNHASHED_CONTENT, targetSeq).toArray()[0];
    const hash = unhashed ? requestHash({ body: unhashed.body ?? undefined, replyToSeq: unhashed.replyToSeq ?? undefined }) : null;
    const { rowsWritten } = this.#sql.exec(TOMBSTONE, deletedSeq, hash, targetSeq);
    if (rowsWritten === 0) return false;
    const last = this.#lastMessage;
    if (last?.seq === targetSeq) this.#lastMessage = { ...last, body: null, attachments: null, deletedSeq };
    return true;
  }

  typeAt(seq: number): string | null {
    return this.#sql.exec<{ type: string }>("SELECT type FROM events WHERE seq = ?", seq).toArray()[0]?.type ?? null;
  }

  /**
   * Appends to `page` the events with `after` < seq <= `upTo`, ascending, until it holds
   * `limit` events or `maxBytes` of event JSON (a page always takes at least one event,
   * so one event larger than that still moves a reader forward). Rows are read one at a
   * time and reading stops at the cap: a page of big messages never sits in memory
   * beyond what is returned. Returns whether the page filled up.
   */
  readAfter(page: EventPage, after: number, upTo: number, limit: number, maxBytes: number): boolean {
    return takeInto(page, this.#sql.exec<PageRow>(SELECT_AFTER, after, upTo, limit - page.events.length), limit, maxBytes);
  }

  /**
   * Like `readAfter`, descending: the events with `floor` <= seq < `before`, newest
   * first (the caller reverses the page once it is complete).
   */
  readBefore(page: EventPage, before: number, floor: number, limit: number, maxBytes: number): boolean {
    return takeInto(page, this.#sql.exec<PageRow>(SELECT_BEFORE, before, floor, limit - page.events.length), limit, maxBytes);
  }
}

/** Events in read order with their JSON (for frames built without serializing twice). */
export type EventPage = { events: ChatEvent[]; json: string[]; bytes: number };

export function emptyPage(): EventPage {
  return { events: [], json: [], bytes: 0 };
}

/** Takes rows into `page` until it holds `limit` events or `maxBytes`; true when it is full. */
function takeInto(page: EventPage, rows: Iterable<PageRow>, limit: number, maxBytes: number): boolean {
  for (const row of rows) {
    const event = toEvent(row);
    const json = JSON.stringify(event);
    const bytes = utf8ByteLength(json) + 1; // and its comma
    if (page.events.length > 0 && page.bytes + bytes > maxBytes) return true;
    page.events.push(event);
    page.json.push(json);
    page.bytes += bytes;
  }
  return page.events.length >= limit;
}

/** The kinds of a stored message's files, for its chat-list preview (none: undefined). */
export function attachmentKinds(attachmentsJson: string | null): MediaKind[] | undefined {
  if (attachmentsJson === null) return undefined;
  return (JSON.parse(attachmentsJson) as Attachment[]).map((attachment) => attachment.kind);
}

function toEvent(row: PageRow): ChatEvent {
  if (row.type === "message") {
    const event: MessageEvent = {
      type: "message",
      seq: row.seq,
      createdAt: row.createdAt,
      messageId: row.messageId!,
      senderId: row.actorId,
      senderDeviceId: row.actorDeviceId!,
      clientId: row.clientId!,
    };
    // A tombstone keeps only who sent it, when, and which event deleted it.
    if (row.deletedSeq !== null) {
      event.deletedSeq = row.deletedSeq;
      return event;
    }
    if (row.body !== null) event.body = row.body;
    if (row.attachments !== null) event.attachments = JSON.parse(row.attachments) as Attachment[];
    if (row.replyToSeq !== null) event.replyToSeq = row.replyToSeq;
    return event;
  }
  return { ...JSON.parse(row.data ?? "{}"), type: row.type, seq: row.seq, createdAt: row.createdAt, actorId: row.actorId } as ChatEvent;
}
