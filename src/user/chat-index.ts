import { and, count, desc, eq, lt, ne, or, sql, type SQL } from "drizzle-orm";
import type { DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import * as schema from "../db/user-schema.ts";
import { AppError } from "../lib/app-error.ts";
import { Limits, utf8ByteLength, type ReceiptsFrame, type ChatIndexUpdate, type ChatList, type ChatListQuery, type ChatSettingsPatch, type ChatSummary, type LastMessage, type MediaKind } from "../protocol/index.ts";

type ChatRow = typeof schema.chats.$inferSelect;

/** What a device stream's resume needs of each chat in the list. */
export type StreamEntry = Pick<ChatSummary, "chatId" | "headSeq" | "membership" | "memberCount" | "lastActivityAt">;

/** Rows read per query while a list page fills: bounds memory when entries carry big last messages. */
const ROWS_PER_READ = 32;

/**
 * The account's chat list: one row per chat it belongs or belonged to, as the chats
 * report it, with the account's own settings for each (pinned, muted, archived).
 * Updates merge by max(headSeq), then max(readSeq): a retried or reordered update never
 * moves an entry backwards, and the newest wins whatever order they arrive in.
 */
export class ChatIndex {
  readonly #db: DrizzleSqliteDODatabase<typeof schema>;

  /** Every chat's news goes through this one statement: prepared once, not rebuilt per call. */
  readonly #upsert;
  // Read on every stream frame and resume: prepared once too (building the SQL was most of
  // a resume's cost in the benchmark's storm).
  readonly #byId;
  readonly #streamEntries;
  readonly #receiptsMoved;
  /** Whether the account hid a message for itself (its hidden list, src/user/hidden-messages.ts). */
  readonly #isHidden: (chatId: string, seq: number) => boolean;
  /** The latest `receiptsAt` given (loaded once): every change gets a later one, whatever the clocks. */
  #receiptsClock: number | null = null;

  constructor(db: DrizzleSqliteDODatabase<typeof schema>, isHidden: (chatId: string, seq: number) => boolean) {
    this.#db = db;
    this.#isHidden = isHidden;
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
        readSeq: value("readSeq"),
        unreadCount: value("unreadCount"),
        lastMessageSeq: value("lastMessageSeq"),
        lastMessageSenderId: value("lastMessageSenderId"),
        lastMessageBody: value("lastMessageBody"),
        lastMessageCreatedAt: value("lastMessageCreatedAt"),
        lastMessageAttachments: value("lastMessageAttachments"),
        lastMessageDeleted: value("lastMessageDeleted"),
        deliveredUpTo: value("deliveredUpTo"),
        seenUpTo: value("seenUpTo"),
        receiptsAt: value("receiptsAt"),
      })
      .onConflictDoUpdate({
        target: chats.chatId,
        // Never the account's own settings: a new message does not unpin, unmute or unarchive.
        set: {
          name: sql`excluded.name`,
          headSeq: sql`excluded.head_seq`,
          memberCount: sql`excluded.member_count`,
          lastActivityAt: sql`excluded.last_activity_at`,
          membership: sql`excluded.membership`,
          readSeq: sql`excluded.read_seq`,
          unreadCount: sql`excluded.unread_count`,
          lastMessageSeq: sql`excluded.last_message_seq`,
          lastMessageSenderId: sql`excluded.last_message_sender_id`,
          lastMessageBody: sql`excluded.last_message_body`,
          lastMessageCreatedAt: sql`excluded.last_message_created_at`,
          lastMessageAttachments: sql`excluded.last_message_attachments`,
          lastMessageDeleted: sql`excluded.last_message_deleted`,
          // Receipt pushes may have moved these further than this update knew.
          deliveredUpTo: sql`max(${chats.deliveredUpTo}, excluded.delivered_up_to)`,
          seenUpTo: sql`max(${chats.seenUpTo}, excluded.seen_up_to)`,
          // Moved here rather than by a receipts push: a resuming stream must still hear of it.
          receiptsAt: sql`CASE WHEN excluded.delivered_up_to > ${chats.deliveredUpTo} OR excluded.seen_up_to > ${chats.seenUpTo}
            THEN excluded.receipts_at ELSE ${chats.receiptsAt} END`,
        },
        // Merged by max(headSeq), then max(readSeq): an older or repeated update changes
        // nothing, and a read at an unchanged head still lands. (The chat builds each
        // update from its head and the read position as they are then, and both only
        // grow, so the later update is the greater pair.)
        setWhere: sql`${chats.headSeq} < excluded.head_seq OR (${chats.headSeq} = excluded.head_seq AND ${chats.readSeq} < excluded.read_seq)`,
      })
      .returning()
      .prepare();
    this.#receiptsMoved = db
      .update(chats)
      .set({
        deliveredUpTo: sql`max(${chats.deliveredUpTo}, ${value("deliveredUpTo")})`,
        seenUpTo: sql`max(${chats.seenUpTo}, ${value("seenUpTo")})`,
        receiptsAt: sql`${value("at")}`,
      })
      .where(
        and(
          eq(chats.chatId, value("chatId")),
          or(lt(chats.deliveredUpTo, value("deliveredUpTo")), lt(chats.seenUpTo, value("seenUpTo"))),
        ),
      )
      .returning({ chatId: chats.chatId, deliveredUpTo: chats.deliveredUpTo, seenUpTo: chats.seenUpTo, at: chats.receiptsAt })
      .prepare();
    this.#byId = db.select().from(chats).where(eq(chats.chatId, sql.placeholder("chatId"))).prepare();
    this.#streamEntries = db
      .select({
        chatId: chats.chatId,
        headSeq: chats.headSeq,
        membership: chats.membership,
        memberCount: chats.memberCount,
        lastActivityAt: chats.lastActivityAt,
      })
      .from(chats)
      .orderBy(desc(chats.lastActivityAt), desc(chats.chatId))
      .prepare();
  }

  /** Merges a chat's update; answers the entry when it changed, null when the update was stale. */
  update(update: ChatIndexUpdate, now: number): ChatSummary | null {
    // A latest message the account hid for itself keeps no content here (see `previewHidden`).
    const hidden = update.lastMessage !== undefined && this.#isHidden(update.chatId, update.lastMessage.seq);
    const row = this.#upsert.get({
      chatId: update.chatId,
      kind: update.kind,
      name: update.name,
      peerId: update.peerId ?? null,
      addedAt: now,
      headSeq: update.headSeq,
      memberCount: update.memberCount,
      lastActivityAt: update.lastActivityAt,
      membership: update.membership,
      readSeq: update.readSeq,
      unreadCount: update.unreadCount,
      lastMessageSeq: update.lastMessage?.seq ?? null,
      lastMessageSenderId: update.lastMessage?.senderId ?? null,
      lastMessageBody: hidden ? null : (update.lastMessage?.body ?? null),
      lastMessageCreatedAt: update.lastMessage?.createdAt ?? null,
      lastMessageAttachments: !hidden && update.lastMessage?.attachments ? JSON.stringify(update.lastMessage.attachments) : null,
      lastMessageDeleted: update.lastMessage?.deleted === true,
      deliveredUpTo: update.deliveredUpTo,
      seenUpTo: update.seenUpTo,
      receiptsAt: this.#nextReceiptsAt(now),
    });
    // The row previews the update's latest message (or a newer one a race stored, looked up).
    return row ? this.#toSummary(row, row.lastMessageSeq === (update.lastMessage?.seq ?? null) ? hidden : undefined) : null;
  }

  /**
   * The account hid the message at `seq` for itself: if the entry previews it, the
   * preview keeps no content of it and says it is hidden (updates from the chat carrying
   * the same message keep it so, see `update`). Answers the entry when it previews it.
   */
  previewHidden(chatId: string, seq: number): ChatSummary | null {
    const { chats } = schema;
    const row = this.#db
      .update(chats)
      .set({ lastMessageBody: null, lastMessageAttachments: null })
      .where(and(eq(chats.chatId, chatId), eq(chats.lastMessageSeq, seq)))
      .returning()
      .get();
    return row ? this.#toSummary(row) : null;
  }

  /**
   * An entry as the account's devices see it: a latest message the account hid is marked
   * so (`hidden`, when the caller already looked it up).
   */
  #toSummary(row: ChatRow, hidden?: boolean): ChatSummary {
    return toSummary(row, hidden ?? (row.lastMessageSeq !== null && this.#isHidden(row.chatId, row.lastMessageSeq)));
  }

  /**
   * The chat's receipts moved for the account's own messages: merged by max. Answers the
   * frame to forward to the account's devices, or null when it said nothing new (or the
   * chat is not in the list).
   */
  receiptsMoved(frame: ReceiptsFrame, now: number): ReceiptsFrame | null {
    const at = this.#nextReceiptsAt(now);
    const row = this.#receiptsMoved.get({ chatId: frame.chatId, deliveredUpTo: frame.deliveredUpTo, seenUpTo: frame.seenUpTo, at });
    return row ? { type: "receipts", ...row } : null;
  }

  /**
   * The time stamped on a change of receipts: the account's own clock, strictly
   * increasing, so that "after the latest a device saw" never skips a change stamped
   * earlier by another chat's clock or stored later.
   */
  #nextReceiptsAt(now: number): number {
    if (this.#receiptsClock === null) {
      const { chats } = schema;
      this.#receiptsClock = this.#db.select({ at: sql<number | null>`max(${chats.receiptsAt})` }).from(chats).get()?.at ?? 0;
    }
    this.#receiptsClock = Math.max(now, this.#receiptsClock + 1);
    return this.#receiptsClock;
  }

  /** The chats whose receipts moved after `since` (ms), as frames, oldest change first. */
  receiptsSince(since: number): ReceiptsFrame[] {
    const { chats } = schema;
    return this.#db
      .select({ chatId: chats.chatId, deliveredUpTo: chats.deliveredUpTo, seenUpTo: chats.seenUpTo, at: chats.receiptsAt })
      .from(chats)
      .where(sql`${chats.receiptsAt} > ${since}`)
      .orderBy(chats.receiptsAt)
      .all()
      .map((row) => ({ type: "receipts", ...row }));
  }

  /**
   * The message at `seq` was deleted for everyone: if the entry previews it, the preview
   * keeps only that it was deleted (its body and files leave this storage too). Answers the
   * entry when it changed.
   */
  previewDeleted(chatId: string, seq: number): ChatSummary | null {
    const { chats } = schema;
    const row = this.#db
      .update(chats)
      .set({ lastMessageBody: null, lastMessageAttachments: null, lastMessageDeleted: true })
      .where(and(eq(chats.chatId, chatId), eq(chats.lastMessageSeq, seq), eq(chats.lastMessageDeleted, false)))
      .returning()
      .get();
    return row ? this.#toSummary(row) : null;
  }

  get(chatId: string): ChatSummary | null {
    const row = this.#byId.get({ chatId });
    return row ? this.#toSummary(row) : null;
  }

  /**
   * Changes the account's own settings of a chat in its list: `chat_not_found` (and
   * nothing written) for a chat not in it, `too_many_pinned` past `maxPinnedChats`.
   * Synchronous, so concurrent requests cannot pin more than the limit between them.
   */
  updateSettings(chatId: string, patch: ChatSettingsPatch): ChatSummary {
    const { chats } = schema;
    const current = this.#db.select({ pinned: chats.pinned }).from(chats).where(eq(chats.chatId, chatId)).get();
    if (!current) throw new AppError("chat_not_found", 404, "no such chat in your list", { retryable: false });
    if (patch.pinned === true && !current.pinned) {
      const pinned = this.#db.select({ rows: count() }).from(chats).where(and(eq(chats.pinned, true), ne(chats.chatId, chatId))).get()?.rows ?? 0;
      if (pinned >= Limits.maxPinnedChats) {
        throw new AppError("too_many_pinned", 409, `at most ${Limits.maxPinnedChats} chats can be pinned: unpin one first`, { retryable: false });
      }
    }
    const set: Partial<Pick<ChatRow, "pinned" | "mutedUntil" | "archived">> = {};
    if (patch.pinned !== undefined) set.pinned = patch.pinned;
    if (patch.mutedUntil !== undefined) set.mutedUntil = patch.mutedUntil;
    if (patch.archived !== undefined) set.archived = patch.archived;
    const row = this.#db.update(chats).set(set).where(eq(chats.chatId, chatId)).returning().get();
    return this.#toSummary(row!);
  }

  /**
   * Every chat of the account, most recent activity first, with only what a stream's
   * resume needs (a few dozen bytes each, so even thousands of chats stay small).
   */
  streamEntries(): StreamEntry[] {
    return this.#streamEntries.all();
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

  /**
   * A page of the list, latest activity first, from `cursor` (`<lastActivityAt>.<chatId>`,
   * exclusive): `limit` entries, or fewer when they reach `maxPageBytes` of JSON (an
   * entry carries its last message, up to 64 KiB; a page always has at least one entry).
   * Rows are read a few at a time, so a page never holds more than it returns in memory.
   */
  list(query: ChatListQuery): ChatList {
    const { chats } = schema;
    // Literal, not a bound parameter, so that SQLite can use the index of archived chats.
    const archived = query.archived === undefined ? undefined : query.archived ? sql`${chats.archived} = 1` : sql`${chats.archived} = 0`;
    const page: ChatSummary[] = [];
    let bytes = 0;
    let cursor = query.cursor ? parseCursor(query.cursor) : null;
    for (;;) {
      // One more than the page still needs: it tells whether a next page exists.
      const wanted = Math.min(ROWS_PER_READ, query.limit + 1 - page.length);
      const rows = this.#db
        .select()
        .from(chats)
        .where(and(archived, cursor ? after(cursor) : undefined))
        .orderBy(desc(chats.lastActivityAt), desc(chats.chatId))
        .limit(wanted)
        .all();
      for (const row of rows) {
        const summary = this.#toSummary(row);
        const size = utf8ByteLength(JSON.stringify(summary)) + 1; // and its comma
        if (page.length === query.limit || (page.length > 0 && bytes + size > Limits.maxPageBytes)) return withCursor(page);
        page.push(summary);
        bytes += size;
      }
      if (rows.length < wanted) return { chats: page };
      const last = rows.at(-1)!;
      cursor = { at: last.lastActivityAt, chatId: last.chatId };
    }
  }
}

