import { sql } from "drizzle-orm";
import { index, integer, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

/** One User object per account: this database holds that one account. */

/** Exactly one row: the account. */
export const profile = sqliteTable("profile", {
  userId: text("user_id").primaryKey(),
  phone: text("phone").notNull(),
  displayName: text("display_name").notNull().default(""),
  about: text("about").notNull().default(""),
  /** Who may add this account to groups without asking: `everyone`, `contacts`, `nobody`. */
  groupAdd: text("group_add", { enum: ["everyone", "contacts", "nobody"] }).notNull().default("everyone"),
  /** Whether the account hides its last seen time (and then sees no one else's). */
  hideLastSeen: integer("hide_last_seen", { mode: "boolean" }).notNull().default(false),
  /** The account's avatar (an R2 key's last part); NULL when it has none. */
  avatarId: text("avatar_id"),
  createdAt: integer("created_at").notNull(),
});

/** A device is one login. Revoked devices are kept so their tokens stay refused. */
export const devices = sqliteTable("devices", {
  deviceId: text("device_id").primaryKey(),
  name: text("name").notNull(),
  createdAt: integer("created_at").notNull(),
  lastActiveAt: integer("last_active_at").notNull(),
  revokedAt: integer("revoked_at"),
});

/**
 * Refresh tokens by SHA-256 hash. A token is used once; a used one presented again
 * means it was stolen (or replayed), so the device is revoked.
 */
export const refreshTokens = sqliteTable(
  "refresh_tokens",
  {
    tokenHash: text("token_hash").primaryKey(),
    deviceId: text("device_id").notNull(),
    createdAt: integer("created_at").notNull(),
    usedAt: integer("used_at"),
  },
  (table) => [index("refresh_tokens_device").on(table.deviceId)],
);

/**
 * The chats this account belongs to (or belonged to), as a chat list draws them. Each
 * row is merged by max(headSeq, then readSeq): a late or repeated update from the chat
 * never moves it backwards. `pinned`, `mutedUntil` and `archived` are this account's
 * own settings: only the account writes them, never the chat's updates.
 */
export const chats = sqliteTable(
  "chats",
  {
    chatId: text("chat_id").primaryKey(),
    kind: text("kind", { enum: ["direct", "group", "broadcast"] }).notNull(),
    name: text("name").notNull(),
    peerId: text("peer_id"),
    addedAt: integer("added_at").notNull(),
    /** The chat's latest seq this account has been told of. */
    headSeq: integer("head_seq").notNull().default(0),
    memberCount: integer("member_count").notNull().default(0),
    /** When the chat's latest event was stored (ms): the chat list's order. */
    lastActivityAt: integer("last_activity_at").notNull().default(0),
    /** `member`, or how the account stopped being one (`left`, `removed`). */
    membership: text("membership", { enum: ["member", "left", "removed"] }).notNull().default("member"),
    /** The account's read position in the chat, and the messages after it (as the chat counted them). */
    readSeq: integer("read_seq").notNull().default(0),
    unreadCount: integer("unread_count").notNull().default(0),
    /**
     * How far the account's own messages have gone (DELIVERED / SEEN watermarks, from
     * the chat's receipts pushes and updates, merged by max), and when they last moved:
     * a resuming stream gets the chats whose receipts moved since it last heard.
     */
    deliveredUpTo: integer("delivered_up_to").notNull().default(0),
    seenUpTo: integer("seen_up_to").notNull().default(0),
    receiptsAt: integer("receipts_at").notNull().default(0),
    /** The latest message the account can see (all NULL when there is none). */
    lastMessageSeq: integer("last_message_seq"),
    lastMessageSenderId: text("last_message_sender_id"),
    lastMessageBody: text("last_message_body"),
    lastMessageCreatedAt: integer("last_message_created_at"),
    /** The latest message's files, as a JSON array of kinds (`["image"]`); NULL for none. */
    lastMessageAttachments: text("last_message_attachments"),
    /** Whether the latest message was deleted for everyone. */
    lastMessageDeleted: integer("last_message_deleted", { mode: "boolean" }).notNull().default(false),
    pinned: integer("pinned", { mode: "boolean" }).notNull().default(false),
    /** Muted until this time (ms); NULL when not muted. */
    mutedUntil: integer("muted_until"),
    archived: integer("archived", { mode: "boolean" }).notNull().default(false),
  },
  (table) => [
    index("chats_by_activity").on(table.lastActivityAt, table.chatId),
    // Only archived chats are in it (few): the archived list is read without walking the rest.
    index("chats_archived_by_activity").on(table.lastActivityAt, table.chatId).where(sql`${table.archived} = 1`),
  ],
);

/** Accounts this one blocked. */
export const blocks = sqliteTable("blocks", {
  userId: text("user_id").primaryKey(),
  createdAt: integer("created_at").notNull(),
});

/** Groups an admin asked to add this account to, waiting for it to accept or decline. */
export const invitations = sqliteTable("invitations", {
  chatId: text("chat_id").primaryKey(),
  kind: text("kind", { enum: ["group", "broadcast"] }).notNull(),
  name: text("name").notNull(),
  invitedBy: text("invited_by").notNull(),
  createdAt: integer("created_at").notNull(),
});

/**
 * Messages this account deleted for itself ("delete for me"), on all its devices.
 * `hiddenNo` counts them 1, 2, 3…: a device keeps the latest it has seen as a second
 * cursor and, when it resumes, gets the ones after it. At most `Limits.maxHiddenMessages`.
 */
export const hiddenMessages = sqliteTable(
  "hidden_messages",
  {
    hiddenNo: integer("hidden_no").primaryKey(),
    chatId: text("chat_id").notNull(),
    seq: integer("seq").notNull(),
    hiddenAt: integer("hidden_at").notNull(),
  },
  (table) => [uniqueIndex("hidden_messages_by_message").on(table.chatId, table.seq)],
);
