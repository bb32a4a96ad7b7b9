import type { EventLog } from "./event-log.ts";
import type { PeriodRow } from "./membership.ts";

/**
 * What of a chat has reached no device of one member (for offline notifications):
 * never any message content.
 */
export type Undelivered = {
  /** Where the member's devices are: their delivered watermark, or their own latest message when later. */
  reachedSeq: number;
  /** Messages after `reachedSeq` (all from others, see below). */
  count: number;
  /** The latest of them; null when `count` is 0. */
  latest: { seq: number; senderId: string; createdAt: number } | null;
  /** When the first of them was stored: how long the member's devices have been behind. Null when `count` is 0. */
  oldestAt: number | null;
};

/**
 * A current member's undelivered messages, from two message numbers (no rows counted).
 * Their delivered watermark moves with `delivered` and `read` reports from any of their
 * devices and with history pages they fetch. Sending moves their read position to their
 * own message (one's own messages are never unread), and a member who wrote after some
 * messages is not woken for those: so the count starts after the later of the two, and
 * every message it counts is from someone else.
 */
export function undeliveredTo(log: EventLog, member: PeriodRow): Undelivered {
  const reachedSeq = Math.max(member.deliveredSeq, member.readSeq);
  const count = Math.max(0, log.headMessageNo - log.messageNoAtOrBefore(reachedSeq));
  const last = count > 0 ? log.messageAtOrBefore(log.headSeq) : null;
  const latest = last && last.seq > reachedSeq ? { seq: last.seq, senderId: last.senderId, createdAt: last.createdAt } : null;
  return { reachedSeq, count, latest, oldestAt: latest ? (log.firstMessageAfter(reachedSeq)?.createdAt ?? latest.createdAt) : null };
}
