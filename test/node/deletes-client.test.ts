import { afterEach, describe, expect, it } from "vitest";
import {
  ApiClient,
  ChatConnection,
  CursorStore,
  DeviceStream,
  MemoryCursorStorage,
  Outbox,
  SendError,
  StreamRequestError,
  WebStorageCursorStorage,
  WebStorageOutboxStorage,
  type ChatEvent,
  type CursorStorage,
  type DeleteResult,
  type HiddenMessage,
  type MessageDeletion,
  type SendMessageRequest,
  type SendResult,
  type WebStorageLike,
} from "../../src/client/index.ts";
import { FakeServerSocket } from "./support/fake-socket.ts";

/**
 * Deletes, hidden messages and attachments as an app sees them through the SDK: the
 * device stream and a chat socket against fake server sockets, REST through a fake fetch.
 */

const ME = "u_MMMMMMMMMMMMMMMMMMMMMM";
const PEER = "u_PPPPPPPPPPPPPPPPPPPPPP";
const DEVICE = "dv_DDDDDDDDDDDDDDDDDDDDDD";
const CHAT = "g_CCCCCCCCCCCCCCCCCCCCCC";
const OTHER = "g_OOOOOOOOOOOOOOOOOOOOOO";
const MEDIA = "m_MMMMMMMMMMMMMMMMMMMMMM";

const message = (seq: number, extra: Partial<ChatEvent & { type: "message" }> = {}): ChatEvent => ({
  type: "message",
  seq,
  createdAt: seq,
  messageId: `id-${seq}`,
  senderId: PEER,
  senderDeviceId: DEVICE,
  clientId: `c-${seq}`,
  body: `message ${seq}`,
  ...extra,
});
const deletedEvent = (seq: number, targetSeq: number): ChatEvent => ({ type: "message.deleted", seq, createdAt: seq, actorId: PEER, targetSeq, senderId: PEER });
const hidden = (hiddenNo: number, chatId: string, seq: number): HiddenMessage => ({ hiddenNo, chatId, seq, hiddenAt: 1000 + hiddenNo });

/** A Web Storage in memory, as `localStorage` behaves. */
function webStorage(): WebStorageLike & { items: Map<string, string> } {
  const items = new Map<string, string>();
  return {
    items,
    get length() {
      return items.size;
    },
    key: (index) => [...items.keys()][index] ?? null,
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => void items.set(key, value),
    removeItem: (key) => void items.delete(key),
  };
}

class StreamSocket extends FakeServerSocket {
  protected firstFrame(): object {
    return { type: "stream.ready", userId: ME, deviceId: DEVICE };
  }
}

class ChatSocket extends FakeServerSocket {
  protected firstFrame(): object {
    return { type: "ready", chatId: CHAT, userId: ME, deviceId: DEVICE, role: "member", headSeq: 3, catchingUp: false, deliveredUpTo: 0, seenUpTo: 0 };
  }
}

/** The REST side the connections fall back on: deletes and sends answered by the test. */
class FakeApi {
  readonly baseUrl = "https://chat.example";
  readonly deletes: { chatId: string; seq: number; scope: string; resolve: (result: DeleteResult) => void }[] = [];
  readonly sends: { chatId: string; request: SendMessageRequest }[] = [];
  accessToken = async () => "token";
  refresh = async () => ({});
  reportDelivered = async () => ({});
  socketUrl = (chatId: string) => `wss://chat.example/chat/${chatId}`;
  deleteMessage = (chatId: string, seq: number, scope: string): Promise<DeleteResult> =>
    new Promise((resolve) => this.deletes.push({ chatId, seq, scope, resolve }));
  sendMessage = (chatId: string, request: SendMessageRequest): Promise<SendResult> => {
    this.sends.push({ chatId, request });
    return new Promise(() => {});
  };
}

const closers: { close(): void }[] = [];
afterEach(() => {
  for (const connection of closers.splice(0)) connection.close();
  StreamSocket.instances = [];
  ChatSocket.instances = [];
});

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  if (!condition()) throw new Error(`never happened: ${what}`);
}

