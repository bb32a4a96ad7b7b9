import { describe, expect, it } from "vitest";
import { CursorStore, MemoryCursorStorage, WebStorageCursorStorage, type WebStorageLike } from "../../src/client/index.ts";
import type { EventEnvelope } from "../../src/protocol/index.ts";

const ALICE = "u_AAAAAAAAAAAAAAAAAAAAAA";
const BOB = "u_BBBBBBBBBBBBBBBBBBBBBB";
const CHAT = "g_CCCCCCCCCCCCCCCCCCCCCC";
const OTHER = "g_DDDDDDDDDDDDDDDDDDDDDD";

const message = (seq: number): EventEnvelope => ({ type: "message", seq, createdAt: seq });
const added = (seq: number, userId: string): EventEnvelope => ({ type: "member.added", seq, createdAt: seq, actorId: ALICE, members: [{ userId, role: "member" }] });
const seqs = (events: EventEnvelope[]) => events.map((event) => event.seq);

/** A Web Storage in memory, as `localStorage` behaves. */
class FakeStorage implements WebStorageLike {
  readonly items = new Map<string, string>();
  get length() {
    return this.items.size;
  }
  key(index: number) {
    return [...this.items.keys()][index] ?? null;
  }
  getItem(key: string) {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string) {
    this.items.set(key, value);
  }
  removeItem(key: string) {
    this.items.delete(key);
  }
}

describe("the cursor store", () => {
  it("delivers each event once, whichever way it came and however often", () => {
    const store = new CursorStore();
    store.set(CHAT, 1);
    expect(seqs(store.accept(CHAT, [message(2), message(3)]))).toEqual([2, 3]);
    // The same events again (a chat socket after the stream), overlapping a new one.
    expect(seqs(store.accept(CHAT, [message(2), message(3), message(4)]))).toEqual([4]);
    expect(store.accept(CHAT, [message(3)])).toEqual([]);
    expect(store.get(CHAT)).toBe(4);
    // Chats are separate.
    expect(seqs(store.accept(OTHER, [message(7)]))).toEqual([7]);
    expect(store.all()).toEqual({ [CHAT]: 4, [OTHER]: 7 });
  });

  it("takes a chat's first event as its start when it has no cursor", () => {
    const store = new CursorStore();
    expect(seqs(store.accept(CHAT, [message(5), message(6)]))).toEqual([5, 6]);
    expect(store.get(CHAT)).toBe(6);
  });

  it("stops at a gap and keeps the cursor before it", () => {
    const store = new CursorStore();
    store.set(CHAT, 3);
    expect(seqs(store.accept(CHAT, [message(4), message(6), message(7)]))).toEqual([4]);
    expect(store.get(CHAT)).toBe(4);
    // Once the missing event comes, the rest follows.
    expect(seqs(store.accept(CHAT, [message(5), message(6), message(7)]))).toEqual([5, 6, 7]);
  });

  it("accepts the jump to the member.added that starts the user's next period, not anyone else's", () => {
    const store = new CursorStore();
    store.set(CHAT, 4);
    expect(store.accept(CHAT, [added(9, ALICE)], { userId: BOB })).toEqual([]);
    expect(store.get(CHAT)).toBe(4);
    expect(seqs(store.accept(CHAT, [added(9, BOB), message(10)], { userId: BOB }))).toEqual([9, 10]);
  });

  it("accepts any jump when told the pages leave out only what the user may not see", () => {
    const store = new CursorStore();
    store.set(CHAT, 2);
    expect(seqs(store.accept(CHAT, [message(5), message(6)], { jumps: true }))).toEqual([5, 6]);
  });

  it("keeps cursors in its storage, so a new store over it resumes where the old one was", () => {
    const storage = new MemoryCursorStorage();
    const store = new CursorStore(storage);
    store.accept(CHAT, [message(1), message(2)]);
    store.set(OTHER, 9);
    const restarted = new CursorStore(storage);
    expect(restarted.all()).toEqual({ [CHAT]: 2, [OTHER]: 9 });
    restarted.forget(OTHER);
    expect(new CursorStore(storage).all()).toEqual({ [CHAT]: 2 });
  });

  it("keeps cursors in a Web Storage under its prefix, next to other keys", () => {
    const storage = new FakeStorage();
    storage.setItem("something.else", "x");
    const store = new CursorStore(new WebStorageCursorStorage(storage, "alice."));
    store.accept(CHAT, [message(1), message(2), message(3)]);
    expect(storage.getItem(`alice.${CHAT}`)).toBe("3");
    expect(new CursorStore(new WebStorageCursorStorage(storage, "alice.")).all()).toEqual({ [CHAT]: 3 });
    expect(new CursorStore(new WebStorageCursorStorage(storage, "bob.")).all()).toEqual({});
  });

  it("keeps each account's cursors apart in a Web Storage shared by accounts signed in one after the other", () => {
    const storage = new FakeStorage();
    const alices = new CursorStore(new WebStorageCursorStorage(storage, { userId: ALICE }));
    alices.accept(CHAT, [message(1), message(2)]);
    expect(storage.getItem(`edgechat.cursor.${ALICE}.${CHAT}`)).toBe("2");
    const bobs = new CursorStore(new WebStorageCursorStorage(storage, { userId: BOB }));
    expect(bobs.all()).toEqual({});
    bobs.set(OTHER, 7);
    expect(new CursorStore(new WebStorageCursorStorage(storage, { userId: ALICE })).all()).toEqual({ [CHAT]: 2 });
    expect(new CursorStore(new WebStorageCursorStorage(storage, { userId: BOB })).all()).toEqual({ [OTHER]: 7 });
  });
});
