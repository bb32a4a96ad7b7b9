import { Limits, type HiddenMessage } from "../protocol/index.ts";

/** One chat's hidden messages as stored: `[seq, hiddenNo]` pairs in ascending seq. */
export type HiddenEntries = [seq: number, hiddenNo: number][];

/** What the hidden set needs of a storage (the optional part of `CursorStorage`). */
export type HiddenStorage = {
  loadHiddenNo?(): number | undefined;
  saveHiddenNo?(hiddenNo: number): void;
  loadHidden?(): Iterable<[chatId: string, entries: HiddenEntries]>;
  /** Replaces one chat's entries; an empty list deletes them. */
  saveHidden?(chatId: string, entries: HiddenEntries): void;
};

/**
 * The messages the account hid for itself ("delete for me"), per chat, and the account's
 * hidden cursor: the latest `hiddenNo` up to which this device has every entry, which
 * a device stream resumes with (`hiddenSince`). Entries are numbered by the account
 * without gaps, so the cursor moves only through consecutive numbers: an entry after a
 * gap is applied (hiding is idempotent) but the cursor stays before the gap, and the
 * next resume brings what is missing. Bounded by `Limits.maxHiddenMessages` (the
 * server refuses more): beyond it the entries hidden first are dropped.
 */
export class HiddenMessages {
  readonly #storage: HiddenStorage;
  /** chatId -> seq -> hiddenNo. */
  readonly #chats = new Map<string, Map<number, number>>();
  #size = 0;
  #cursor: number | undefined;

  constructor(storage: HiddenStorage) {
    this.#storage = storage;
    this.#cursor = storage.loadHiddenNo?.();
    for (const [chatId, entries] of storage.loadHidden?.() ?? []) {
      const chat = new Map<number, number>();
      for (const [seq, hiddenNo] of entries) if (Number.isSafeInteger(seq) && Number.isSafeInteger(hiddenNo)) chat.set(seq, hiddenNo);
      if (chat.size === 0) continue;
      this.#chats.set(chatId, chat);
      this.#size += chat.size;
    }
  }

  /** The hidden cursor (undefined: this storage never had one, as after an upgrade or on a new device). */
  get cursor(): number | undefined {
    return this.#cursor;
  }

  get size(): number {
    return this.#size;
  }

  /**
   * Applies entries; returns those that were not hidden before. `after`: the entries are
   * every entry after that hiddenNo up to their last (a page of a resume's answer, or a
   * REST page), so when it is not past the cursor a gap in their numbers is not a
   * missing entry and the cursor follows them. Without it (a live entry) the cursor
   * moves only through consecutive numbers.
   */
  apply(entries: readonly HiddenMessage[], after?: number): HiddenMessage[] {
    const sorted = [...entries].sort((a, b) => a.hiddenNo - b.hiddenNo);
    const fresh: HiddenMessage[] = [];
    const touched = new Set<string>();
    let cursor = this.#cursor ?? 0;
    const jumps = after !== undefined && after <= cursor;
    for (const entry of sorted) {
      if (entry.hiddenNo === cursor + 1 || (jumps && entry.hiddenNo > cursor)) cursor = entry.hiddenNo;
      let chat = this.#chats.get(entry.chatId);
      if (chat?.has(entry.seq)) continue;
      if (!chat) {
        chat = new Map();
        this.#chats.set(entry.chatId, chat);
      }
      chat.set(entry.seq, entry.hiddenNo);
      this.#size++;
      touched.add(entry.chatId);
      fresh.push(entry);
    }
    while (this.#size > Limits.maxHiddenMessages) touched.add(this.#dropOldest());
    for (const chatId of touched) this.#save(chatId);
    if (cursor !== (this.#cursor ?? 0) || (this.#cursor === undefined && sorted.length > 0)) {
      this.#cursor = cursor;
      this.#storage.saveHiddenNo?.(cursor);
    }
    return fresh;
  }

  has(chatId: string, seq: number): boolean {
    return this.#chats.get(chatId)?.has(seq) ?? false;
  }

  /** The hidden seqs of one chat, ascending. */
  of(chatId: string): number[] {
    return [...(this.#chats.get(chatId)?.keys() ?? [])].sort((a, b) => a - b);
  }

  /** Forgets one chat's entries (a chat the account never had). */
  forget(chatId: string): void {
    const chat = this.#chats.get(chatId);
    if (!chat) return;
    this.#size -= chat.size;
    this.#chats.delete(chatId);
    this.#storage.saveHidden?.(chatId, []);
  }

  /** Drops the entry hidden first; returns its chat. */
  #dropOldest(): string {
    let oldest: { chatId: string; seq: number; hiddenNo: number } | null = null;
    for (const [chatId, chat] of this.#chats) {
      for (const [seq, hiddenNo] of chat) if (!oldest || hiddenNo < oldest.hiddenNo) oldest = { chatId, seq, hiddenNo };
    }
    const chat = this.#chats.get(oldest!.chatId)!;
    chat.delete(oldest!.seq);
    if (chat.size === 0) this.#chats.delete(oldest!.chatId);
    this.#size--;
    return oldest!.chatId;
  }

  #save(chatId: string): void {
    const chat = this.#chats.get(chatId);
    const entries: HiddenEntries = chat ? [...chat].sort((a, b) => a[0] - b[0]) : [];
    this.#storage.saveHidden?.(chatId, entries);
  }
}
