import { and, desc, eq, lt, or, sql } from "drizzle-orm";
import type { DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import * as schema from "../db/user-schema.ts";
import type { ChatIndexUpdate, ChatList, ChatListQuery, ChatSummary } from "../protocol/index.ts";

type ChatRow = typeof schema.chats.$inferSelect;

/**
 * The account's chat list: one row per chat it belongs or belonged to, as the chats
 * report it. Updates merge by max(headSeq): a retried or reordered update never moves
 * an entry backwards, and the newest wins whatever order they arrive in.
 */
export class ChatIndex {
  readonly #db: DrizzleSqliteDODatabase<typeof schema>;

  /** Every chat's news goes through this one statement: prepared once, not rebuilt per call. */
  readonly #upsert;

  constructor(db: DrizzleSqliteDODatabase<typeof schema>) {
    this.#db = db;
    const { chats } = schema;
    const value = (name: string) => sql.placeholder(name);
    this.#upsert = db
      .insert(chats)
      .values({
        chatId: value("chatId"),
        kind: value("kind"),
        name: value("name"),
        peerId: value("peerId"),
        addedAt: value("addedAt"),
        headSeq: value("headSeq"),
        memberCount: value("memberCount"),
        lastActivityAt: value("lastActivityAt"),
        membership: value("membership"),
      })
      .onConflictDoUpdate({
        target: chats.chatId,
        set: {
          name: sql`excluded.name`,
          headSeq: sql`excluded.head_seq`,
          memberCount: sql`excluded.member_count`,
          lastActivityAt: sql`excluded.last_activity_at`,
          membership: sql`excluded.membership`,
        },
        // Merged by max(headSeq): an older or repeated update changes nothing.
        setWhere: sql`${chats.headSeq} < excluded.head_seq`,
      })
      .prepare();
  }

  update(update: ChatIndexUpdate, now: number): void {
    this.#upsert.run({
      chatId: update.chatId,
      kind: update.kind,
      name: update.name,
      peerId: update.peerId ?? null,
      addedAt: now,
      headSeq: update.headSeq,
      memberCount: update.memberCount,
      lastActivityAt: update.lastActivityAt,
      membership: update.membership,
    });
  }

  get(chatId: string): ChatSummary | null {
    const row = this.#db.select().from(schema.chats).where(eq(schema.chats.chatId, chatId)).get();
    return row ? toSummary(row) : null;
  }

  /** Whether this account is in a direct chat with `userId` (the `contacts` of the group-add setting). */
  hasDirectChatWith(userId: string): boolean {
    const { chats } = schema;
    return (
      this.#db
        .select({ chatId: chats.chatId })
        .from(chats)
        .where(and(eq(chats.kind, "direct"), eq(chats.peerId, userId), eq(chats.membership, "member")))
        .limit(1)
        .all().length > 0
    );
  }

  chatIds(): string[] {
    return this.#db.select({ chatId: schema.chats.chatId }).from(schema.chats).all().map((row) => row.chatId);
  }

  /** A page of the list, latest activity first, from `cursor` (`<lastActivityAt>.<chatId>`, exclusive). */
  list(query: ChatListQuery): ChatList {
    const { chats } = schema;
    let where;
    if (query.cursor) {
      const dot = query.cursor.indexOf(".");
      const at = Number(query.cursor.slice(0, dot));
      const chatId = query.cursor.slice(dot + 1);
      where = or(lt(chats.lastActivityAt, at), and(eq(chats.lastActivityAt, at), lt(chats.chatId, chatId)));
    }
    const rows = this.#db
      .select()
      .from(chats)
      .where(where)
      .orderBy(desc(chats.lastActivityAt), desc(chats.chatId))
      .limit(query.limit + 1)
      .all();
    const page = rows.slice(0, query.limit).map(toSummary);
    const last = page.at(-1);
    return rows.length > query.limit && last ? { chats: page, nextCursor: `${last.lastActivityAt}.${last.chatId}` } : { chats: page };
  }
}

function toSummary(row: ChatRow): ChatSummary {
  const summary: ChatSummary = {
    chatId: row.chatId,
    kind: row.kind,
    name: row.name,
    addedAt: row.addedAt,
    headSeq: row.headSeq,
    memberCount: row.memberCount,
    lastActivityAt: row.lastActivityAt,
    membership: row.membership,
  };
  if (row.peerId) summary.peerId = row.peerId;
  return summary;
}
