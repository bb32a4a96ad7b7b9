import type { ChatIndexUpdate, LastMessage } from "../protocol/index.ts";
import { attachmentKinds, type EventLog, type NumberedMessage } from "./event-log.ts";
import type { Membership, PeriodRow } from "./membership.ts";

/**
 * Builds members' chat-list entries as of the chat's head, for the account fan-out
 * and for a mark-read's answer: what a chat list draws, from the member's side (their
 * last visible message, read position and unread count).
 *
 * Unread is a difference of message numbers (`messages` in the log are numbered 1, 2,
 * 3…, other events have none): the number of the latest message the entry covers
 * minus that of the latest message at or before the member's read position. Both
 * are in memory or one short lookup each; nothing is counted over the log. Made once
 * per round, so members at the same read position share one lookup.
 *
 * Call it and use what it returns in one turn: the entries describe the head of that turn.
 */
export function chatIndexEntries(
  log: EventLog,
  membership: Membership,
  receipts: (userId: string) => { deliveredUpTo: number; seenUpTo: number },
): (period: PeriodRow) => ChatIndexUpdate {
  const chat = membership.requireChat();
  const headSeq = log.headSeq;
  const direct = chat.kind === "direct" ? [...membership.members()] : [];
  const base = { chatId: chat.chatId, kind: chat.kind, name: chat.name, memberCount: membership.memberCount, lastActivityAt: log.headCreatedAt };
  const messagesUpTo = new Map<number, number>();
  const messageNoAtOrBefore = (seq: number): number => {
    let number = messagesUpTo.get(seq);
    if (number === undefined) {
      number = log.messageNoAtOrBefore(seq);
      messagesUpTo.set(seq, number);
    }
    return number;
  };
  // Nearly every member previews the same message: its preview (files parsed from JSON) is made once a round.
  const previews = new Map<number, LastMessage>();
  const previewOf = (message: NumberedMessage): LastMessage => {
    let preview = previews.get(message.seq);
    if (!preview) {
      preview = lastMessageOf(message);
      previews.set(message.seq, preview);
    }
    return preview;
  };
  return (period) => {
    // A former member's entry stops at the event that ended their period.
    const upTo = period.leftSeq ?? headSeq;
    const update: ChatIndexUpdate = {
      ...base,
      headSeq: upTo,
      membership: "member",
      readSeq: period.readSeq,
      unreadCount: Math.max(0, messageNoAtOrBefore(upTo) - messageNoAtOrBefore(period.readSeq)),
      ...receipts(period.userId),
    };
    if (period.leftSeq !== null) update.membership = log.typeAt(period.leftSeq) === "member.removed" ? "removed" : "left";
    if (chat.kind === "direct") {
      const peer = direct.find((member) => member.userId !== period.userId);
      if (peer) update.peerId = peer.userId;
    }
    const message = lastVisibleMessage(log, membership, period, upTo);
    if (message) update.lastMessage = previewOf(message);
    return update;
  };
}

/**
 * The latest message `period`'s member can see up to `upTo`: the latest of the log
 * when it falls inside this period (nearly always); otherwise the latest inside one of
 * their earlier periods (a member added to a quiet chat, or added back), read from storage.
 */
function lastVisibleMessage(log: EventLog, membership: Membership, period: PeriodRow, upTo: number): NumberedMessage | null {
  let message = log.messageAtOrBefore(upTo);
  if (message && message.seq < period.joinedSeq) {
    message = null;
    const earlier = membership.periodsOf(period.userId).filter((other) => other.joinedSeq < period.joinedSeq);
    for (let index = earlier.length - 1; index >= 0 && !message; index--) {
      const { joinedSeq, leftSeq } = earlier[index]!;
      const candidate = log.messageAtOrBefore(leftSeq ?? upTo);
      if (candidate && candidate.seq >= joinedSeq) message = candidate;
    }
  }
  return message;
}

/** A message as a chat list previews it: a deleted one shows only that it was deleted. */
export function lastMessageOf(message: NumberedMessage): LastMessage {
  const last: LastMessage = { seq: message.seq, senderId: message.senderId, createdAt: message.createdAt };
  if (message.deletedSeq !== null) {
    last.deleted = true;
    return last;
  }
  if (message.body !== null) last.body = message.body;
  const kinds = attachmentKinds(message.attachments);
  if (kinds) last.attachments = kinds;
  return last;
}