type Cursor = { at: number; chatId: string };

function parseCursor(cursor: string): Cursor {
  const dot = cursor.indexOf(".");
  return { at: Number(cursor.slice(0, dot)), chatId: cursor.slice(dot + 1) };
}

/** Rows after `cursor` in the list's order (latest activity first, then chat id descending). */
function after({ at, chatId }: Cursor): SQL | undefined {
  const { chats } = schema;
  return or(lt(chats.lastActivityAt, at), and(eq(chats.lastActivityAt, at), lt(chats.chatId, chatId)));
}

/** A full page: more entries follow from its last one. */
function withCursor(page: ChatSummary[]): ChatList {
  const last = page.at(-1)!;
  return { chats: page, nextCursor: `${last.lastActivityAt}.${last.chatId}` };
}

function toSummary(row: ChatRow, hidden: boolean): ChatSummary {
  const summary: ChatSummary = {
    chatId: row.chatId,
    kind: row.kind,
    name: row.name,
    addedAt: row.addedAt,
    headSeq: row.headSeq,
    memberCount: row.memberCount,
    lastActivityAt: row.lastActivityAt,
    membership: row.membership,
    readSeq: row.readSeq,
    unreadCount: row.unreadCount,
    deliveredUpTo: row.deliveredUpTo,
    seenUpTo: row.seenUpTo,
    pinned: row.pinned,
    archived: row.archived,
  };
  if (row.peerId) summary.peerId = row.peerId;
  if (row.lastMessageSeq !== null && row.lastMessageSenderId !== null && row.lastMessageCreatedAt !== null) {
    const last: LastMessage = { seq: row.lastMessageSeq, senderId: row.lastMessageSenderId, createdAt: row.lastMessageCreatedAt };
    if (row.lastMessageDeleted) last.deleted = true;
    if (hidden) last.hidden = true;
    if (!row.lastMessageDeleted && !hidden) {
      if (row.lastMessageBody !== null) last.body = row.lastMessageBody;
      if (row.lastMessageAttachments !== null) last.attachments = JSON.parse(row.lastMessageAttachments) as MediaKind[];
    }
    summary.lastMessage = last;
  }
  if (row.mutedUntil !== null) summary.mutedUntil = row.mutedUntil;
  return summary;
}
