import { asc, count, eq, lt } from "drizzle-orm";
import type { DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import * as schema from "../db/user-schema.ts";
import { Limits, type Invitation } from "../protocol/index.ts";

/**
 * Groups an admin asked to add this account to, while its `groupAdd` setting wants to
 * be asked. Bounded: invitations expire after `Limits.invitationTtlMs`, and beyond
 * `Limits.maxPendingInvitations` the oldest is dropped.
 */
export class Invitations {
  readonly #db: DrizzleSqliteDODatabase<typeof schema>;

  constructor(db: DrizzleSqliteDODatabase<typeof schema>) {
    this.#db = db;
  }

  add(invitation: Invitation, now: number): void {
    const { invitations } = schema;
    this.#prune(now);
    this.#db
      .insert(invitations)
      .values(invitation)
      .onConflictDoUpdate({ target: invitations.chatId, set: { name: invitation.name, invitedBy: invitation.invitedBy, createdAt: invitation.createdAt } })
      .run();
    const excess = (this.#db.select({ rows: count() }).from(invitations).get()?.rows ?? 0) - Limits.maxPendingInvitations;
    if (excess <= 0) return;
    const oldest = this.#db.select({ chatId: invitations.chatId }).from(invitations).orderBy(asc(invitations.createdAt)).limit(excess).all();
    for (const { chatId } of oldest) this.#db.delete(invitations).where(eq(invitations.chatId, chatId)).run();
  }

  list(now: number): Invitation[] {
    this.#prune(now);
    return this.#db.select().from(schema.invitations).orderBy(asc(schema.invitations.createdAt)).all();
  }

  /** Whether an unexpired invitation to `chatId` waits. */
  has(chatId: string, now: number): boolean {
    const { invitations } = schema;
    const row = this.#db.select({ createdAt: invitations.createdAt }).from(invitations).where(eq(invitations.chatId, chatId)).get();
    return row !== undefined && row.createdAt > now - Limits.invitationTtlMs;
  }

  /** Removes and returns the invitation to `chatId`, if any (and not expired). */
  take(chatId: string, now: number): Invitation | null {
    const { invitations } = schema;
    const row = this.#db.delete(invitations).where(eq(invitations.chatId, chatId)).returning().get();
    return row && row.createdAt > now - Limits.invitationTtlMs ? row : null;
  }

  /** Deletes expired invitations; returns when the next one expires (null: none left). */
  prune(now: number): number | null {
    this.#prune(now);
    const oldest = this.#db.select({ createdAt: schema.invitations.createdAt }).from(schema.invitations).orderBy(asc(schema.invitations.createdAt)).limit(1).get();
    return oldest ? oldest.createdAt + Limits.invitationTtlMs : null;
  }

  #prune(now: number): void {
    this.#db.delete(schema.invitations).where(lt(schema.invitations.createdAt, now - Limits.invitationTtlMs)).run();
  }
}
