import type { DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import * as schema from "../db/user-schema.ts";
import type { GroupAddSetting, Me, Profile, ProfilePatch } from "../protocol/index.ts";

/** The account's one profile row: what its owner sees (`Me`) and what others see (`Profile`). */
export class AccountProfile {
  readonly #db: DrizzleSqliteDODatabase<typeof schema>;

  constructor(db: DrizzleSqliteDODatabase<typeof schema>) {
    this.#db = db;
  }

  /** Writes the row on the account's first login (a second call changes nothing). */
  create(userId: string, phone: string, now: number): void {
    this.#db.insert(schema.profile).values({ userId, phone, createdAt: now }).onConflictDoNothing().run();
  }

  /** Null when the row does not exist. */
  me(): Me | null {
    const row = this.#db.select().from(schema.profile).get();
    if (!row) return null;
    return {
      userId: row.userId,
      phone: row.phone,
      displayName: row.displayName,
      about: row.about,
      ...(row.avatarId ? { avatarId: row.avatarId } : {}),
      groupAdd: row.groupAdd,
      hideLastSeen: row.hideLastSeen,
      createdAt: row.createdAt,
    };
  }

  public(): Profile | null {
    const row = this.#db.select().from(schema.profile).get();
    if (!row) return null;
    return { userId: row.userId, displayName: row.displayName, about: row.about, ...(row.avatarId ? { avatarId: row.avatarId } : {}), createdAt: row.createdAt };
  }

  groupAdd(): GroupAddSetting | null {
    return this.#db.select({ groupAdd: schema.profile.groupAdd }).from(schema.profile).get()?.groupAdd ?? null;
  }

  /** Whether the account hides its last seen time (false when there is no account). */
  hidesLastSeen(): boolean {
    return this.#db.select({ hide: schema.profile.hideLastSeen }).from(schema.profile).get()?.hide ?? false;
  }

  /** The profile picture's id, or null. */
  avatarId(): string | null {
    return this.#db.select({ avatarId: schema.profile.avatarId }).from(schema.profile).get()?.avatarId ?? null;
  }

  /** Sets (or with null removes) the profile picture; answers the one it replaces. */
  setAvatar(avatarId: string | null): string | null {
    const previous = this.avatarId();
    this.#db.update(schema.profile).set({ avatarId }).run();
    return previous;
  }

  update(patch: ProfilePatch): void {
    this.#db.update(schema.profile).set(patch).run();
  }
}
