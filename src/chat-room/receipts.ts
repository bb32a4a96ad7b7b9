import { and, eq, sql } from "drizzle-orm";
import type { DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import * as schema from "../db/chat-room-schema.ts";
import { AppError } from "../lib/app-error.ts";
import { Limits, type MemberReceipt, type MessageStatus, type ReceiptsFrame } from "../protocol/index.ts";
import type { EventLog } from "./event-log.ts";
import type { Membership, PeriodRow } from "./membership.ts";

export type ReceiptKind = "delivered" | "seen";
const KINDS: readonly ReceiptKind[] = ["delivered", "seen"];
const column = { delivered: "deliveredSeq", seen: "seenSeq" } as const;

/**
 * The lowest watermark of one kind over the current members: every sender's messages
 * are covered up to the lowest watermark of the *other* members, which is `min` for
 * everyone but its single holder, who gets `second`.
 */
type Lowest = { min: number; holder: string | null; second: number };

function lowestOf(members: Iterable<PeriodRow>, kind: ReceiptKind): Lowest {
  let min = Infinity;
  let holder: string | null = null;
  let second = Infinity;
  for (const member of members) {
    const value = member[column[kind]];
    if (value < min) {
      second = min;
      min = value;
      holder = member.userId;
    } else if (value === min) {
      second = min;
      holder = null;
    } else if (value < second) second = value;
  }
  return { min, holder, second };
}

const upToFor = (lowest: Lowest, userId: string, headSeq: number): number =>
  Math.min(lowest.holder === userId ? lowest.second : lowest.min, headSeq);

function prepareAdvance(db: DrizzleSqliteDODatabase<typeof schema>, kind: ReceiptKind) {
  const { members } = schema;
  return db
    .update(members)
    .set({ [column[kind]]: sql`max(${members[column[kind]]}, ${sql.placeholder("seq")})` })
    .where(and(eq(members.userId, sql.placeholder("userId")), eq(members.joinedSeq, sql.placeholder("joinedSeq"))))
    .prepare();
}

export type ReceiptsDeps = {
  db: DrizzleSqliteDODatabase<typeof schema>;
  sql: SqlStorage;
  log: () => EventLog;
  membership: () => Membership;
  /** A sender's messages moved: tell them (their sockets here and their account). */
  push: (userId: string, frame: ReceiptsFrame) => void;
};

/**
 * Message status as per-member watermarks (see src/protocol/receipts.ts). A report
 * merges by max into the member's current period and records when the watermark
 * moved (bounded, for per-member times); `settle` then finds the senders whose
 * messages changed status and pushes each one frame with their new watermarks.
 *
 * A message counts the other *current* members whose period contains it. Whether a
 * sender's message is covered therefore only depends on the lowest watermark of the
 * other members (a member who joined later starts at their join, past the message),
 * so statuses are two numbers per sender, computed from two minima kept here.
 */
export class Receipts {
  readonly #deps: ReceiptsDeps;
  /** The minima as of the last `settle` (null until the chat's members are loaded). */
  #lowest: Record<ReceiptKind, Lowest> | null = null;
  /** The statements of a report, prepared once (a report is on every member's path of every message). */
  readonly #advance: Record<ReceiptKind, ReturnType<typeof prepareAdvance>>;
  readonly #record;
  /** Per member and kind (`kind:userId`), the seqs of the advances kept, oldest first (at most 256 × 2 lists of 32). */
  readonly #kept = new Map<string, number[]>();

  constructor(deps: ReceiptsDeps) {
    this.#deps = deps;
    this.#advance = { delivered: prepareAdvance(deps.db, "delivered"), seen: prepareAdvance(deps.db, "seen") };
    const { receiptAdvances } = schema;
    this.#record = deps.db
      .insert(receiptAdvances)
      .values({
        userId: sql.placeholder("userId"),
        kind: sql.placeholder("kind"),
        fromSeq: sql.placeholder("fromSeq"),
        seq: sql.placeholder("seq"),
        at: sql.placeholder("at"),
      })
      .onConflictDoNothing()
      .prepare();
  }

  /** Takes the minima of the members as loaded (when the object wakes or the chat is created). */
  restore(): void {
    this.#lowest = this.#current();
  }

  /**
   * `member` (a current period) has `kind` up to `seq`: SEEN implies DELIVERED, a seq
   * before the period began or below the watermark changes nothing. Call `settle` after.
   */
  report(member: PeriodRow, kind: ReceiptKind, seq: number, now: number): void {
    if (seq <= member.joinedSeq) return;
    const kinds = kind === "seen" ? KINDS : (["delivered"] as const);
    const detailed = this.#deps.membership().memberCount <= Limits.maxReceiptDetailMembers;
    for (const moved of kinds) {
      const fromSeq = member[column[moved]];
      if (seq <= fromSeq) continue;
      this.#advance[moved].run({ seq, userId: member.userId, joinedSeq: member.joinedSeq });
      member[column[moved]] = seq;
      if (detailed) this.#keepAdvance(member.userId, moved, fromSeq, seq, now);
    }
  }

  #keepAdvance(userId: string, kind: ReceiptKind, fromSeq: number, seq: number, at: number): void {
    this.#record.run({ userId, kind, fromSeq, seq, at });
    // Only the latest advances are kept: an older message's time is no longer known. The
    // seqs kept are held in memory (read once per member after a wake), so dropping the
    // oldest is one delete by primary key, not a search.
    const key = `${kind}:${userId}`;
    let kept = this.#kept.get(key);
    if (!kept) {
      kept = this.#deps.sql
        .exec<{ seq: number }>("SELECT seq FROM receipt_advances WHERE user_id = ? AND kind = ? ORDER BY seq", userId, kind)
        .toArray()
        .map((row) => row.seq);
      this.#kept.set(key, kept);
    } else kept.push(seq);
    while (kept.length > Limits.receiptAdvancesKept) {
      this.#deps.sql.exec("DELETE FROM receipt_advances WHERE user_id = ? AND kind = ? AND seq = ?", userId, kind, kept.shift()!);
    }
  }

  /** A member's period ended: their recorded times go (their watermarks stay with the period). */
  forget(userId: string): void {
    this.#deps.sql.exec("DELETE FROM receipt_advances WHERE user_id = ?", userId);
    for (const kind of KINDS) this.#kept.delete(`${kind}:${userId}`);
  }

  /** A sender's watermarks as of now (what a `receipts` frame carries). */
  upTo(userId: string): { deliveredUpTo: number; seenUpTo: number } {
    const lowest = this.#lowest ?? this.#current();
    const headSeq = this.#deps.log().headSeq;
    return { deliveredUpTo: upToFor(lowest.delivered, userId, headSeq), seenUpTo: upToFor(lowest.seen, userId, headSeq) };
  }

  /**
   * After reports or membership changes: every current member whose messages are now
   * covered further gets one frame with both watermarks, if they sent a message in the
   * range that moved. Everyone but the lowest holders moves from the old minimum to the
   * new one, and the minimum only rises, so the log ranges read here add up to the
   * chat's length over its life; the holders (at most two per kind) are checked alone.
   */
  settle(now: number): void {
    const before = this.#lowest;
    const after = this.#current();
    this.#lowest = after;
    if (!before) return;
    const membership = this.#deps.membership();
    const log = this.#deps.log();
    const headSeq = log.headSeq;
    const holders = new Set<string>();
    const senders = new Set<string>();
    for (const kind of KINDS) {
      const [was, is] = [before[kind], after[kind]];
      if (was.min === is.min && was.holder === is.holder && was.second === is.second) continue;
      for (const holder of [was.holder, is.holder]) if (holder !== null) holders.add(holder);
      for (const userId of log.sendersBetween(Math.min(was.min, headSeq), Math.min(is.min, headSeq))) senders.add(userId);
    }
    for (const userId of holders) senders.delete(userId);
    const chatId = membership.requireChat().chatId;
    const tell = (userId: string, moved: (from: number, to: number) => boolean) => {
      if (!membership.isMember(userId)) return;
      const was = { d: upToFor(before.delivered, userId, headSeq), s: upToFor(before.seen, userId, headSeq) };
      const is = { d: upToFor(after.delivered, userId, headSeq), s: upToFor(after.seen, userId, headSeq) };
      if (!moved(was.d, is.d) && !moved(was.s, is.s)) return;
      this.#deps.push(userId, { type: "receipts", chatId, deliveredUpTo: is.d, seenUpTo: is.s, at: now });
    };
    // Senders found in the range that moved for everyone: their values rose with it.
    for (const userId of senders) tell(userId, (from, to) => to > from);
    for (const userId of holders) tell(userId, (from, to) => to > from && log.hasMessageFrom(userId, from, to));
  }

  #current(): Record<ReceiptKind, Lowest> {
    const members = [...this.#deps.membership().members()];
    return { delivered: lowestOf(members, "delivered"), seen: lowestOf(members, "seen") };
  }

  /**
   * The status of `askerId`'s own message at `seq` (checkLatestStatusOfMessage): the
   * aggregate over its recipients, and per recipient in chats small enough.
   */
  statusOf(askerId: string, seq: number): MessageStatus {
    const log = this.#deps.log();
    const membership = this.#deps.membership();
    const chat = membership.requireChat();
    if (!Number.isSafeInteger(seq) || seq < 1 || seq > log.headSeq || log.senderAt(seq) !== askerId) {
      throw new AppError("not_found", 404, `no message of yours at seq ${seq}`, { retryable: false });
    }
    const recipients = [...membership.members()].filter((member) => member.userId !== askerId && member.joinedSeq <= seq);
    const delivered = recipients.filter((member) => member.deliveredSeq >= seq).length;
    const seen = recipients.filter((member) => member.seenSeq >= seq).length;
    const status: MessageStatus = {
      chatId: chat.chatId,
      seq,
      status: seen === recipients.length ? "seen" : delivered === recipients.length ? "delivered" : "sent",
      recipients: recipients.length,
      delivered,
      seen,
    };
    if (membership.memberCount <= Limits.maxReceiptDetailMembers) status.members = this.#detail(recipients, seq);
    return status;
  }

  #detail(recipients: PeriodRow[], seq: number): MemberReceipt[] {
    // Per member and kind, the one advance whose range holds `seq` (ranges do not overlap).
    const times = new Map<string, number>();
    const rows = this.#deps.sql.exec<{ userId: string; kind: ReceiptKind; at: number }>(
      "SELECT user_id AS userId, kind, at FROM receipt_advances WHERE from_seq < ?1 AND seq >= ?1",
      seq,
    );
    for (const row of rows) times.set(`${row.kind}:${row.userId}`, row.at);
    // Null: not yet, or its advance is older than those kept (the counts still include it).
    const timeOf = (member: PeriodRow, kind: ReceiptKind) =>
      member[column[kind]] >= seq ? (times.get(`${kind}:${member.userId}`) ?? null) : null;
    return recipients.map((member) => ({ userId: member.userId, deliveredAt: timeOf(member, "delivered"), seenAt: timeOf(member, "seen") }));
  }
}
