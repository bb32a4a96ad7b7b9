import { AppError } from "../lib/app-error.ts";
import { describeError, log } from "../lib/log.ts";
import { Limits, type ChatEvent, type DeletedForEveryone } from "../protocol/index.ts";
import type { EventLog, MessageRef } from "./event-log.ts";
import type { Membership } from "./membership.ts";

export type DeletesOptions = {
  log: () => EventLog;
  membership: () => Membership;
  /** How long after sending its sender may delete a message for everyone (`DELETE_WINDOW_MS`). */
  windowMs: number;
};

/** What a delete for everyone did: the answer, and the new event (null when it was already deleted). */
export type DeleteOutcome = { result: DeletedForEveryone; event: ChatEvent | null };

/**
 * The rules of deleting a chat's messages, and the delete for everyone itself.
 *
 * For everyone: a current member deletes their own message within the window, and an
 * admin of a group or broadcast chat deletes any message at any time. The delete is an
 * event of the log (`message.deleted`, carrying the target's seq), so every device
 * learns of it from any cursor; the message becomes a tombstone in the same write.
 * Deleting a tombstone again answers the first delete (`duplicate: true`) and writes
 * nothing, whoever asks and whenever: it only states what already happened.
 *
 * For me: this chat only checks that the message is one the member could see (see
 * `visible`); the member's own account keeps the hidden list (src/user/hidden-messages.ts).
 */
export class Deletes {
  readonly #options: DeletesOptions;

  constructor(options: DeletesOptions) {
    this.#options = options;
  }

  /**
   * The message at `seq` if `userId` could see it: inside one of their membership
   * periods, former members included (they still read what they saw). Reads only.
   * `not_found` for any other seq (a membership change, a delete event, past the head,
   * outside their periods); `not_a_member` for someone who never belonged.
   */
  visible(userId: string, seq: number): MessageRef {
    const log = this.#options.log();
    const periods = this.#options.membership().periodsOf(userId);
    const headSeq = log.headSeq;
    const inPeriod = periods.some((period) => period.joinedSeq <= seq && seq <= (period.leftSeq ?? headSeq));
    const message = Number.isSafeInteger(seq) && seq >= 1 && seq <= headSeq && inPeriod ? log.messageAt(seq) : null;
    if (!message) throw new AppError("not_found", 404, `no message you can see at seq ${seq}`, { retryable: false });
    return message;
  }

  /** Deletes the message at `seq` for everyone, as `actorId` (a current member). */
  forEveryone(actorId: string, seq: number, now: number): DeleteOutcome {
    const membership = this.#options.membership();
    const member = membership.requireMember(actorId);
    const chat = membership.requireChat();
    const target = this.visible(actorId, seq);
    if (target.deletedSeq !== null) {
      return { result: { for: "everyone", chatId: chat.chatId, seq, deletedSeq: target.deletedSeq, duplicate: true }, event: null };
    }
    const admin = chat.kind !== "direct" && member.role === "admin";
    if (!admin) {
      if (target.senderId !== actorId) {
        throw new AppError("forbidden", 403, "only its sender or an admin of the group may delete this message", { retryable: false });
      }
      if (now - target.createdAt > this.#options.windowMs) {
        throw new AppError("delete_window_passed", 403, `a message may be deleted for everyone up to ${this.#options.windowMs} ms after it was sent`, {
          retryable: false,
        });
      }
    }
    const log = this.#options.log();
    const event = log.append({ type: "message.deleted", actorId, targetSeq: seq, senderId: target.senderId }, now);
    log.tombstone(seq, event.seq);
    return { result: { for: "everyone", chatId: chat.chatId, seq, deletedSeq: event.seq, duplicate: false }, event };
  }
}

const NOTICE_PREFIX = "former-preview:";
/** Notices to former members kept for a retry at most; beyond, a notice is tried once only (logged). */
export const MAX_PENDING_PREVIEW_NOTICES = 4 * Limits.maxGroupMembers;
/** A failed notice is tried again after this, doubling per failure up to an hour, at most this many times. */
const NOTICE_RETRY_MS = 10_000;
const NOTICE_RETRY_MAX_MS = 60 * 60 * 1000;
const NOTICE_ATTEMPTS = 12;

export type FormerPreviewOptions = {
  storage: DurableObjectStorage;
  /** Tells a former member's account that the message at `seq` was deleted (its list's preview drops it). */
  tell: (userId: string, seq: number) => Promise<void>;
  /** Makes the chat's scheduler run `retry` no later than `at`. */
  retryNoLaterThan: (at: number) => void;
};

/**
 * The notices a delete for everyone sends to former members who saw the message: their
 * list may still preview it, and no fan-out reaches them any more. Each notice is stored
 * (the object's key-value storage, in the delete's turn, so it commits with the delete)
 * until the account answers; a failed one is tried again from the chat's scheduler,
 * with a growing delay, up to `NOTICE_ATTEMPTS` times. At most
 * `MAX_PENDING_PREVIEW_NOTICES` wait at once.
 */
export class FormerPreviewNotices {
  readonly #options: FormerPreviewOptions;

  constructor(options: FormerPreviewOptions) {
    this.#options = options;
  }

  /** Records a notice for each of `userIds` and sends them now. */
  send(userIds: string[], seq: number): void {
    if (userIds.length === 0) return;
    const { kv } = this.#options.storage;
    let pending = [...kv.list({ prefix: NOTICE_PREFIX })].length;
    for (const userId of userIds) {
      if (pending < MAX_PENDING_PREVIEW_NOTICES) {
        kv.put(noticeKey(seq, userId), 0);
        pending++;
      } else log.warn("too many notices to former members waiting: this one is not retried", { seq });
      void this.#try(seq, userId, 0);
    }
    // Set in the delete's turn: if the object is reset before the calls answer, the
    // stored notices are sent again (one already answered is no longer stored).
    this.#options.retryNoLaterThan(Date.now() + NOTICE_RETRY_MS);
  }

  /** The scheduler's deadline: every notice waiting is sent again. */
  async retry(): Promise<void> {
    const notices = [...this.#options.storage.kv.list<number>({ prefix: NOTICE_PREFIX })];
    await Promise.all(
      notices.map(([key, failures]) => {
        const [seq, userId] = parseNoticeKey(key);
        return this.#try(seq, userId, failures);
      }),
    );
  }

  async #try(seq: number, userId: string, failures: number): Promise<void> {
    const { kv } = this.#options.storage;
    const key = noticeKey(seq, userId);
    try {
      await this.#options.tell(userId, seq);
      kv.delete(key);
    } catch (error) {
      // A notice no longer stored (over the bound, or given up) is not stored again.
      if (kv.get(key) === undefined) return;
      const failed = failures + 1;
      if (failed >= NOTICE_ATTEMPTS) {
        log.warn("gave up telling a former member's list of a delete", { seq, ...describeError(error) });
        kv.delete(key);
        return;
      }
      log.warn("could not tell a former member's list of a delete; retrying later", { seq, ...describeError(error) });
      kv.put(key, failed);
      this.#options.retryNoLaterThan(Date.now() + Math.min(NOTICE_RETRY_MS * 2 ** failures, NOTICE_RETRY_MAX_MS));
    }
  }
}

const noticeKey = (seq: number, userId: string) => `${NOTICE_PREFIX}${seq}:${userId}`;

function parseNoticeKey(key: string): [seq: number, userId: string] {
  const rest = key.slice(NOTICE_PREFIX.length);
  const colon = rest.indexOf(":");
  return [Number(rest.slice(0, colon)), rest.slice(colon + 1)];
}
