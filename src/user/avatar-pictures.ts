import { AppError } from "../lib/app-error.ts";
import { describeError, log } from "../lib/log.ts";
import type { AccountProfile } from "./profile.ts";

/** R2 key of a picture: a new id each time, so a cached old picture is never served for a new one. */
export const avatarKey = (userId: string, avatarId: string) => `avatars/${userId}/${avatarId}`;

/**
 * How long a picture being uploaded may take before its object is deleted unless the
 * profile took it (15 minutes: a 5 MiB picture, on a slow link).
 */
export const PENDING_AVATAR_MS = 15 * 60_000;

export type AvatarPicturesDeps = {
  storage: DurableObjectStorage;
  profile: AccountProfile;
  bucket: R2Bucket;
  userId: () => string;
  /** Makes the cleanup due no later than `at`. */
  schedule: (at: number) => void;
};

/** Storage keys (the synchronous key-value API): picture id → when its object is deleted. */
const KEY_PREFIX = "avatar-cleanup:";

/**
 * The account's picture objects in R2, so that none is left behind: a picture's id is
 * recorded (with a deadline) before the Worker writes its object; the profile taking it
 * clears the record; a replaced or removed picture gets a record due now. Whatever is
 * recorded and due is deleted from R2 through the account's scheduler (deadline
 * `avatar-cleanup`), retried while R2 fails. The picture the profile points to is never
 * deleted. A Worker that dies between its write and the profile, or a delete that fails,
 * leaves a record, never an orphan.
 */
export class AvatarPictures {
  readonly #deps: AvatarPicturesDeps;

  constructor(deps: AvatarPicturesDeps) {
    this.#deps = deps;
  }

  /** A picture is about to be written: deleted at `now + PENDING_AVATAR_MS` unless the profile takes it by then. */
  reserve(avatarId: string, now: number): void {
    const deadline = now + PENDING_AVATAR_MS;
    this.#deps.storage.kv.put(KEY_PREFIX + avatarId, deadline);
    this.#deps.schedule(deadline);
  }

  /**
   * The profile's picture becomes `avatarId` (null: none); answers the one it replaces,
   * whose object is deleted now (or by the retry). A picture not reserved, or past its
   * deadline (its object may be going), is refused: 503, upload it again.
   */
  async set(avatarId: string | null, now: number): Promise<string | null> {
    const { storage, profile } = this.#deps;
    if (avatarId !== null) {
      const deadline = storage.kv.get<number>(KEY_PREFIX + avatarId);
      if (deadline === undefined || deadline <= now) {
        // Its record may be gone already (the cleanup ran while it was still being written):
        // it is recorded again, due now, so the object written late is deleted too.
        storage.kv.put(KEY_PREFIX + avatarId, now);
        this.#deps.schedule(now);
        throw new AppError("unavailable", 503, "the picture took too long to store; send it again", { retryable: true });
      }
      storage.kv.delete(KEY_PREFIX + avatarId);
    }
    const previous = profile.setAvatar(avatarId);
    if (previous !== null && previous !== avatarId) {
      storage.kv.put(KEY_PREFIX + previous, now);
      // Set before anything is awaited: it commits with the profile.
      this.#deps.schedule(now);
      try {
        await this.clean(now);
      } catch (error) {
        log.warn("could not delete a replaced profile picture yet; retrying", describeError(error));
      }
    }
    return previous;
  }

  /**
   * The `avatar-cleanup` deadline: deletes the objects of due records (never the
   * profile's picture), then their records, and schedules the next. Throws when R2 fails
   * (the scheduler retries); idempotent.
   */
  async clean(now: number): Promise<void> {
    const { storage, profile, bucket } = this.#deps;
    const current = profile.avatarId();
    const due: string[] = [];
    let next: number | null = null;
    for (const [key, deadline] of storage.kv.list<number>({ prefix: KEY_PREFIX })) {
      const avatarId = key.slice(KEY_PREFIX.length);
      if (deadline > now) next = next === null ? deadline : Math.min(next, deadline);
      else if (avatarId === current) storage.kv.delete(key);
      else due.push(avatarId);
    }
    if (next !== null) this.#deps.schedule(next);
    if (due.length === 0) return;
    const userId = this.#deps.userId();
    await bucket.delete(due.map((avatarId) => avatarKey(userId, avatarId)));
    for (const avatarId of due) storage.kv.delete(KEY_PREFIX + avatarId);
  }
}
