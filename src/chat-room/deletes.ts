import { AppError } from "../lib/app-error.ts";
import type { ChatEvent, DeletedForEveryone } from "../protocol/index.ts";
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
