import type { ChatSummary, MessageStatusName, ReceiptsFrame } from "../protocol/index.ts";

export type ChatReceipts = { deliveredUpTo: number; seenUpTo: number };

/**
 * The status of the account's own messages, per chat, as two watermarks merged by max
 * from `receipts` frames, chat entries and `ready` frames: a message is SEEN up to
 * `seenUpTo`, DELIVERED up to `deliveredUpTo`, SENT after. `since` is the latest
 * server time of a `receipts` frame, which a device stream resumes with.
 */
export class ReceiptBook {
  readonly #chats = new Map<string, ChatReceipts>();
  #since: number | undefined;

  /** Merges watermarks; answers true when they moved. */
  merge(chatId: string, receipts: ChatReceipts): boolean {
    const current = this.#chats.get(chatId);
    if (current && current.deliveredUpTo >= receipts.deliveredUpTo && current.seenUpTo >= receipts.seenUpTo) return false;
    this.#chats.set(chatId, {
      deliveredUpTo: Math.max(current?.deliveredUpTo ?? 0, receipts.deliveredUpTo),
      seenUpTo: Math.max(current?.seenUpTo ?? 0, receipts.seenUpTo),
    });
    return true;
  }

  /** A `receipts` frame: merged, and its time kept for the next resume. */
  frame(frame: ReceiptsFrame): boolean {
    this.#since = Math.max(this.#since ?? 0, frame.at);
    return this.merge(frame.chatId, frame);
  }

  /** A chat entry carries the same watermarks. */
  entry(chat: ChatSummary): boolean {
    return this.merge(chat.chatId, chat);
  }

  get(chatId: string): ChatReceipts | undefined {
    return this.#chats.get(chatId);
  }

  /** The status of the account's own message at `seq` in `chatId`, as last heard. */
  statusOf(chatId: string, seq: number): MessageStatusName {
    const receipts = this.#chats.get(chatId);
    if (receipts && seq <= receipts.seenUpTo) return "seen";
    if (receipts && seq <= receipts.deliveredUpTo) return "delivered";
    return "sent";
  }

  get since(): number | undefined {
    return this.#since;
  }
}
