import { Limits, type ChatEvent, type TypingNotice, type TypingState } from "../protocol/index.ts";

/**
 * Who is typing in each chat, from `typing` frames: a member shows until their notice
 * expires, they pause, or a message of theirs arrives. `changed` gets the chat and
 * the members typing in it now.
 */
export class TypingIndicators {
  readonly #changed: (chatId: string, userIds: string[]) => void;
  readonly #timers = new Map<string, Map<string, ReturnType<typeof setTimeout>>>();

  constructor(changed: (chatId: string, userIds: string[]) => void) {
    this.#changed = changed;
  }

  notice(notice: TypingNotice): void {
    if (notice.state === "paused") return this.#clear(notice.chatId, notice.userId);
    const chat = this.#timers.get(notice.chatId) ?? new Map<string, ReturnType<typeof setTimeout>>();
    this.#timers.set(notice.chatId, chat);
    const known = chat.has(notice.userId);
    clearTimeout(chat.get(notice.userId));
    chat.set(notice.userId, setTimeout(() => this.#clear(notice.chatId, notice.userId), notice.expiresInMs));
    if (!known) this.#changed(notice.chatId, [...chat.keys()]);
  }

  /** A message from a member ends their typing. */
  received(chatId: string, events: readonly ChatEvent[]): void {
    for (const event of events) if (event.type === "message") this.#clear(chatId, event.senderId);
  }

  typing(chatId: string): string[] {
    return [...(this.#timers.get(chatId)?.keys() ?? [])];
  }

  stop(): void {
    for (const chat of this.#timers.values()) for (const timer of chat.values()) clearTimeout(timer);
    this.#timers.clear();
  }

  #clear(chatId: string, userId: string): void {
    const chat = this.#timers.get(chatId);
    const timer = chat?.get(userId);
    if (!chat || timer === undefined) return;
    clearTimeout(timer);
    chat.delete(userId);
    if (chat.size === 0) this.#timers.delete(chatId);
    this.#changed(chatId, [...chat.keys()]);
  }
}

/**
 * The user's own typing: the app calls `typing()` on each keystroke; the server hears
 * `typing` at most every `Limits.typingIntervalMs` while keystrokes go on, and
 * `paused` once none came for `pauseAfterMs` (or at once from `stop()`, say on send).
 */
export class TypingReporter {
  readonly #send: (chatId: string, state: TypingState) => Promise<unknown>;
  readonly #pauseAfterMs: number;
  readonly #chats = new Map<string, { sentAt: number; pause: ReturnType<typeof setTimeout> }>();

  constructor(send: (chatId: string, state: TypingState) => Promise<unknown>, pauseAfterMs = Limits.typingExpiresMs / 2) {
    this.#send = send;
    this.#pauseAfterMs = pauseAfterMs;
  }

  typing(chatId: string, now = Date.now()): void {
    const chat = this.#chats.get(chatId);
    if (chat) clearTimeout(chat.pause);
    const due = !chat || now - chat.sentAt >= Limits.typingIntervalMs;
    if (due) this.#transmit(chatId, "typing");
    this.#chats.set(chatId, { sentAt: due ? now : chat!.sentAt, pause: setTimeout(() => this.stop(chatId), this.#pauseAfterMs) });
  }

  stop(chatId: string): void {
    const chat = this.#chats.get(chatId);
    if (!chat) return;
    clearTimeout(chat.pause);
    this.#chats.delete(chatId);
    this.#transmit(chatId, "paused");
  }

  stopAll(): void {
    for (const chatId of [...this.#chats.keys()]) this.stop(chatId);
  }

  #transmit(chatId: string, state: TypingState): void {
    this.#send(chatId, state).catch(() => {
      // Ephemeral: a lost indicator is not sent again.
    });
  }
}
