import { ChatEvent, type EventEnvelope, type HiddenMessage } from "../protocol/index.ts";
import { HiddenMessages, type HiddenEntries, type HiddenStorage } from "./hidden-messages.ts";

/**
 * Where cursors are kept: per chat, the seq of the last event delivered to the app.
 * Synchronous, so that a cursor is stored in the same turn as its events are
 * delivered. `MemoryCursorStorage` is the default; `WebStorageCursorStorage` keeps
 * them in `localStorage` (or anything with its methods) across restarts.
 *
 * The hidden-message methods are optional, so a storage written for an older SDK still
 * works: without them the messages the account hid ("delete for me") are kept in
 * memory only, and after a restart the stream asks for all of them again.
 */
export interface CursorStorage extends HiddenStorage {
  /** Every stored cursor. Read once, when the store is made. */
  load(): Iterable<[chatId: string, seq: number]>;
  save(chatId: string, seq: number): void;
  delete(chatId: string): void;
  /** The latest `hiddenNo` the device has every entry up to. Read once. */
  loadHiddenNo?(): number | undefined;
  saveHiddenNo?(hiddenNo: number): void;
  /** Every chat's hidden messages. Read once. */
  loadHidden?(): Iterable<[chatId: string, entries: HiddenEntries]>;
  /** Replaces one chat's hidden messages; an empty list deletes them. */
  saveHidden?(chatId: string, entries: HiddenEntries): void;
}

