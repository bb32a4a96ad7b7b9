import type { ChatEvent } from "../protocol/index.ts";

/** How often at most a device reports delivery per chat (the server merges reports by max). */
export const DELIVERY_REPORT_INTERVAL_MS = 250;

/** Sends one `delivered` report; a failure is dropped (the next report covers it: watermarks). */
export type DeliveryReport = (chatId: string, seq: number) => Promise<unknown>;

type ChatReports = { reported: number; wanted: number; lastAt: number; timer: ReturnType<typeof setTimeout> | null };

/**
 * Reports what the device received, per chat, at most once per 250 ms: the first
 * message at once (the sender sees DELIVERED quickly), then whatever arrived during
 * the interval in one report at its end. Only others' messages call for a report:
 * a chat with nothing but one's own messages or membership events sends none.
 */
export class DeliveryReports {
  readonly #report: DeliveryReport;
  readonly #chats = new Map<string, ChatReports>();

  constructor(report: DeliveryReport) {
    this.#report = report;
  }

  /** Events of `chatId` reached the app; `userId` is the account's own id. */
  received(chatId: string, events: readonly ChatEvent[], userId: string | undefined): void {
    let seq = 0;
    for (const event of events) if (event.type === "message" && event.senderId !== userId) seq = event.seq;
    if (seq > 0) this.#note(chatId, seq);
  }

  #note(chatId: string, seq: number, now = Date.now()): void {
    let chat = this.#chats.get(chatId);
    if (!chat) {
      chat = { reported: 0, wanted: 0, lastAt: -Infinity, timer: null };
      this.#chats.set(chatId, chat);
    }
    if (seq <= Math.max(chat.reported, chat.wanted)) return;
    chat.wanted = seq;
    if (chat.timer) return;
    const waitMs = chat.lastAt + DELIVERY_REPORT_INTERVAL_MS - now;
    if (waitMs <= 0) return this.#send(chatId, chat, now);
    chat.timer = setTimeout(() => {
      chat.timer = null;
      this.#send(chatId, chat, Date.now());
    }, waitMs);
  }

  #send(chatId: string, chat: ChatReports, now: number): void {
    if (chat.wanted <= chat.reported) return;
    chat.reported = chat.wanted;
    chat.lastAt = now;
    this.#report(chatId, chat.wanted).catch(() => {
      // Lost with the connection: the next events report past it, and history fetches count too.
    });
  }

  /** Stops every pending report (the connection closed for good). */
  stop(): void {
    for (const chat of this.#chats.values()) if (chat.timer) clearTimeout(chat.timer);
    this.#chats.clear();
  }
}
