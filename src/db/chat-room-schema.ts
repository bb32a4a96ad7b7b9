import { integer, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

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
 * Members and the seq range in which they belong. `notifiedSeq` is how far the
 * member's User object has been told about this chat (fan-out progress, a
 * watermark per member: state grows with members, not with messages).
 */
export const members = sqliteTable("members", {
  userId: text("user_id").primaryKey(),
  role: text("role", { enum: ["admin", "member"] }).notNull(),
  joinedSeq: integer("joined_seq").notNull(),
  leftSeq: integer("left_seq"),
  notifiedSeq: integer("notified_seq").notNull().default(0),
});

/**
 * The chat's event log, one row per event (never per member). Messages use the
 * message columns; other events keep their fields as JSON in `data`. There is no
 * status column: statuses come from per-member watermarks.
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
  },
  // The idempotency key: a device's clientId is stored once. NULLs (non-message
  // events) never collide in a SQLite unique index.
  (table) => [uniqueIndex("events_client_id").on(table.actorDeviceId, table.clientId)],
);