/** A device stream over a fake socket, resumed, until `synced` unless `live` is false. */
async function openStream(options: { cursors?: CursorStore; outbox?: Outbox; live?: boolean } = {}) {
  const api = new FakeApi();
  const cursors = options.cursors ?? new CursorStore();
  const stream = new DeviceStream({ api: api as unknown as ApiClient, cursors, WebSocket: StreamSocket, ...(options.outbox ? { outbox: options.outbox } : {}) });
  closers.push(stream);
  const seen = { events: [] as ChatEvent[], deleted: [] as MessageDeletion[], hidden: [] as HiddenMessage[][] };
  stream.on("event", (_chatId, event) => seen.events.push(event));
  stream.on("deleted", (deletion) => seen.deleted.push(deletion));
  stream.on("hidden", (entries) => seen.hidden.push(entries));
  const sockets = StreamSocket.instances.length;
  stream.connect();
  await until(() => StreamSocket.instances.length > sockets && StreamSocket.latest().framesOf("resume").length > 0, "the resume");
  const socket = StreamSocket.latest<StreamSocket>();
  socket.reply(socket.lastFrame("resume").id, { behind: 0, announced: 0, unknownChats: [] });
  if (options.live !== false) socket.receive({ type: "synced" });
  return { api, cursors, stream, socket, seen };
}

describe("deleting on the device stream", () => {
  it("sends a delete frame and answers the server's result; a refusal rejects with its code", async () => {
    const { stream, socket } = await openStream();
    const deleting = stream.deleteMessage(CHAT, 5, "everyone");
    const frame = socket.lastFrame("delete");
    expect(frame).toEqual({ type: "delete", id: frame.id, chatId: CHAT, seq: 5, for: "everyone" });
    socket.reply(frame.id, { for: "everyone", chatId: CHAT, seq: 5, deletedSeq: 9, duplicate: false });
    expect(await deleting).toEqual({ for: "everyone", chatId: CHAT, seq: 5, deletedSeq: 9, duplicate: false });

    const late = stream.deleteMessage(CHAT, 2, "everyone");
    socket.refuse(socket.lastFrame("delete").id, { code: "delete_window_passed", message: "older than 48 hours", retryable: false });
    const refused = await late.catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(StreamRequestError);
    expect((refused as StreamRequestError).code).toBe("delete_window_passed");
  });

  it("deletes over REST when the stream is not open", async () => {
    const { stream, socket, api } = await openStream();
    socket.drop(1006);
    const deleting = stream.deleteMessage(CHAT, 5, "everyone");
    await until(() => api.deletes.length === 1, "the REST delete");
    expect(api.deletes[0]).toMatchObject({ chatId: CHAT, seq: 5, scope: "everyone" });
    api.deletes[0]!.resolve({ for: "everyone", chatId: CHAT, seq: 5, deletedSeq: 9, duplicate: true });
    expect(await deleting).toMatchObject({ deletedSeq: 9, duplicate: true });
    expect(socket.framesOf("delete")).toEqual([]);
  });

  it("records a delete for me made over REST, even with the stream closed", async () => {
    const { stream, cursors, api, seen } = await openStream();
    stream.close();
    const deleting = stream.deleteMessage(CHAT, 6, "me");
    await until(() => api.deletes.length === 1, "the REST delete");
    api.deletes[0]!.resolve({ for: "me", hiddenNo: 1, chatId: CHAT, seq: 6, hiddenAt: 1001, duplicate: false });
    await deleting;
    expect(cursors.isHidden(CHAT, 6)).toBe(true);
    expect(cursors.hiddenNo).toBe(1);
    expect(seen.hidden).toEqual([[hidden(1, CHAT, 6)]]);
  });

  it("tells the app of a message deleted for everyone: the event, then the deletion to redraw its bubble", async () => {
    const { socket, seen } = await openStream({ cursors: cursorsAt({ [CHAT]: 4 }) });
    socket.receive({ type: "events", chatId: CHAT, events: [message(5), deletedEvent(6, 5)], more: false });
    expect(seen.events.map((event) => [event.type, event.seq])).toEqual([
      ["message", 5],
      ["message.deleted", 6],
    ]);
    expect(seen.deleted).toEqual([{ chatId: CHAT, seq: 5, deletedSeq: 6, actorId: PEER, senderId: PEER, deletedAt: 6 }]);
  });

  it("delivers a message deleted before the device read it as a tombstone", async () => {
    const { socket, seen } = await openStream({ cursors: cursorsAt({ [CHAT]: 4 }) });
    const tombstone = message(5, { deletedSeq: 6 });
    delete (tombstone as { body?: string }).body;
    socket.receive({ type: "events", chatId: CHAT, events: [tombstone, deletedEvent(6, 5)], more: false });
    expect(seen.events[0]).toMatchObject({ type: "message", seq: 5, deletedSeq: 6 });
    expect(seen.events[0]).not.toHaveProperty("body");
    expect(seen.deleted.map((d) => d.seq)).toEqual([5]);
  });
});

