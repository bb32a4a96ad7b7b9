import { emptyPage, type EventLog, type EventPage } from "./event-log.ts";
import type { Period } from "./membership.ts";

/**
 * Pages of the log as one member sees it: only the events inside their membership
 * periods (from the event that added them to the one that removed them, both
 * included). Between periods nothing is shown and nothing is a gap: the next event a
 * reader gets after a period is the `member.added` that starts the following one.
 */
export type VisiblePage = EventPage & {
  /** Whether the member can see events beyond this page in the direction read. */
  hasMore: boolean;
};

/** Visible events with seq > `after`, ascending. */
export function visibleAfter(log: EventLog, periods: readonly Period[], after: number, limit: number, maxBytes: number): VisiblePage {
  const page = emptyPage();
  const headSeq = log.headSeq;
  let full = false;
  let lastVisible = 0;
  for (const period of periods) {
    const end = period.leftSeq ?? headSeq;
    lastVisible = Math.max(lastVisible, end);
    if (full || end <= after) continue;
    full = log.readAfter(page, Math.max(after, period.joinedSeq - 1), end, limit, maxBytes);
  }
  const reached = page.events.at(-1)?.seq ?? after;
  return { ...page, hasMore: reached < lastVisible };
}

/** Visible events with seq < `before`, the newest `limit`, returned ascending. */
export function visibleBefore(log: EventLog, periods: readonly Period[], before: number, limit: number, maxBytes: number): VisiblePage {
  const page = emptyPage();
  const headSeq = log.headSeq;
  let full = false;
  for (let index = periods.length - 1; index >= 0 && !full; index--) {
    const period = periods[index]!;
    if (period.joinedSeq >= before) continue;
    const end = Math.min(before, (period.leftSeq ?? headSeq) + 1);
    full = log.readBefore(page, end, period.joinedSeq, limit, maxBytes);
  }
  page.events.reverse();
  page.json.reverse();
  const first = page.events[0]?.seq ?? before;
  const firstVisible = periods[0]?.joinedSeq ?? first;
  return { ...page, hasMore: first > firstVisible };
}
