import { ChatEvent, type EventEnvelope } from "../protocol/index.ts";

/**
 * Where cursors are kept: per chat, the seq of the last event delivered to the app.
 * Synchronous, so that a cursor is stored in the same turn as its events are
 * delivered. `MemoryCursorStorage` is the default; `WebStorageCursorStorage` keeps
 * them in `localStorage` (or anything with its methods) across restarts.
 */
export interface CursorStorage {
  /** Every stored cursor. Read once, when the store is made. */
  load(): Iterable<[chatId: string, seq: number]>;
  save(chatId: string, seq: number): void;
  delete(chatId: string): void;
}

/** Cursors in memory: gone when the app stops. */
export class MemoryCursorStorage implements CursorStorage {
  readonly #cursors = new Map<string, number>();
  load(): Iterable<[string, number]> {
    return [...this.#cursors];
  }
  save(chatId: string, seq: number): void {
    this.#cursors.set(chatId, seq);
  }
  delete(chatId: string): void {
    this.#cursors.delete(chatId);
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
 */
export class WebStorageCursorStorage implements CursorStorage {
  readonly #storage: WebStorageLike;
  readonly #prefix: string;
  constructor(storage: WebStorageLike, account: { userId: string } | string) {
    this.#storage = storage;
    this.#prefix = typeof account === "string" ? account : `edgechat.cursor.${account.userId}.`;
  }
  load(): Iterable<[string, number]> {
    const cursors: [string, number][] = [];
    for (let index = 0; index < this.#storage.length; index++) {
      const key = this.#storage.key(index);
      if (key === null || !key.startsWith(this.#prefix)) continue;
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

  constructor(storage: CursorStorage = new MemoryCursorStorage()) {
    this.#storage = storage;
    for (const [chatId, seq] of storage.load()) this.#cursors.set(chatId, seq);
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

  /** Forgets a chat (for example one the server says the account never had). */
  forget(chatId: string): void {
    if (!this.#cursors.delete(chatId)) return;
    this.#storage.delete(chatId);
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