function cursorsAt(cursors: Record<string, number>, storage: CursorStorage = new MemoryCursorStorage()): CursorStore {
  const store = new CursorStore(storage);
  for (const [chatId, seq] of Object.entries(cursors)) store.set(chatId, seq);
  return store;
}

describe("messages hidden for the account (delete for me)", () => {
  it("a delete for me on this device is recorded and announced once, even when the server's hidden frame follows", async () => {
    const { stream, socket, cursors, seen } = await openStream();
    const deleting = stream.deleteMessage(CHAT, 7, "me");
    const frame = socket.lastFrame("delete");
    expect(frame).toMatchObject({ chatId: CHAT, seq: 7, for: "me" });
    socket.reply(frame.id, { for: "me", hiddenNo: 1, chatId: CHAT, seq: 7, hiddenAt: 1001, duplicate: false });
    expect(await deleting).toMatchObject({ for: "me", hiddenNo: 1 });
    expect(cursors.isHidden(CHAT, 7)).toBe(true);
    socket.receive({ type: "hidden", entries: [hidden(1, CHAT, 7)], more: false });
    expect(seen.hidden).toEqual([[hidden(1, CHAT, 7)]]);
    expect(cursors.hiddenNo).toBe(1);
  });

  it("hidden frames from the account's other devices are kept across a reconnection and an app restart, and resumed from", async () => {
    const storage = webStorage();
    const first = await openStream({ cursors: cursorsAt({ [CHAT]: 9 }, new WebStorageCursorStorage(storage, { userId: ME })) });
    // A device that never heard of hidden messages asks for all of them.
    expect(first.socket.lastFrame("resume")).toMatchObject({ cursors: { [CHAT]: 9 }, hiddenSince: 0 });
    first.socket.receive({ type: "hidden", entries: [hidden(1, CHAT, 3), hidden(2, OTHER, 4)], more: false });
    expect(first.seen.hidden).toEqual([[hidden(1, CHAT, 3), hidden(2, OTHER, 4)]]);

    // What a screen draws of a history page: the hidden message is left out.
    const page = [message(2), message(3), message(4)];
    expect(first.cursors.visible(CHAT, page).map((event) => event.seq)).toEqual([2, 4]);
    expect(first.cursors.hiddenIn(OTHER)).toEqual([4]);

    first.socket.drop(1006);
    await until(() => StreamSocket.instances.length === 2 && StreamSocket.latest().framesOf("resume").length > 0, "the new resume");
    expect(StreamSocket.latest().lastFrame("resume")).toMatchObject({ hiddenSince: 2 });
    first.stream.close();

    // The app starts again over the same storage.
    const restored = new CursorStore(new WebStorageCursorStorage(storage, { userId: ME }));
    expect(restored.all()).toEqual({ [CHAT]: 9 });
    expect(restored.isHidden(CHAT, 3)).toBe(true);
    expect(restored.isHidden(OTHER, 4)).toBe(true);
    expect(restored.isHidden(CHAT, 4)).toBe(false);
    const again = await openStream({ cursors: restored });
    expect(again.socket.lastFrame("resume")).toMatchObject({ hiddenSince: 2 });
  });

  it("follows the resume's pages whatever their numbers, but keeps its cursor before a gap in live frames", async () => {
    const { socket, cursors, stream, seen } = await openStream({ cursors: cursorsAt({ [CHAT]: 9 }), live: false });
    // The resume's answer: everything after hiddenSince 0, in pages.
    socket.receive({ type: "hidden", entries: [hidden(1, CHAT, 1), hidden(3, CHAT, 2)], more: true, after: 0 });
    socket.receive({ type: "hidden", entries: [hidden(4, CHAT, 5)], more: false, after: 3 });
    socket.receive({ type: "synced" });
    expect(cursors.hiddenNo).toBe(4);
    // Live: number 6 without 5 is hidden at once, but 5 is still to come.
    socket.receive({ type: "hidden", entries: [hidden(6, CHAT, 8)], more: false });
    expect(cursors.isHidden(CHAT, 8)).toBe(true);
    expect(cursors.hiddenNo).toBe(4);
    expect(seen.hidden.flat().map((entry) => entry.hiddenNo)).toEqual([1, 3, 4, 6]);
    stream.reconnect();
    await until(() => StreamSocket.instances.length === 2 && StreamSocket.latest().framesOf("resume").length > 0, "the new resume");
    expect(StreamSocket.latest().lastFrame("resume")).toMatchObject({ hiddenSince: 4 });
  });

  it("a live hidden frame during a resume does not move the cursor past entries the device never got", async () => {
    const cursors = cursorsAt({ [CHAT]: 9 });
    cursors.hide([1, 2, 3, 4, 5].map((hiddenNo) => hidden(hiddenNo, CHAT, hiddenNo)));
    expect(cursors.hiddenNo).toBe(5);
    const stream = new DeviceStream({ api: new FakeApi() as unknown as ApiClient, cursors, WebSocket: StreamSocket });
    closers.push(stream);
    stream.connect();
    await until(() => StreamSocket.instances.length === 1 && StreamSocket.latest().framesOf("resume").length > 0, "the resume");
    const socket = StreamSocket.latest<StreamSocket>();
    expect(socket.lastFrame("resume")).toMatchObject({ hiddenSince: 5 });
    // Entries 6-8 were made while the device was away; 9 is made now and pushed live,
    // before the resume is answered, and the socket drops before the resume's pages.
    socket.receive({ type: "hidden", entries: [hidden(9, CHAT, 9)], more: false });
    expect(cursors.isHidden(CHAT, 9)).toBe(true);
    expect(cursors.hiddenNo).toBe(5);
    socket.drop(1006);

    await until(() => StreamSocket.instances.length === 2 && StreamSocket.latest().framesOf("resume").length > 0, "the new resume");
    const next = StreamSocket.latest<StreamSocket>();
    expect(next.lastFrame("resume")).toMatchObject({ hiddenSince: 5 });
    next.reply(next.lastFrame("resume").id, { behind: 0, announced: 0, unknownChats: [] });
    next.receive({ type: "hidden", entries: [6, 7, 8, 9].map((hiddenNo) => hidden(hiddenNo, CHAT, hiddenNo)), more: false, after: 5 });
    next.receive({ type: "synced" });
    for (const seq of [6, 7, 8, 9]) expect(cursors.isHidden(CHAT, seq)).toBe(true);
    expect(cursors.hiddenNo).toBe(9);
  });

  it("a page of the resume moves the cursor only from where it continues", async () => {
    const { socket, cursors } = await openStream({ cursors: cursorsAt({ [CHAT]: 9 }), live: false });
    // A page continuing from 4 while the device is at 0: entries 1-4 are not in it.
    socket.receive({ type: "hidden", entries: [hidden(5, CHAT, 5), hidden(7, CHAT, 7)], more: false, after: 4 });
    expect(cursors.isHidden(CHAT, 7)).toBe(true);
    expect(cursors.hiddenNo).toBe(0);
  });

  it("asks for every hidden message after a restart when the app's storage keeps none (a storage written before hidden messages)", async () => {
    const cursorsOnly = new Map<string, number>([[CHAT, 5]]);
    const oldStorage: CursorStorage = {
      load: () => cursorsOnly,
      save: (chatId, seq) => void cursorsOnly.set(chatId, seq),
      delete: (chatId) => void cursorsOnly.delete(chatId),
    };
    const { socket, cursors } = await openStream({ cursors: new CursorStore(oldStorage) });
    expect(socket.lastFrame("resume")).toMatchObject({ cursors: { [CHAT]: 5 }, hiddenSince: 0 });
    socket.receive({ type: "hidden", entries: [hidden(1, CHAT, 2)], more: false });
    expect(cursors.isHidden(CHAT, 2)).toBe(true); // kept in memory
  });

  it("under a storage prefix of the app's choosing, hidden messages are never read back as cursors", () => {
    const storage = webStorage();
    const store = new CursorStore(new WebStorageCursorStorage(storage, "app.cursors."));
    store.set(CHAT, 4);
    store.hide([hidden(1, CHAT, 2), hidden(2, CHAT, 3)]);
    const restored = new CursorStore(new WebStorageCursorStorage(storage, "app.cursors."));
    expect(restored.all()).toEqual({ [CHAT]: 4 });
    expect(restored.hiddenIn(CHAT)).toEqual([2, 3]);
    expect(restored.hiddenNo).toBe(2);
    // Forgetting a chat forgets what was hidden in it.
    restored.forget(CHAT);
    expect(new CursorStore(new WebStorageCursorStorage(storage, "app.cursors.")).hiddenIn(CHAT)).toEqual([]);
  });

  it("keeps at most Limits.maxHiddenMessages, dropping those hidden first", () => {
    const store = new CursorStore();
    const entries = Array.from({ length: 50_002 }, (_, i) => hidden(i + 1, CHAT, i + 1));
    store.hide(entries.slice(0, 50_000));
    store.hide(entries.slice(50_000));
    expect(store.isHidden(CHAT, 1)).toBe(false);
    expect(store.isHidden(CHAT, 2)).toBe(false);
    expect(store.isHidden(CHAT, 3)).toBe(true);
    expect(store.isHidden(CHAT, 50_002)).toBe(true);
    expect(store.hiddenIn(CHAT)).toHaveLength(50_000);
    expect(store.hiddenNo).toBe(50_002);
  });
});

