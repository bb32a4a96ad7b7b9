import { AppError } from "../lib/app-error.ts";
import { TokenBuckets } from "../lib/token-buckets.ts";
import { Limits } from "../protocol/index.ts";
import type { EventLog } from "./event-log.ts";
import type { Period } from "./membership.ts";
import { visibleAfter } from "./visible-events.ts";
import type { Sessions, SessionState } from "./sessions.ts";
import { sendEventsFrame } from "../sockets/socket-io.ts";

/** Catch-up pacing per device and chat: 1 MiB/s, bursts of 2 MiB (8 full pages). */
const BYTES_PER_SECOND = 1024 * 1024;
const BYTES_BURST = 2 * 1024 * 1024;

export type CatchUpOptions = {
  log: () => EventLog;
  sessions: Sessions;
  chatId: () => string;
  /** The member's periods: a socket is sent only what they may see. */
  periods: (userId: string) => readonly Period[];
  /** Events per page (`CATCH_UP_PAGE_SIZE`). */
  pageSize: number;
};

/**
 * Brings a resuming socket up to the head, a page at a time. A page holds at most
 * `pageSize` events and `Limits.maxPageBytes` of them, and the next one is sent only
 * when the client asks (`sync`). A server WebSocket shows no buffered amount, so the
 * client's `sync` is the only sign it has read a page; pages are also paced per device
 * (a token bucket of bytes, in memory), so pipelined syncs or a reconnect loop cannot
 * queue megabytes in the runtime: over budget, `sync` answers `rate_limited`.
 */
export class CatchUp {
  readonly #options: CatchUpOptions;
  readonly #budget = new TokenBuckets(BYTES_PER_SECOND, BYTES_BURST);

  constructor(options: CatchUpOptions) {
    this.#options = options;
  }

  /** Sends the socket its next page (nothing once it is live); returns its cursor. */
  nextPage(ws: WebSocket, session: SessionState, now = Date.now()): number {
    const log = this.#options.log();
    const headSeq = log.headSeq;
    if (session.live) return headSeq;
    const waitMs = this.#budget.waitMs(session.deviceId, now);
    if (waitMs > 0) throw new AppError("rate_limited", 429, "catching up too fast: sync again later", { retryAfterMs: waitMs });
    const page = visibleAfter(log, this.#options.periods(session.userId), session.cursor, this.#options.pageSize, Limits.maxPageBytes);
    this.#budget.take(session.deviceId, now, page.bytes);
    // Decided in the same turn as the read: an event stored after this page is either
    // in the next page (more) or pushed live, never both and never neither.
    const live = !page.hasMore;
    const cursor = live ? headSeq : (page.events.at(-1)?.seq ?? session.cursor);
    this.#options.sessions.save(ws, { ...session, cursor, live });
    sendEventsFrame(ws, this.#options.chatId(), page.json, !live);
    return cursor;
  }

  /** The page a resuming socket gets at once; over the budget, an empty page tells it to `sync` later. */
  firstPage(ws: WebSocket, session: SessionState): void {
    try {
      this.nextPage(ws, session);
    } catch (error) {
      if (!(error instanceof AppError) || error.code !== "rate_limited") throw error;
      sendEventsFrame(ws, this.#options.chatId(), [], true);
    }
  }
}
