import { and, asc, eq, gt, max, sql } from "drizzle-orm";
import type { DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import * as schema from "../db/user-schema.ts";
import { AppError } from "../lib/app-error.ts";
import { Limits, type HiddenMessage, type HiddenPage } from "../protocol/index.ts";

export type Hidden = { entry: HiddenMessage; duplicate: boolean };

/**
 * The messages this account deleted for itself ("delete for me"), numbered by the
 * account: `hiddenNo` 1, 2, 3… is a second cursor a device keeps, so a device that was
 * away learns which messages were hidden meanwhile, as it learns a chat's events from
 * its seq cursor. Entries are never removed (leaving a chat keeps them: its old history
 * is still readable), so the latest number is also the count the cap is checked against.
 *
 * Whether the message is one the account could see is the chat's to say, before `hide`.
 */
export class HiddenMessages {
  readonly #db: DrizzleSqliteDODatabase<typeof schema>;
  readonly #byMessage;
  /** The latest hiddenNo (read once, then kept): the next entry's number and the count. */
  #head: number | null = null;

  constructor(db: DrizzleSqliteDODatabase<typeof schema>) {
    this.#db = db;
    const { hiddenMessages } = schema;
    this.#byMessage = db
      .select()
      .from(hiddenMessages)
      .where(and(eq(hiddenMessages.chatId, sql.placeholder("chatId")), eq(hiddenMessages.seq, sql.placeholder("seq"))))
      .prepare();
  }

  /** The entry of a message already hidden, if any. */
  find(chatId: string, seq: number): HiddenMessage | null {
    return this.#byMessage.get({ chatId, seq }) ?? null;
  }

  /**
   * Whether the account hid the message at `seq`. Asked for every chat-list entry the
   * account stores or sends, so an account that never hid anything (most) reads nothing.
   */
  isHidden(chatId: string, seq: number): boolean {
    return this.headHiddenNo() > 0 && this.find(chatId, seq) !== null;
  }

  /**
   * Hides a message: a new entry with the next number, or the existing one (`duplicate`).
   * `too_many_hidden` past `cap` entries (Limits.maxHiddenMessages; tests pass a lower one).
   */
  hide(chatId: string, seq: number, now: number, cap: number = Limits.maxHiddenMessages): Hidden {
    const existing = this.find(chatId, seq);
    if (existing) return { entry: existing, duplicate: true };
    const head = this.headHiddenNo();
    if (head >= cap) {
      throw new AppError("too_many_hidden", 409, `an account hides at most ${cap} messages`, { retryable: false });
    }
    const entry: HiddenMessage = { hiddenNo: head + 1, chatId, seq, hiddenAt: now };
    this.#db.insert(schema.hiddenMessages).values(entry).run();
    this.#head = entry.hiddenNo;
    return { entry, duplicate: false };
  }

  /** The latest hiddenNo (0 before the first). */
  headHiddenNo(): number {
    if (this.#head === null) {
      const { hiddenMessages } = schema;
      this.#head = this.#db.select({ head: max(hiddenMessages.hiddenNo) }).from(hiddenMessages).get()?.head ?? 0;
    }
    return this.#head;
  }

  /** Up to `limit` entries after `after`, in hiddenNo order. */
  page(after: number, limit: number): HiddenPage {
    const { hiddenMessages } = schema;
    const rows = this.#db
      .select()
      .from(hiddenMessages)
      .where(gt(hiddenMessages.hiddenNo, after))
      .orderBy(asc(hiddenMessages.hiddenNo))
      .limit(limit + 1)
      .all();
    return { entries: rows.slice(0, limit), hasMore: rows.length > limit, headHiddenNo: this.headHiddenNo() };
  }
}