describe("messages with attachments", () => {
  const attachment = { mediaId: MEDIA, name: "plan.pdf", width: 800, height: 600 };

  it("keeps the attachments in the stored outbox entry and sends the same request again after a lost connection and a restart", async () => {
    const storage = webStorage();
    const account = { userId: ME, deviceId: DEVICE };
    const outbox = new Outbox({ storage: new WebStorageOutboxStorage(storage, account) });
    const { stream, socket } = await openStream({ outbox });
    void stream.sendMessage(CHAT, { body: "the plan", attachments: [attachment], clientId: "c1" });
    const first = socket.lastFrame("send");
    expect(first).toEqual({ type: "send", id: first.id, chatId: CHAT, clientId: "c1", body: "the plan", attachments: [attachment] });
    expect(JSON.parse(storage.items.get(`edgechat.outbox.${ME}.${DEVICE}`)!)).toEqual([{ chatId: CHAT, clientId: "c1", body: "the plan", attachments: [attachment] }]);

    // The connection goes before the ack: the next socket gets the very same message.
    socket.drop(1006);
    await until(() => StreamSocket.instances.length === 2 && StreamSocket.latest().framesOf("resume").length > 0, "the new resume");
    const again = StreamSocket.latest();
    again.reply(again.lastFrame("resume").id, { behind: 0, announced: 0, unknownChats: [] });
    await until(() => again.framesOf("send").length === 1, "the resend");
    const { id: _first, ...firstFields } = first;
    const { id: _second, ...secondFields } = again.lastFrame("send");
    expect(secondFields).toEqual(firstFields);
    stream.close();

    // After a restart the stored message goes over REST, unchanged.
    const api = new FakeApi();
    new Outbox({ api: api as unknown as ApiClient, storage: new WebStorageOutboxStorage(storage, account) });
    await until(() => api.sends.length === 1, "the REST send");
    expect(api.sends[0]).toEqual({ chatId: CHAT, request: { clientId: "c1", body: "the plan", attachments: [attachment] } });
  });

  it("sends files without a caption, and refuses a message with neither text nor files before storing it", async () => {
    const outbox = new Outbox();
    const { stream, socket } = await openStream({ outbox });
    void stream.sendMessage(CHAT, { attachments: [{ mediaId: MEDIA }] });
    expect(socket.lastFrame("send")).toMatchObject({ chatId: CHAT, attachments: [{ mediaId: MEDIA }] });
    expect(socket.lastFrame("send")).not.toHaveProperty("body");

    const empty = await stream.sendMessage(CHAT, {}).catch((error: unknown) => error);
    expect(empty).toBeInstanceOf(SendError);
    expect((empty as SendError).error.code).toBe("validation_failed");
    const badMedia = await stream.sendMessage(CHAT, { attachments: [{ mediaId: "not-a-media-id" }] }).catch((error: unknown) => error);
    expect((badMedia as SendError).error.code).toBe("validation_failed");
    expect(outbox.pending(CHAT)).toHaveLength(1);
    expect(socket.framesOf("send")).toHaveLength(1);
  });
});

