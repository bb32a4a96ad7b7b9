import { and, asc, count, desc, eq, getTableColumns, gte, isNotNull, isNull, lt, lte, notInArray, sql } from "drizzle-orm";
import type { DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import * as schema from "../db/chat-room-schema.ts";
import { AppError } from "../lib/app-error.ts";
import type { Chat, ChatMember, MemberRole } from "../protocol/index.ts";

type ChatRow = typeof schema.chat.$inferSelect;
export type PeriodRow = typeof schema.members.$inferSelect;
/** The seqs one membership period covers: `joinedSeq` to `leftSeq` inclusive (open while a member). */
export type Period = Pick<PeriodRow, "joinedSeq" | "leftSeq">;

// SQLite in a Durable Object takes at most 100 bound parameters per statement.
const PARAMETERS_PER_STATEMENT = 99;
const MEMBER_ROWS_PER_INSERT = Math.floor(PARAMETERS_PER_STATEMENT / Object.keys(getTableColumns(schema.members)).length);

/**
 * The chat row, its membership periods and its direct-chat blocks. In memory: the
 * chat, the current members (every send checks membership) and the former members
 * whose account has not yet heard that they left (the fan-out's to-do list). Past
 * periods are read from storage when a history page needs them.
 */
export class Membership {
  readonly #db: DrizzleSqliteDODatabase<typeof schema>;
  #chat: ChatRow | null;
  /** Current periods by user, in the order they began (the first is the longest-standing). */
  readonly #current = new Map<string, PeriodRow>();
  /** Ended latest periods whose account was not told the end yet. */
  readonly #departed = new Map<string, PeriodRow>();
  #blocked = false;

  /** A member's read position moves on every message they send: one statement, prepared once. */
  readonly #readUpTo;

  constructor(db: DrizzleSqliteDODatabase<typeof schema>, load = true) {
    this.#db = db;
    const { members: table } = schema;
    this.#readUpTo = db
      .update(table)
      .set({ readSeq: sql`max(${table.readSeq}, ${sql.placeholder("seq")})` })
      .where(and(eq(table.userId, sql.placeholder("userId")), eq(table.joinedSeq, sql.placeholder("joinedSeq"))))
      .prepare();
    this.#chat = load ? (db.select().from(schema.chat).get() ?? null) : null;
    if (!load) return;
    const { members } = schema;
    const rows = db.select().from(members).orderBy(asc(members.joinedSeq), asc(sql`rowid`)).all();
    for (const row of rows) {
      // Rows come oldest first: a user's later period replaces an earlier one.
      this.#departed.delete(row.userId);
      if (row.leftSeq === null) this.#current.set(row.userId, row);
      else if (row.notifiedSeq < row.leftSeq) this.#departed.set(row.userId, row);
    }
    this.#blocked = db.select().from(schema.blocks).limit(1).all().length > 0;
  }

  /** A chat that does not exist: nothing is read (there are no tables yet). */
  static empty(db: DrizzleSqliteDODatabase<typeof schema>): Membership {
    return new Membership(db, false);
  }

  get chat(): ChatRow | null {
    return this.#chat;
  }

  /** The chat, or `chat_not_found`. */
  requireChat(): ChatRow {
    if (!this.#chat) throw new AppError("chat_not_found", 404, "no such chat");
    return this.#chat;
  }

  /** A group or broadcast chat (membership can change), or `not_a_group`. */
  requireGroup(): ChatRow {
    const chat = this.requireChat();
    if (chat.kind === "direct") throw new AppError("not_a_group", 400, "a direct chat has no membership changes", { retryable: false });
    return chat;
  }

  /** A current member, or `not_a_member` (`chat_not_found` if there is no chat). */
  requireMember(userId: string): PeriodRow {
    this.requireChat();
    const member = this.#current.get(userId);
    if (!member) throw new AppError("not_a_member", 403, "you are not a member of this chat");
    return member;
  }

  /** A current admin of a group, or `not_a_group` / `not_a_member` / `admins_only`. */
  requireAdmin(userId: string): PeriodRow {
    this.requireGroup();
    const member = this.requireMember(userId);
    if (member.role !== "admin") throw new AppError("admins_only", 403, "only admins manage this chat", { retryable: false });
    return member;
  }

  /** Whether `userId` is a member now. */
  isMember(userId: string): boolean {
    return this.#current.has(userId);
  }

  get memberCount(): number {
    return this.#current.size;
  }

  /** Current members, longest-standing first. */
  members(): IterableIterator<PeriodRow> {
    return this.#current.values();
  }

  current(): ChatMember[] {
    return [...this.#current.values()].map(({ userId, role, joinedSeq }) => ({ userId, role, joinedSeq }));
  }

  /**
   * Every period of `userId`, oldest first, or `not_a_member` if they never belonged.
   * A former member may still read what they saw while a member.
   */
  periodsOf(userId: string): Period[] {
    this.requireChat();
    const { members } = schema;
    const periods = this.#db
      .select({ joinedSeq: members.joinedSeq, leftSeq: members.leftSeq })
      .from(members)
      .where(eq(members.userId, userId))
      .orderBy(asc(members.joinedSeq))
      .all();
    if (periods.length === 0) throw new AppError("not_a_member", 403, "you are not a member of this chat");
    return periods;
  }

  create(chat: ChatRow, members: Pick<PeriodRow, "userId" | "role">[]): void {
    this.#db.insert(schema.chat).values(chat).run();
    this.#chat = chat;
    this.#insertPeriods(members, 1);
  }

  /** Starts a period for each of `members` at `seq` (the event that added them). */
  add(members: Pick<PeriodRow, "userId" | "role">[], seq: number): void {
    const { members: table } = schema;
    for (const { userId } of members) {
      // An earlier period whose end was never announced is superseded: the account
      // will be told the newer state instead.
      if (this.#departed.delete(userId)) {
        this.#db
          .update(table)
          .set({ notifiedSeq: sql`${table.leftSeq}` })
          .where(and(eq(table.userId, userId), isNotNull(table.leftSeq), lt(table.notifiedSeq, table.leftSeq)))
          .run();
      }
    }
    this.#insertPeriods(members, seq);
  }

  /** Ends `userId`'s current period with the event at `seq` (removed or left). */
  end(userId: string, seq: number): void {
    const member = this.#current.get(userId);
    if (!member) return;
    const { members } = schema;
    this.#db
      .update(members)
      .set({ leftSeq: seq })
      .where(and(eq(members.userId, userId), eq(members.joinedSeq, member.joinedSeq)))
      .run();
    this.#current.delete(userId);
    this.#departed.set(userId, { ...member, leftSeq: seq });
  }

  setRole(userId: string, role: MemberRole): void {
    const member = this.#current.get(userId);
    if (!member) return;
    const { members } = schema;
    this.#db.update(members).set({ role }).where(and(eq(members.userId, userId), isNull(members.leftSeq))).run();
    member.role = role;
  }

  adminCount(): number {
    let admins = 0;
    for (const member of this.#current.values()) if (member.role === "admin") admins++;
    return admins;
  }

  /** The member who has belonged longest without a break (ties: who was added first). */
  longestStanding(): PeriodRow | undefined {
    return this.#current.values().next().value;
  }

  update(patch: { name?: string; description?: string }): void {
    const chat = this.requireChat();
    this.#db.update(schema.chat).set(patch).run();
    Object.assign(chat, patch);
  }

  // ---- Blocks (direct chats) ----

  /** Whether either member of this direct chat blocked the other. */
  get blocked(): boolean {
    return this.#blocked;
  }

  setBlock(blockerId: string, blockedId: string, on: boolean): void {
    const { blocks } = schema;
    if (on) this.#db.insert(blocks).values({ blockerId, blockedId }).onConflictDoNothing().run();
    else this.#db.delete(blocks).where(and(eq(blocks.blockerId, blockerId), eq(blocks.blockedId, blockedId))).run();
    this.#blocked = this.#db.select().from(blocks).limit(1).all().length > 0;
  }

  // ---- Invitations (groups) ----

  invite(userId: string, invitedBy: string, now: number): void {
    this.#db.insert(schema.invitations).values({ userId, invitedBy, createdAt: now }).onConflictDoUpdate({
      target: schema.invitations.userId,
      set: { invitedBy, createdAt: now },
    }).run();
  }

  /** The pending invitation of `userId` (removed), or null. */
  takeInvitation(userId: string, notBefore: number): typeof schema.invitations.$inferSelect | null {
    const { invitations } = schema;
    const row = this.#db.delete(invitations).where(eq(invitations.userId, userId)).returning().get();
    return row && row.createdAt >= notBefore ? row : null;
  }

  invitationCount(): number {
    return this.#db.select({ rows: count() }).from(schema.invitations).get()?.rows ?? 0;
  }

  // ---- Read positions ----

  /**
   * `member` (a current period, as held here) has read up to `seq`: merged by max, so
   * a stale or repeated call changes nothing. No read of the table: the period is in memory.
   */
  readUpTo(member: PeriodRow, seq: number): void {
    if (seq <= member.readSeq) return;
    this.#readUpTo.run({ seq, userId: member.userId, joinedSeq: member.joinedSeq });
    member.readSeq = seq;
  }

  // ---- Fan-out progress ----

  /**
   * Periods whose account is behind: current members told less than `headSeq`, and
   * former members not yet told that they left.
   */
  behind(headSeq: number): PeriodRow[] {
    const rows: PeriodRow[] = [];
    for (const member of this.#current.values()) if (member.notifiedSeq < headSeq) rows.push(member);
    for (const member of this.#departed.values()) rows.push(member);
    return rows;
  }

  /**
   * Records that these periods' accounts now know the chat up to `seq` (their end, for
   * former members). Current members all told the same head take one statement.
   */
  markNotified(told: PeriodRow[], headSeq: number, failedUserIds: ReadonlySet<string>): void {
    const { members } = schema;
    let currentTold = 0;
    for (const period of told) {
      if (period.leftSeq !== null) {
        if (this.#departed.get(period.userId) !== period) continue;
        this.#db
          .update(members)
          .set({ notifiedSeq: period.leftSeq })
          .where(and(eq(members.userId, period.userId), eq(members.joinedSeq, period.joinedSeq)))
          .run();
        this.#departed.delete(period.userId);
      } else if (this.#current.get(period.userId) === period) {
        period.notifiedSeq = Math.max(period.notifiedSeq, headSeq);
        currentTold++;
      }
    }
    if (currentTold === 0) return;
    const failed = [...failedUserIds];
    if (failed.length <= PARAMETERS_PER_STATEMENT - 2) {
      this.#db
        .update(members)
        .set({ notifiedSeq: headSeq })
        .where(and(isNull(members.leftSeq), lt(members.notifiedSeq, headSeq), failed.length > 0 ? notInArray(members.userId, failed) : undefined))
        .run();
      return;
    }
    for (const period of told) {
      if (period.leftSeq !== null || failedUserIds.has(period.userId)) continue;
      this.#db
        .update(members)
        .set({ notifiedSeq: sql`max(${members.notifiedSeq}, ${headSeq})` })
        .where(and(eq(members.userId, period.userId), eq(members.joinedSeq, period.joinedSeq)))
        .run();
    }
  }

  /**
   * Former members (not members now) whose ended periods contain `seq`: the accounts that
   * saw that event but no longer hear of the chat. The latest `limit` of them.
   */
  formerMembersWhoSaw(seq: number, limit: number): string[] {
    const { members } = schema;
    const rows = this.#db
      .selectDistinct({ userId: members.userId })
      .from(members)
      .where(and(isNotNull(members.leftSeq), lte(members.joinedSeq, seq), gte(members.leftSeq, seq)))
      .orderBy(desc(members.leftSeq))
      .limit(limit)
      .all();
    return rows.map((row) => row.userId).filter((userId) => !this.#current.has(userId));
  }

  /** Storage rows of fan-out state (one per period): for tests and capacity notes. */
  periodRowCount(): number {
    return this.#db.select({ rows: count() }).from(schema.members).get()?.rows ?? 0;
  }

  describe(headSeq: number): Chat {
    const chat = this.requireChat();
    return {
      chatId: chat.chatId,
      kind: chat.kind,
      name: chat.name,
      description: chat.description,
      createdBy: chat.createdBy,
      createdAt: chat.createdAt,
      members: this.current(),
      headSeq,
    };
  }

  #insertPeriods(members: Pick<PeriodRow, "userId" | "role">[], seq: number): void {
    // A new period starts read, delivered and seen up to the event that began it: what came before is not theirs.
    const rows = members.map(({ userId, role }) => ({ userId, role, joinedSeq: seq, leftSeq: null, notifiedSeq: 0, readSeq: seq, deliveredSeq: seq, seenSeq: seq }));
    for (let start = 0; start < rows.length; start += MEMBER_ROWS_PER_INSERT) {
      this.#db.insert(schema.members).values(rows.slice(start, start + MEMBER_ROWS_PER_INSERT)).run();
    }
    for (const row of rows) this.#current.set(row.userId, row);
  }
}
