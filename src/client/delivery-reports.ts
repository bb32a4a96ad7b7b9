import type { ChatEvent, ErrorBody } from "../protocol/index.ts";
import { backoffMs } from "./retry.ts";

/** How often at most a device reports delivery per chat (the server merges reports by max). */
export const DELIVERY_REPORT_INTERVAL_MS = 250;
/**
 * Reports per second at most across chats, per connection: a catch-up that brings
 * hundreds of chats reports them over a few seconds instead of spending the
 * connection's frame budget (50 a second) that sends and `sync` need.
 */
export const DELIVERY_REPORTS_PER_SECOND = 20;

/** Sends one `delivered` report; rejects when it was not taken (it is tried again). */
export type DeliveryReport = (chatId: string, seq: number) => Promise<unknown>;

type ChatReports = {
  /** The highest seq the server acknowledged. */
  acked: number;
  /** The highest seq received that calls for a report. */
  wanted: number;
  /** When the last report went (or, after a failure, when the next may go less the interval). */
  lastAt: number;
  failures: number;
  sending: boolean;
  timer: ReturnType<typeof setTimeout> | null;
};

/**
 * Reports what the device received, per chat, at most once per 250 ms: the first
 * message at once (the sender sees DELIVERED quickly), then whatever arrived during
 * the interval in one report at its end, and across chats at most 20 a second. Only
 * others' messages call for a report. A report that fails (the connection dropped, the
 * server said wait) is sent again with backoff until acknowledged or refused for good,
 * so a chat never stays SENT for its senders because of a lost frame.
 */
export class DeliveryReports {
  readonly #report: DeliveryReport;
  readonly #chats = new Map<string, ChatReports>();
  /** The earliest time the next report of any chat may go. */
  #nextSlot = 0;

  constructor(report: DeliveryReport) {
    this.#report = report;
  }

  /** Events of `chatId` reached the app; `userId` is the account's own id. */
  received(chatId: string, events: readonly ChatEvent[], userId: string | undefined): void {
    let seq = 0;
    for (const event of events) if (event.type === "message" && event.senderId !== userId) seq = event.seq;
    if (seq === 0) return;
    let chat = this.#chats.get(chatId);
    if (!chat) {
      chat = { acked: 0, wanted: 0, lastAt: -Infinity, failures: 0, sending: false, timer: null };
      this.#chats.set(chatId, chat);
    }
    if (seq <= chat.wanted) return;
    chat.wanted = seq;
    this.#schedule(chatId, chat);
  }

  #schedule(chatId: string, chat: ChatReports, now = Date.now()): void {
    if (chat.timer || chat.sending || chat.wanted <= chat.acked) return;
    const at = Math.max(now, chat.lastAt + DELIVERY_REPORT_INTERVAL_MS, this.#nextSlot);
    this.#nextSlot = at + 1000 / DELIVERY_REPORTS_PER_SECOND;
    if (at <= now) return this.#send(chatId, chat, now);
    chat.timer = setTimeout(() => {
      chat.timer = null;
      this.#send(chatId, chat, Date.now());
    }, at - now);
  }

  #send(chatId: string, chat: ChatReports, now: number): void {
    const seq = chat.wanted;
    chat.sending = true;
    chat.lastAt = now;
    this.#report(chatId, seq).then(
      () => {
        chat.acked = Math.max(chat.acked, seq);
        chat.failures = 0;
      },
      (error: unknown) => {
        const body = errorBody(error);
        if (body && !body.retryable) {
          // Refused for good (no longer a member, say): nothing to report in this chat.
          chat.acked = Math.max(chat.acked, seq);
          return;
        }
        chat.failures++;
        const waitMs = body?.retryAfterMs ?? backoffMs(chat.failures);
        chat.lastAt = Date.now() + waitMs - DELIVERY_REPORT_INTERVAL_MS;
      },
    ).finally(() => {
      chat.sending = false;
      if (this.#chats.get(chatId) === chat) this.#schedule(chatId, chat);
    });
  }

  /** Stops every pending report (the connection closed for good). */
  stop(): void {
    for (const chat of this.#chats.values()) if (chat.timer) clearTimeout(chat.timer);
    this.#chats.clear();
  }
}

/** The server's refusal in an SDK error (a refused frame, a REST error), if that is what it is. */
function errorBody(error: unknown): ErrorBody | null {
  if (typeof error !== "object" || error === null) return null;
  const holder = error as { error?: unknown; body?: unknown };
  const body = (holder.error ?? holder.body) as ErrorBody | undefined;
  return body && typeof body === "object" && typeof body.code === "string" ? body : null;
}