describe("the chat socket", () => {
  async function openChat(cursors = new CursorStore()) {
    const api = new FakeApi();
    const connection = new ChatConnection({ api: api as unknown as ApiClient, chatId: CHAT, WebSocket: ChatSocket, cursors });
    closers.push(connection);
    const seen = { deleted: [] as MessageDeletion[], hidden: [] as HiddenMessage[][] };
    connection.on("deleted", (deletion) => seen.deleted.push(deletion));
    connection.on("hidden", (entries) => seen.hidden.push(entries));
    connection.connect();
    await until(() => connection.status === "live", "the connection live");
    return { api, connection, cursors, seen, socket: ChatSocket.latest<ChatSocket>() };
  }

  it("deletes for everyone and for me, and tells the app of deletions", async () => {
    const { connection, socket, cursors, seen } = await openChat();
    const everyone = connection.deleteMessage(2, "everyone");
    const frame = socket.lastFrame("delete");
    expect(frame).toEqual({ type: "delete", id: frame.id, seq: 2, for: "everyone" });
    socket.reply(frame.id, { for: "everyone", chatId: CHAT, seq: 2, deletedSeq: 4, duplicate: false });
    expect(await everyone).toMatchObject({ deletedSeq: 4 });
    socket.receive({ type: "events", chatId: CHAT, events: [deletedEvent(4, 2)], more: false });
    expect(seen.deleted).toEqual([{ chatId: CHAT, seq: 2, deletedSeq: 4, actorId: PEER, senderId: PEER, deletedAt: 4 }]);

    const forMe = connection.deleteMessage(3, "me");
    socket.reply(socket.lastFrame("delete").id, { for: "me", hiddenNo: 1, chatId: CHAT, seq: 3, hiddenAt: 1001, duplicate: false });
    await forMe;
    expect(cursors.isHidden(CHAT, 3)).toBe(true);
    expect(seen.hidden).toEqual([[hidden(1, CHAT, 3)]]);

    const refused = connection.deleteMessage(1, "everyone");
    socket.refuse(socket.lastFrame("delete").id, { code: "forbidden", message: "not your message", retryable: false });
    await expect(refused).rejects.toMatchObject({ name: "StreamRequestError", code: "forbidden" });
  });

  it("sends attachments with a message", async () => {
    const { connection, socket } = await openChat();
    // Never acknowledged here: the connection's own outbox rejects it when the test closes it.
    connection.sendMessage({ body: "look", attachments: [{ mediaId: MEDIA, durationMs: 1200 }], replyToSeq: 2 }).catch(() => undefined);
    expect(socket.lastFrame("send")).toMatchObject({ body: "look", attachments: [{ mediaId: MEDIA, durationMs: 1200 }], replyToSeq: 2 });
  });
});

