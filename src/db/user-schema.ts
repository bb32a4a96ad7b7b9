import { index, integer, sqliteTable, text } from "drizzle-orm/sqlite-core";

/** One User object per account: this database holds that one account. */

/** Exactly one row: the account. */
export const profile = sqliteTable("profile", {
  userId: text("user_id").primaryKey(),
  phone: text("phone").notNull(),
  displayName: text("display_name").notNull().default(""),
  about: text("about").notNull().default(""),
  /** Who may add this account to groups without asking: `everyone`, `contacts`, `nobody`. */
  groupAdd: text("group_add", { enum: ["everyone", "contacts", "nobody"] }).notNull().default("everyone"),
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
 * row is merged by max(headSeq): a late or repeated update from the chat never moves
 * it backwards.
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
  },
  (table) => [index("chats_by_activity").on(table.lastActivityAt, table.chatId)],
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
