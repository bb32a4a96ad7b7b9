import { eq, lt, sql } from "drizzle-orm";
import type { DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import * as schema from "../db/chat-room-schema.ts";
import { AppError } from "../lib/app-error.ts";
import type { Chat, ChatMember } from "../protocol/index.ts";

type ChatRow = typeof schema.chat.$inferSelect;
type MemberRow = typeof schema.members.$inferSelect;

// SQLite in a Durable Object takes at most 100 bound parameters per statement.
const MEMBER_ROWS_PER_INSERT = 15;

/** The chat row and its members, cached in memory: every send checks membership. */
export class Membership {
  readonly #db: DrizzleSqliteDODatabase<typeof schema>;
  #chat: ChatRow | null;
  readonly #members = new Map<string, MemberRow>();

  constructor(db: DrizzleSqliteDODatabase<typeof schema>, load = true) {
    this.#db = db;
    this.#chat = load ? (db.select().from(schema.chat).get() ?? null) : null;
    if (load) for (const row of db.select().from(schema.members).all()) this.#members.set(row.userId, row);
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

  /** A current member, or `not_a_member` (`chat_not_found` if there is no chat). */
  requireMember(userId: string): MemberRow {
    this.requireChat();
    const member = this.#members.get(userId);
    if (!member || member.leftSeq !== null) throw new AppError("not_a_member", 403, "you are not a member of this chat");
    return member;
  }

  create(chat: ChatRow, members: Omit<MemberRow, "leftSeq" | "notifiedSeq">[]): void {
    this.#db.insert(schema.chat).values(chat).run();
    for (let start = 0; start < members.length; start += MEMBER_ROWS_PER_INSERT) {
      this.#db.insert(schema.members).values(members.slice(start, start + MEMBER_ROWS_PER_INSERT)).run();
    }
    this.#chat = chat;
    for (const member of members) this.#members.set(member.userId, { ...member, leftSeq: null, notifiedSeq: 0 });
  }

  current(): ChatMember[] {
    const list: ChatMember[] = [];
    for (const row of this.#members.values()) {
      if (row.leftSeq === null) list.push({ userId: row.userId, role: row.role, joinedSeq: row.joinedSeq });
    }
    return list;
  }

  /** Members whose User object has not yet been told about the chat up to `seq`. */
  notifiedBelow(seq: number): MemberRow[] {
    return this.#db.select().from(schema.members).where(lt(schema.members.notifiedSeq, seq)).all();
  }

  markNotified(userId: string, seq: number): void {
    this.#db
      .update(schema.members)
      .set({ notifiedSeq: sql`max(${schema.members.notifiedSeq}, ${seq})` })
      .where(eq(schema.members.userId, userId))
      .run();
    const member = this.#members.get(userId);
    if (member) member.notifiedSeq = Math.max(member.notifiedSeq, seq);
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
}