describe("deletes and hidden messages over REST", () => {
  it("DELETE /api/chats/:chatId/messages/:seq?for= and GET /api/me/hidden", async () => {
    const requests: string[] = [];
    const fetch = (async (input: string, init?: RequestInit) => {
      const url = new URL(input);
      requests.push(`${init?.method} ${url.pathname}${url.search} ${new Headers(init?.headers).get("authorization")}`);
      if (init?.method === "DELETE") return Response.json({ for: "me", hiddenNo: 3, chatId: CHAT, seq: 5, hiddenAt: 1003, duplicate: false });
      return Response.json({ entries: [hidden(3, CHAT, 5)], hasMore: false, headHiddenNo: 3 });
    }) as typeof globalThis.fetch;
    const payload = Buffer.from(JSON.stringify({ exp: Math.floor(Date.now() / 1000) + 3600 })).toString("base64url");
    const api = new ApiClient({ baseUrl: "https://chat.example", fetch, session: { credentials: `h.${payload}.s` } as never });
    expect(await api.deleteMessage(CHAT, 5, "me")).toMatchObject({ for: "me", hiddenNo: 3 });
    const page = await api.hiddenMessages(2, 100);
    expect(page).toEqual({ entries: [hidden(3, CHAT, 5)], hasMore: false, headHiddenNo: 3 });
    expect(requests).toEqual([
      `DELETE /api/chats/${CHAT}/messages/5?for=me Bearer h.${payload}.s`,
      `GET /api/me/hidden?after=2&limit=100 Bearer h.${payload}.s`,
    ]);
    // A page read from the store's cursor goes into the store as the stream's would.
    const store = new CursorStore();
    store.hide(page.entries, { jumps: true });
    expect(store.isHidden(CHAT, 5)).toBe(true);
    expect(store.hiddenNo).toBe(3);
  });
});
