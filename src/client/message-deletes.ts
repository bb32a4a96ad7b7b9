import { DeleteResult, type ChatEvent, type HiddenMessage } from "../protocol/index.ts";
import { ConnectionLost } from "./outbox.ts";

/**
 * A message deleted for everyone, as the app redraws it: the message at `seq` of
 * `chatId` is gone (its bubble becomes "message deleted"); `deletedSeq` is the seq of
 * the `message.deleted` event that said so.
 */
export type MessageDeletion = {
  chatId: string;
  /** The deleted message's seq. */
  seq: number;
  deletedSeq: number;
  /** Who deleted it: its sender, or an admin of the group. */
  actorId: string;
  /** Who had sent it. */
  senderId: string;
  deletedAt: number;
};

/** The deletions among events of one chat, in order. */
export function deletionsIn(chatId: string, events: readonly ChatEvent[]): MessageDeletion[] {
  const deletions: MessageDeletion[] = [];
  for (const event of events) {
    if (event.type !== "message.deleted") continue;
    deletions.push({ chatId, seq: event.targetSeq, deletedSeq: event.seq, actorId: event.actorId, senderId: event.senderId, deletedAt: event.createdAt });
  }
  return deletions;
}

/** A delete's answer, read against the schema: an unreadable one leaves the outcome unknown (a delete may be sent again). */
export function deleteResultOf(result: unknown): DeleteResult {
  const parsed = DeleteResult.safeParse(result);
  if (!parsed.success) throw new ConnectionLost("unreadable answer to a delete");
  return parsed.data;
}

/** The hidden-message entry a delete for me created. */
export function hiddenEntryOf(result: DeleteResult): HiddenMessage | null {
  if (result.for !== "me") return null;
  return { hiddenNo: result.hiddenNo, chatId: result.chatId, seq: result.seq, hiddenAt: result.hiddenAt };
}
