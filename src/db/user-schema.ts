import { index, integer, sqliteTable, text } from "drizzle-orm/sqlite-core";

/** One User object per account: this database holds that one account. */

/** Exactly one row: the account. */
export const profile = sqliteTable("profile", {
  userId: text("user_id").primaryKey(),
  phone: text("phone").notNull(),
  displayName: text("display_name").notNull().default(""),
  about: text("about").notNull().default(""),
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

/** The chats this account belongs to. */
export const chats = sqliteTable("chats", {
  chatId: text("chat_id").primaryKey(),
  kind: text("kind", { enum: ["direct", "group", "broadcast"] }).notNull(),
  name: text("name").notNull(),
  peerId: text("peer_id"),
  addedAt: integer("added_at").notNull(),
});
