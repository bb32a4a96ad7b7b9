import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

/** One ChatRoom object per chat: this database holds that one chat. */

/** Exactly one row: the chat itself. */
export const chat = sqliteTable("chat", {
  chatId: text("chat_id").primaryKey(),
  kind: text("kind", { enum: ["direct", "group", "broadcast"] }).notNull(),
  name: text("name").notNull(),
  description: text("description").notNull().default(""),
  createdBy: text("created_by").notNull(),
  createdAt: integer("created_at").notNull(),
});

/**
 * Membership periods: one row each time a user becomes a member, closed (`leftSeq`)
 * by the event that removed them or that they left with. A member sees exactly the
 * events with `joinedSeq <= seq <= leftSeq` of each of their periods. `notifiedSeq`
 * is how far the member's User object has been told about this chat (the fan-out's
 * progress), `readSeq` how far the member has read (their unread count starts after
 * it): watermarks per period, so state grows with members, not with messages.
 */
export const members = sqliteTable(
  "members",
  {
    userId: text("user_id").notNull(),
    joinedSeq: integer("joined_seq").notNull(),
    leftSeq: integer("left_seq"),
    role: text("role", { enum: ["admin", "member"] }).notNull(),
    notifiedSeq: integer("notified_seq").notNull().default(0),
    /**
     * The member's read position in this period, merged by max (it never moves back).
     * A period starts read up to the event that began it; sending a message reads up to it.
     */
    readSeq: integer("read_seq").notNull().default(0),
    /**
     * Receipt watermarks of the period, merged by max: a device of the member has every
     * event up to `deliveredSeq`, the member has seen up to `seenSeq` (which a `read`
     * moves; a send does not). Both start at the event that began the period.
     */
    deliveredSeq: integer("delivered_seq").notNull().default(0),
    seenSeq: integer("seen_seq").notNull().default(0),
  },
  (table) => [primaryKey({ columns: [table.userId, table.joinedSeq] })],
);

/**
 * When members' receipt watermarks moved: one row per advance, from `fromSeq` (the
 * watermark before, excluded) to `seq`, at most `Limits.receiptAdvancesKept` per member
 * and kind (older rows are deleted), written only in chats small enough for per-member
 * detail. A message's time for a member is that of the advance whose range holds its
 * seq. Grows with members, never with messages.
 */
export const receiptAdvances = sqliteTable(
  "receipt_advances",
  {
    userId: text("user_id").notNull(),
    kind: text("kind", { enum: ["delivered", "seen"] }).notNull(),
    fromSeq: integer("from_seq").notNull(),
    seq: integer("seq").notNull(),
    at: integer("at").notNull(),
  },
  (table) => [primaryKey({ columns: [table.userId, table.kind, table.seq] })],
);

/**
 * People an admin asked to add whose privacy setting wants to be asked first: they
 * accept or decline from their invitations list. One row per invited user.
 */
export const invitations = sqliteTable("invitations", {
  userId: text("user_id").primaryKey(),
  invitedBy: text("invited_by").notNull(),
  createdAt: integer("created_at").notNull(),
});

/** In a direct chat: who blocked whom (neither may send while a row exists). */
export const blocks = sqliteTable(
  "blocks",
  {
    blockerId: text("blocker_id").notNull(),
    blockedId: text("blocked_id").notNull(),
  },
  (table) => [primaryKey({ columns: [table.blockerId, table.blockedId] })],
);

/**
 * The chat's event log, one row per event (never per member). Messages use the
 * message columns; other events keep their fields as JSON in `data`. There is no
 * status column: statuses come from per-member watermarks.
 *
 * `messageNo` numbers the messages 1, 2, 3… in seq order (NULL for other events), so
 * the messages between two seqs are a subtraction of two numbers, never a count over
 * the log: a member's unread count is the latest message's number minus that of the
 * latest message at or before their read position.
 */
export const events = sqliteTable(
  "events",
  {
    seq: integer("seq").primaryKey(),
    type: text("type").notNull(),
    createdAt: integer("created_at").notNull(),
    actorId: text("actor_id").notNull(),
    actorDeviceId: text("actor_device_id"),
    clientId: text("client_id"),
    messageId: text("message_id"),
    body: text("body"),
    replyToSeq: integer("reply_to_seq"),
    data: text("data"),
    messageNo: integer("message_no"),
    /**
     * A message's request as the sender sent it, hashed (see `requestHash`): a retry with
     * the same clientId is compared with this, not with the stored content, which a delete
     * may have removed. NULL for rows stored before this column (their body is compared).
     */
    requestHash: text("request_hash"),
    /** A message's files as JSON (`Attachment[]`); NULL for text only and once deleted. */
    attachments: text("attachments"),
    /** Set when the message was deleted for everyone: the seq of its `message.deleted` event. */
    deletedSeq: integer("deleted_seq"),
  },
  // The idempotency key: a device's clientId is stored once. NULLs (non-message
  // events) never collide in a SQLite unique index.
  (table) => [uniqueIndex("events_client_id").on(table.actorDeviceId, table.clientId)],
);

/**
 * Files uploaded to this chat (their bytes are in R2 under `r2Key`). An upload is
 * `uploading` from when the Worker starts streaming it (`completing` while R2 assembles
 * a multipart upload), `ready` once stored, and
 * `attached` when exactly one message (`attachedSeq`) carries it. Until attached it
 * expires at `expiresAt`; `deleting` rows wait for their R2 object to be deleted (the
 * message was deleted for everyone, or the upload expired), then go.
 */
export const media = sqliteTable(
  "media",
  {
    mediaId: text("media_id").primaryKey(),
    uploaderId: text("uploader_id").notNull(),
    state: text("state", { enum: ["uploading", "completing", "ready", "attached", "deleting"] }).notNull(),
    r2Key: text("r2_key").notNull(),
    kind: text("kind", { enum: ["image", "video", "audio", "document"] }),
    contentType: text("content_type"),
    size: integer("size").notNull(),
    createdAt: integer("created_at").notNull(),
    /** When a pending upload is deleted; NULL once attached. */
    expiresAt: integer("expires_at"),
    attachedSeq: integer("attached_seq"),
    /** The file name given at upload (a message's attachment may name it otherwise). */
    name: text("name"),
    /**
     * A multipart upload in progress or done, as JSON (`MultipartState` in
     * src/chat-room/media-registry.ts): R2's upload id, the part size and count, and
     * each stored part's etag (at most `Limits.maxMultipartParts`). NULL for single uploads.
     */
    multipart: text("multipart"),
  },
  (table) => [
    index("media_by_uploader").on(table.uploaderId, table.state),
    index("media_by_expiry").on(table.expiresAt),
    index("media_by_message").on(table.attachedSeq),
  ],
);