/** Cursors in memory: gone when the app stops. */
export class MemoryCursorStorage implements CursorStorage {
  readonly #cursors = new Map<string, number>();
  readonly #hidden = new Map<string, HiddenEntries>();
  #hiddenNo: number | undefined;
  load(): Iterable<[string, number]> {
    return [...this.#cursors];
  }
  save(chatId: string, seq: number): void {
    this.#cursors.set(chatId, seq);
  }
  delete(chatId: string): void {
    this.#cursors.delete(chatId);
  }
  loadHiddenNo(): number | undefined {
    return this.#hiddenNo;
  }
  saveHiddenNo(hiddenNo: number): void {
    this.#hiddenNo = hiddenNo;
  }
  loadHidden(): Iterable<[string, HiddenEntries]> {
    return [...this.#hidden];
  }
  saveHidden(chatId: string, entries: HiddenEntries): void {
    if (entries.length === 0) this.#hidden.delete(chatId);
    else this.#hidden.set(chatId, entries.map(([seq, hiddenNo]) => [seq, hiddenNo]));
  }
}

/** The part of the Web Storage API (`localStorage`, `sessionStorage`) the adapters use. */
export type WebStorageLike = {
  readonly length: number;
  key(index: number): string | null;
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
};

/**
 * Cursors in a Web Storage (`localStorage`): one item per chat, `<prefix><chatId>`.
 * Each account keeps its own: given the signed-in account (`api.session.user`), the
 * prefix is `edgechat.cursor.<userId>.`, so accounts signed in one after another in one
 * browser never read or move each other's cursors. A string sets the prefix itself.
 *
 * Hidden messages go under a prefix of their own (`edgechat.hidden.<userId>.`, or
 * `<prefix>~hidden.` for a string prefix): `<hiddenPrefix>~cursor` holds the hidden
 * cursor and `<hiddenPrefix><chatId>` a chat's `[seq, hiddenNo]` pairs as JSON (at most
 * `Limits.maxHiddenMessages` in all, about 2 MB when full).
 */
export class WebStorageCursorStorage implements CursorStorage {
  readonly #storage: WebStorageLike;
  readonly #prefix: string;
  readonly #hiddenPrefix: string;
  constructor(storage: WebStorageLike, account: { userId: string } | string) {
    this.#storage = storage;
    this.#prefix = typeof account === "string" ? account : `edgechat.cursor.${account.userId}.`;
    this.#hiddenPrefix = typeof account === "string" ? `${account}~hidden.` : `edgechat.hidden.${account.userId}.`;
  }
  load(): Iterable<[string, number]> {
    const cursors: [string, number][] = [];
    for (let index = 0; index < this.#storage.length; index++) {
      const key = this.#storage.key(index);
      // Chat ids never start with "~": those keys are the hidden messages' (string prefix).
      if (key === null || !key.startsWith(this.#prefix) || key.startsWith("~", this.#prefix.length)) continue;
      const seq = Number(this.#storage.getItem(key));
      if (Number.isSafeInteger(seq) && seq >= 0) cursors.push([key.slice(this.#prefix.length), seq]);
    }
    return cursors;
  }
  save(chatId: string, seq: number): void {
    this.#storage.setItem(this.#prefix + chatId, String(seq));
  }
  delete(chatId: string): void {
    this.#storage.removeItem(this.#prefix + chatId);
  }
  loadHiddenNo(): number | undefined {
    const stored = this.#storage.getItem(`${this.#hiddenPrefix}~cursor`);
    const hiddenNo = stored === null ? NaN : Number(stored);
    return Number.isSafeInteger(hiddenNo) && hiddenNo >= 0 ? hiddenNo : undefined;
  }
  saveHiddenNo(hiddenNo: number): void {
    this.#storage.setItem(`${this.#hiddenPrefix}~cursor`, String(hiddenNo));
  }
  loadHidden(): Iterable<[string, HiddenEntries]> {
    const chats: [string, HiddenEntries][] = [];
    for (let index = 0; index < this.#storage.length; index++) {
      const key = this.#storage.key(index);
      if (key === null || !key.startsWith(this.#hiddenPrefix) || key.startsWith("~", this.#hiddenPrefix.length)) continue;
      try {
        const entries: unknown = JSON.parse(this.#storage.getItem(key) ?? "[]");
        if (Array.isArray(entries)) chats.push([key.slice(this.#hiddenPrefix.length), entries.filter(isHiddenEntry)]);
      } catch {
        // An unreadable item is skipped: the stream brings its entries again (hiddenSince).
      }
    }
    return chats;
  }
  saveHidden(chatId: string, entries: HiddenEntries): void {
    if (entries.length === 0) this.#storage.removeItem(this.#hiddenPrefix + chatId);
    else this.#storage.setItem(this.#hiddenPrefix + chatId, JSON.stringify(entries));
  }
}

function isHiddenEntry(value: unknown): value is [number, number] {
  return Array.isArray(value) && value.length === 2 && Number.isSafeInteger(value[0]) && Number.isSafeInteger(value[1]);
}

export type AcceptOptions = {
  /**
   * The signed-in user. A user sees nothing between two of their membership periods,
   * so the event after a period's end may be the `member.added` naming them that starts
   * the next one: with `userId`, that jump is accepted, not taken for a gap.
   */
  userId?: string;
  /**
   * Accept any jump forward (for pages the server vouches for, such as REST history,
   * which leaves out exactly what the user may not see).
   */
  jumps?: boolean;
};

/**
 * The one record of what the app has been given: per chat, the seq of the last event
 * delivered. Every connection of an account (the device stream, chat sockets, REST
 * fetches) passes what it receives through `accept`, which returns only what was not
 * delivered before and moves the cursor, so an event that comes by two ways reaches
 * the app once. Connections resume from these cursors.
 */
export class CursorStore {
  readonly #storage: CursorStorage;
  readonly #cursors = new Map<string, number>();
  readonly #hidden: HiddenMessages;

  constructor(storage: CursorStorage = new MemoryCursorStorage()) {
    this.#storage = storage;
    for (const [chatId, seq] of storage.load()) this.#cursors.set(chatId, seq);
    this.#hidden = new HiddenMessages(storage);
  }

  /** The seq of the last event of `chatId` delivered to the app (undefined: none yet). */
  get(chatId: string): number | undefined {
    return this.#cursors.get(chatId);
  }

  /** Every chat's cursor. */
  all(): Record<string, number> {
    return Object.fromEntries(this.#cursors);
  }

  get size(): number {
    return this.#cursors.size;
  }

  /**
   * Sets where a chat stands without delivering anything: the app already has every
   * event up to `seq` (from its own storage, or it starts there on purpose).
   */
  set(chatId: string, seq: number): void {
    if (this.#cursors.get(chatId) === seq) return;
    this.#cursors.set(chatId, seq);
    this.#storage.save(chatId, seq);
  }

  /** Forgets a chat (for example one the server says the account never had), its hidden messages too. */
  forget(chatId: string): void {
    this.#hidden.forget(chatId);
    if (!this.#cursors.delete(chatId)) return;
    this.#storage.delete(chatId);
  }

  // ---- Messages the account hid for itself ("delete for me") ----

  /**
   * The latest `hiddenNo` up to which the device has every hidden message (undefined:
   * none recorded, as on a new device or a storage without hidden-message support).
   */
  get hiddenNo(): number | undefined {
    return this.#hidden.cursor;
  }

  /**
   * Records hidden messages (from `hidden` frames, a delete-for-me answer, or
   * `api.hiddenMessages` pages); returns those not recorded before. `after`: the
   * entries are every entry after that hiddenNo up to their last (a resume's page, a
   * REST page read from `after`), so when it is not past `hiddenNo` gaps in their
   * numbers are not missing entries; `jumps`: the same, read from `hiddenNo`. Without
   * either, `hiddenNo` moves only through consecutive numbers.
   */
  hide(entries: readonly HiddenMessage[], options: { jumps?: boolean; after?: number } = {}): HiddenMessage[] {
    return this.#hidden.apply(entries, options.jumps ? 0 : options.after);
  }

  /** Whether the account hid the message at `seq` of `chatId`. */
  isHidden(chatId: string, seq: number): boolean {
    return this.#hidden.has(chatId, seq);
  }

  /** The seqs the account hid in `chatId`, ascending. */
  hiddenIn(chatId: string): number[] {
    return this.#hidden.of(chatId);
  }

  /**
   * What the user should see of a list of `chatId`'s events (a history page, a screen's
   * messages): those the account hid are left out.
   *
   * @example
   * const page = await api.history(chatId, { before });
   * draw(cursors.visible(chatId, page.events));
   */
  visible<T extends { seq: number }>(chatId: string, events: readonly T[]): T[] {
    return events.filter((event) => !this.#hidden.has(chatId, event.seq));
  }

  /**
   * Takes events of one chat in ascending seq and returns those not delivered before,
   * moving the cursor to the last one. It stops at a gap (an event past the cursor
   * that does not follow it): the events from there on are not taken, and the cursor
   * stays before them, so the caller can tell (`get(chatId)` is below the last seq
   * it passed) and fetch what is missing. A chat without a cursor takes its first
   * event as the start.
   */
  accept(chatId: string, events: readonly EventEnvelope[], options: AcceptOptions = {}): EventEnvelope[] {
    const start = this.#cursors.get(chatId);
    let cursor = start;
    const fresh: EventEnvelope[] = [];
    for (const event of events) {
      if (cursor !== undefined && event.seq <= cursor) continue; // delivered already
      if (cursor !== undefined && event.seq !== cursor + 1 && !options.jumps && !startsPeriodOf(event, options.userId)) break;
      cursor = event.seq;
      fresh.push(event);
    }
    if (cursor !== undefined && cursor !== start) this.set(chatId, cursor);
    return fresh;
  }
}

/** Whether `event` is the `member.added` that makes `userId` a member again. */
function startsPeriodOf(event: EventEnvelope, userId: string | undefined): boolean {
  if (userId === undefined || event.type !== "member.added") return false;
  const known = ChatEvent.safeParse(event);
  return known.success && known.data.type === "member.added" && known.data.members.some((member) => member.userId === userId);
}
