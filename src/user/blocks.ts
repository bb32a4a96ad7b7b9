import { asc, eq } from "drizzle-orm";
import type { DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import * as schema from "../db/user-schema.ts";
import { AppError } from "../lib/app-error.ts";
import { Limits, type BlockedUser } from "../protocol/index.ts";

/** The accounts this one blocked (at most `Limits.maxBlockedUsers`). */
export class Blocks {
  readonly #db: DrizzleSqliteDODatabase<typeof schema>;

  constructor(db: DrizzleSqliteDODatabase<typeof schema>) {
    this.#db = db;
  }

  has(userId: string): boolean {
    return this.#db.select().from(schema.blocks).where(eq(schema.blocks.userId, userId)).get() !== undefined;
  }

  /** Returns false when already blocked. */
  add(userId: string, now: number): boolean {
    if (this.has(userId)) return false;
    if (this.list().length >= Limits.maxBlockedUsers) {
      throw new AppError("too_large", 409, `at most ${Limits.maxBlockedUsers} blocked users`, { retryable: false });
    }
    this.#db.insert(schema.blocks).values({ userId, createdAt: now }).run();
    return true;
  }

  /** Returns false when not blocked. */
  remove(userId: string): boolean {
    return this.#db.delete(schema.blocks).where(eq(schema.blocks.userId, userId)).returning().all().length > 0;
  }

  list(): BlockedUser[] {
    return this.#db.select().from(schema.blocks).orderBy(asc(schema.blocks.createdAt)).all();
  }
}
