/**
 * The baseline: a bare Node `ws` server that routes the same JSON frames as the
 * Worker, without persistence, auth checks or a runtime in between. It answers
 * `ready` on connect, `reply` then a broadcast `events` frame on `send`, `pong` to
 * `ping`, and catch-up pages (`?after=`, `sync`) from an in-memory log, so the same
 * scenarios run against it unchanged. The ratio workerd/bare is the cost of the
 * platform and of our server code.
 *
 * It also serves a minimal device stream (`GET /chat`): `stream.ready`, `resume`
 * answered with the plan, a `chat` frame per chat the device did not list, pages of
 * the chats it is behind on in batches ended by `catching_up` (the client's `sync`
 * asks for the next), `synced`, then every message of the account's chats pushed live;
 * `send` on the stream is acknowledged and pushed like one on a chat socket. Chats
 * and their members are registered by the launcher when the benchmark creates them
 * (`POST /bare/chats`, setup); nothing else of the account exists (no list entries
 * beyond the announcement, no unread counts, no membership changes).
 *
 * Receipts, minimal: `delivered` and `read` (chat socket and stream) merge into the
 * member's watermarks in memory (by max, SEEN implies DELIVERED); every sender whose
 * messages are now covered further (the lowest watermark of the other members) gets
 * a `receipts` frame on its chat sockets and streams; `status` answers the aggregate
 * of one message. No times per member, nothing stored.
 *
 * Presence, minimal: an account is online while it has a stream in the foreground
 * (open, and not told `presence.state background`); no heartbeat timeout and no sweep.
 * `presence.subscribe` replaces the stream's watch list (each entry allowed when both
 * are members of the chat named, as registered by the launcher) and answers the
 * presence of each; every change of a watched account (its first foreground stream
 * opened, its last one closed or went to the background: offline with `lastSeenAt`)
 * is pushed at once to the streams watching it whose lease (60 s) lasts. In memory,
 * no rate limit, nothing stored.
 *
 * Run directly (`node bench/targets/bare-server.ts --port 0`) it serves and prints
 * `listening <port>`; imported, `startBareServer()` launches it as a child process
 * (its own process, like workerd, so the client's CPU is not shared with it).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createReadStream, createWriteStream, mkdtempSync, rmSync, statSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
import type { Duplex } from "node:stream";
import WebSocket, { WebSocketServer } from "ws";
import type { BenchUser } from "../client.ts";
import type { Target } from "./target.ts";

/** The Worker's default CATCH_UP_PAGE_SIZE: events per catch-up page (the Worker also caps a page at 256 KiB). */
const PAGE_SIZE = 200;
/** The Worker's Limits.maxFrameBytes: it refuses bigger frames before parsing them. */
const MAX_FRAME_BYTES = 6 * 64 * 1024 + 4096;

// ---------------------------------------------------------------------------
// The server program

/** The Worker's Limits.maxPageBytes: event JSON per catch-up page, and per device stream batch. */
const PAGE_BYTES = 256 * 1024;

type Session = { ws: WebSocket; userId: string; deviceId: string; cursor: number; live: boolean };
/** A device stream: `behind` holds the chats it is catching up on (their live events wait for the pages). */
type StreamSession = {
  ws: WebSocket;
  userId: string;
  deviceId: string;
  phase: "new" | "catching_up" | "live";
  behind: Map<string, number>;
  foreground: boolean;
  /** The accounts this stream watches (presence.subscribe), until watchUntil. */
  watching: Set<string>;
  watchUntil: number;
};
type MessageEvent = {
  type: "message";
  seq: number;
  createdAt: number;
  messageId: string;
  senderId: string;
  senderDeviceId: string;
  clientId: string;
  body: string;
};
type Room = {
  chatId: string;
  kind: "group" | "direct";
  name: string;
  headSeq: number;
  createdAt: number;
  /** Registered by the launcher when the benchmark creates the chat; a chat socket alone needs none. */
  members: Set<string>;
  /** The JSON text of each message event: log[i] holds seq i + 2 (seq 1 is the creation, not kept). */
  log: string[];
  sessions: Set<Session>;
  /** Resumed device streams of the members. */
  streams: Set<StreamSession>;
  /** The sender of each message: senders[i] for seq i + 2, like log. */
  senders: string[];
  /** Per member: delivered and seen up to (1, the creation, until they report). */
  marks: Map<string, { delivered: number; seen: number }>;
  /** Per user who sent here: the watermarks of their messages as last told (receipts frames only go up). */
  told: Map<string, { deliveredUpTo: number; seenUpTo: number }>;
};
type Account = {
  chats: Set<string>;
  streams: Set<StreamSession>;
  /** Presence: what watchers were last told, when last seen, and the streams watching this account. */
  online: boolean;
  lastSeenAt: number | null;
  watchers: Set<StreamSession>;
};

/** The Worker's Limits.presenceLeaseMs and Limits.maxPresenceWatches. */
const PRESENCE_LEASE_MS = 60_000;
const MAX_PRESENCE_WATCHES = 64;

function serve(port: number): void {
  const rooms = new Map<string, Room>();
  const accounts = new Map<string, Account>();
  const roomOf = (chatId: string): Room => {
    let room = rooms.get(chatId);
    if (!room) {
      // seq 1 is the chat's creation, as in the Worker.
      room = { chatId, kind: chatId.startsWith("d_") ? "direct" : "group", name: "bare", headSeq: 1, createdAt: Date.now(), members: new Set(), log: [], sessions: new Set(), streams: new Set(), senders: [], marks: new Map(), told: new Map() };
      rooms.set(chatId, room);
    }
    return room;
  };
  const accountOf = (userId: string): Account => {
    let account = accounts.get(userId);
    if (!account) {
      account = { chats: new Set(), streams: new Set(), online: false, lastSeenAt: null, watchers: new Set() };
      accounts.set(userId, account);
    }
    return account;
  };

  const http = createServer((request, response) => {
    if (request.url === "/healthz") {
      response.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}');
    } else if (request.url === "/bare/chats" && request.method === "POST") {
      // The launcher registers each chat the benchmark creates, with its members (setup, not measured).
      let text = "";
      request.on("data", (chunk: Buffer) => (text += chunk.toString()));
      request.on("end", () => {
        const { chatId, name, memberIds } = JSON.parse(text) as { chatId: string; name: string; memberIds: string[] };
        const room = roomOf(chatId);
        room.name = name;
        for (const userId of memberIds) {
          room.members.add(userId);
          accountOf(userId).chats.add(chatId);
        }
        response.writeHead(201).end();
      });
    } else if (request.url?.startsWith("/api/chats/")) {
      serveMedia(request, response);
    } else {
      response.writeHead(404).end();
    }
  });
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_FRAME_BYTES });

  http.on("upgrade", (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(request.url ?? "/", "http://bare");
    // Tokens are "<userId>.<deviceId>": the bare server trusts them (no auth cost).
    const token = /^Bearer\s+(\S+)$/i.exec(request.headers.authorization ?? "")?.[1];
    const [userId, deviceId] = token?.split(".") ?? [];
    if (!userId || !deviceId) {
      socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
      return;
    }
    if (url.pathname === "/chat") {
      wss.handleUpgrade(request, socket, head, (ws) => openStream(ws, userId, deviceId));
      return;
    }
    const chatId = /^\/chat\/([A-Za-z0-9_-]+)$/.exec(url.pathname)?.[1];
    if (!chatId) {
      socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
      return;
    }
    const room = roomOf(chatId);
    const afterParam = url.searchParams.get("after");
    const after = afterParam === null ? room.headSeq : Number(afterParam);
    if (!Number.isSafeInteger(after) || after < 0 || after > room.headSeq) {
      socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
      return;
    }
    wss.handleUpgrade(request, socket, head, (ws) => {
      const session: Session = { ws, userId, deviceId, cursor: after, live: after >= room.headSeq };
      room.sessions.add(session);
      ws.send(JSON.stringify({ type: "ready", chatId, userId, deviceId, role: "member", headSeq: room.headSeq, catchingUp: !session.live, ...receiptsOf(room, userId) }));
      if (!session.live) sendNextPage(room, session);
      ws.on("message", (data: Buffer, isBinary: boolean) => onFrame(room, session, data, isBinary));
      ws.on("close", () => room.sessions.delete(session));
      ws.on("error", () => room.sessions.delete(session));
    });
  });

  /**
   * Media, minimal: `POST /api/chats/:chatId/media` streams the body to a file on disk
   * (201 with its id), `GET /api/chats/:chatId/media/:mediaId` streams it back, with a
   * single `Range` (206). No auth, no membership, no type detection: the floor a media
   * path on one machine costs.
   */
  const mediaDirectory = mkdtempSync(join(tmpdir(), "bare-media-"));
  process.on("exit", () => rmSync(mediaDirectory, { recursive: true, force: true }));
  function serveMedia(request: IncomingMessage, response: ServerResponse): void {
    const url = new URL(request.url ?? "/", "http://bare");
    const upload = /^\/api\/chats\/[A-Za-z0-9_-]+\/media$/.test(url.pathname);
    const download = /^\/api\/chats\/[A-Za-z0-9_-]+\/media\/([A-Za-z0-9_-]+)$/.exec(url.pathname);
    if (upload && request.method === "POST") {
      const mediaId = `m_${randomUUID().replaceAll("-", "").slice(0, 22)}`;
      const file = join(mediaDirectory, mediaId);
      pipeline(request, createWriteStream(file)).then(
        () => {
          const size = statSync(file).size;
          response.writeHead(201, { "content-type": "application/json" }).end(JSON.stringify({ mediaId, kind: "image", contentType: "image/png", size, expiresAt: Date.now() + 86_400_000 }));
        },
        () => response.writeHead(500).end(),
      );
      return;
    }
    if (download && request.method === "GET") {
      const file = join(mediaDirectory, download[1]!);
      let size: number;
      try {
        size = statSync(file).size;
      } catch {
        response.writeHead(404).end();
        return;
      }
      const range = /^bytes=(\d+)-(\d*)$/.exec(request.headers.range ?? "");
      const start = range ? Number(range[1]) : 0;
      const end = range && range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
      const headers = { "content-type": "image/png", "content-length": String(end - start + 1), "accept-ranges": "bytes" };
      if (range) response.writeHead(206, { ...headers, "content-range": `bytes ${start}-${end}/${size}` });
      else response.writeHead(200, headers);
      createReadStream(file, { start, end }).pipe(response);
      return;
    }
    response.writeHead(404).end();
  }

  /** A message stored (in memory), acknowledged to its sender, then pushed to every chat socket and member stream. */
  function store(room: Room, ws: WebSocket, userId: string, deviceId: string, id: string, clientId: string, body: string): void {
    const event: MessageEvent = {
      type: "message",
      seq: ++room.headSeq,
      createdAt: Date.now(),
      messageId: randomUUID(),
      senderId: userId,
      senderDeviceId: deviceId,
      clientId,
      body,
    };
    const json = JSON.stringify(event);
    room.log.push(json);
    room.senders.push(userId);
    if (!room.told.has(userId)) room.told.set(userId, receiptsOf(room, userId));
    // Ack first, then broadcast: the same order as the Worker.
    ws.send(JSON.stringify({ type: "reply", id, ok: true, result: { seq: event.seq, messageId: event.messageId, createdAt: event.createdAt, duplicate: false } }));
    const pushed = eventsFrameText(room.chatId, [json], false);
    for (const other of room.sessions) if (other.live) other.ws.send(pushed);
    // A stream catching up on this chat gets the event in its pages instead.
    for (const stream of room.streams) if (stream.phase !== "new" && !stream.behind.has(room.chatId)) stream.ws.send(pushed);
  }

  function onFrame(room: Room, session: Session, data: Buffer, isBinary: boolean): void {
    const frame = parseFrame(session.ws, data, isBinary);
    if (!frame) return;
    if (frame.type === "send" && typeof frame.clientId === "string" && typeof frame.body === "string") {
      return store(room, session.ws, session.userId, session.deviceId, frame.id, frame.clientId, frame.body);
    }
    if (frame.type === "sync") {
      const cursor = sendNextPage(room, session);
      session.ws.send(JSON.stringify({ type: "reply", id: frame.id, ok: true, result: { cursor } }));
      return;
    }
    if ((frame.type === "delivered" || frame.type === "read" || frame.type === "status") && typeof frame.seq === "number") {
      return receiptFrame(room, session.ws, session.userId, frame.type, frame.id, frame.seq);
    }
    refuse(session.ws, frame.id, "unknown_frame", "unknown frame");
  }

  // ---- Receipts (delivered, read, status), minimal: watermarks in memory ----

  /** `userId`'s own messages: covered up to the lowest watermark of the other members (at most the head). */
  function receiptsOf(room: Room, userId: string): { deliveredUpTo: number; seenUpTo: number } {
    let delivered = room.headSeq;
    let seen = room.headSeq;
    for (const member of room.members) {
      if (member === userId) continue;
      const mark = room.marks.get(member);
      delivered = Math.min(delivered, mark?.delivered ?? 1);
      seen = Math.min(seen, mark?.seen ?? 1);
    }
    return { deliveredUpTo: delivered, seenUpTo: seen };
  }

  /** A `delivered`, `read` or `status` frame from a chat socket or a stream; `read` on a stream answers a chat summary, as the Worker's does. */
  function receiptFrame(room: Room, ws: WebSocket, userId: string, type: "delivered" | "read" | "status", id: string, seq: number, onStream = false): void {
    if (!room.members.has(userId)) return refuse(ws, id, "not_a_member", "not a member of this chat");
    if (!Number.isSafeInteger(seq) || seq < 1 || seq > room.headSeq) return refuse(ws, id, "invalid_cursor", `seq must be between 1 and ${room.headSeq}`);
    if (type === "status") return reply(ws, id, statusOf(room, userId, seq) ?? undefined, "no message of yours at this seq");
    let mark = room.marks.get(userId);
    if (!mark) room.marks.set(userId, (mark = { delivered: 1, seen: 1 }));
    if (seq > mark.delivered) mark.delivered = seq;
    if (type === "read" && seq > mark.seen) mark.seen = seq;
    const now = Date.now();
    // Every sender here whose messages are covered further is told.
    for (const [sender, told] of room.told) {
      const is = receiptsOf(room, sender);
      if (is.deliveredUpTo <= told.deliveredUpTo && is.seenUpTo <= told.seenUpTo) continue;
      told.deliveredUpTo = Math.max(told.deliveredUpTo, is.deliveredUpTo);
      told.seenUpTo = Math.max(told.seenUpTo, is.seenUpTo);
      const frame = JSON.stringify({ type: "receipts", chatId: room.chatId, ...told, at: now });
      for (const session of room.sessions) if (session.userId === sender && session.live) session.ws.send(frame);
      for (const stream of accountOf(sender).streams) if (stream.phase !== "new") stream.ws.send(frame);
    }
    if (type === "read" && onStream) return reply(ws, id, { ...chatSummary(room), readSeq: mark.seen });
    reply(ws, id, { chatId: room.chatId, deliveredSeq: mark.delivered, seenSeq: mark.seen });
  }

  function statusOf(room: Room, userId: string, seq: number): object | null {
    if (seq < 2 || room.senders[seq - 2] !== userId) return null;
    let recipients = 0;
    let delivered = 0;
    let seen = 0;
    for (const member of room.members) {
      if (member === userId) continue;
      recipients++;
      const mark = room.marks.get(member);
      if ((mark?.delivered ?? 1) >= seq) delivered++;
      if ((mark?.seen ?? 1) >= seq) seen++;
    }
    const status = seen === recipients ? "seen" : delivered === recipients ? "delivered" : "sent";
    return { chatId: room.chatId, seq, status, recipients, delivered, seen };
  }

  function reply(ws: WebSocket, id: string, result: object | undefined, notFound = "not found"): void {
    if (result === undefined) return refuse(ws, id, "not_found", notFound);
    ws.send(JSON.stringify({ type: "reply", id, ok: true, result }));
  }

  function sendNextPage(room: Room, session: Session): number {
    if (session.live) return room.headSeq;
    const from = Math.max(0, session.cursor - 1);
    const events = room.log.slice(from, from + PAGE_SIZE);
    if (session.cursor === 0) events.unshift(createdEventText(room, session.userId));
    const page = events.slice(0, PAGE_SIZE);
    session.cursor = page.length > 0 ? session.cursor + page.length : room.headSeq;
    session.live = session.cursor >= room.headSeq;
    session.ws.send(eventsFrameText(room.chatId, page, !session.live));
    return session.cursor;
  }

  // ---- Device streams (GET /chat), minimal: every chat of the account on one socket ----

  function openStream(ws: WebSocket, userId: string, deviceId: string): void {
    const stream: StreamSession = { ws, userId, deviceId, phase: "new", behind: new Map(), foreground: true, watching: new Set(), watchUntil: 0 };
    const account = accountOf(userId);
    account.streams.add(stream);
    let forgotten = false;
    const forget = () => {
      if (forgotten) return;
      forgotten = true;
      account.streams.delete(stream);
      for (const chatId of account.chats) rooms.get(chatId)?.streams.delete(stream);
      unwatch(stream);
      presenceChanged(account, userId);
    };
    ws.send(JSON.stringify({ type: "stream.ready", userId, deviceId, heartbeatMs: 30_000 }));
    // Online from its opening, as in the Worker.
    presenceChanged(account, userId);
    ws.on("message", (data: Buffer, isBinary: boolean) => onStreamFrame(stream, account, data, isBinary));
    ws.on("close", forget);
    ws.on("error", forget);
  }

  function onStreamFrame(stream: StreamSession, account: Account, data: Buffer, isBinary: boolean): void {
    const frame = parseFrame(stream.ws, data, isBinary);
    if (!frame) return;
    if (frame.type === "send" && typeof frame.chatId === "string" && typeof frame.clientId === "string" && typeof frame.body === "string") {
      if (!account.chats.has(frame.chatId)) return refuse(stream.ws, frame.id, "not_a_member", "not a member of this chat");
      return store(rooms.get(frame.chatId)!, stream.ws, stream.userId, stream.deviceId, frame.id, frame.clientId, frame.body);
    }
    if (frame.type === "resume" && typeof frame.cursors === "object" && frame.cursors !== null) {
      return resume(stream, account, frame.id, frame.cursors as Record<string, unknown>);
    }
    if (frame.type === "sync") {
      stream.ws.send(JSON.stringify({ type: "reply", id: frame.id, ok: true, result: { behind: stream.behind.size } }));
      if (stream.behind.size > 0) sendBatch(stream);
      return;
    }
    if ((frame.type === "delivered" || frame.type === "read" || frame.type === "status") && typeof frame.chatId === "string" && typeof frame.seq === "number") {
      if (!account.chats.has(frame.chatId)) return refuse(stream.ws, frame.id, "not_a_member", "not a member of this chat");
      return receiptFrame(rooms.get(frame.chatId)!, stream.ws, stream.userId, frame.type, frame.id, frame.seq, true);
    }
    if (frame.type === "presence.subscribe" && Array.isArray(frame.watch)) return presenceSubscribe(stream, frame.id, frame.watch as unknown[]);
    if (frame.type === "presence.state" && (frame.state === "foreground" || frame.state === "background")) {
      stream.foreground = frame.state === "foreground";
      stream.ws.send(JSON.stringify({ type: "reply", id: frame.id, ok: true, result: { state: frame.state } }));
      return presenceChanged(account, stream.userId);
    }
    refuse(stream.ws, frame.id, "unknown_frame", "unknown frame");
  }

  // ---- Presence, minimal: online while a stream is in the foreground, pushed to watching streams ----

  function presenceOf(account: Account, userId: string): { userId: string; online: boolean; lastSeenAt?: number } {
    return account.online || account.lastSeenAt === null ? { userId, online: account.online } : { userId, online: false, lastSeenAt: account.lastSeenAt };
  }

  /** Recomputes an account's presence and pushes it to the streams watching it when it changed. */
  function presenceChanged(account: Account, userId: string): void {
    let online = false;
    for (const stream of account.streams) if (stream.foreground) online = true;
    if (online === account.online) return;
    account.online = online;
    if (!online) account.lastSeenAt = Date.now();
    if (account.watchers.size === 0) return;
    const text = JSON.stringify({ type: "presence", presence: presenceOf(account, userId) });
    const now = Date.now();
    for (const watcher of account.watchers) if (watcher.watchUntil > now) watcher.ws.send(text);
  }

  function unwatch(stream: StreamSession): void {
    for (const userId of stream.watching) accounts.get(userId)?.watchers.delete(stream);
    stream.watching.clear();
  }

  /** Replaces the stream's watch list: each user allowed when both are members of the chat named. */
  function presenceSubscribe(stream: StreamSession, id: string, watch: unknown[]): void {
    if (watch.length > MAX_PRESENCE_WATCHES) return refuse(stream.ws, id, "validation_failed", `at most ${MAX_PRESENCE_WATCHES} entries`);
    const entries = new Map<string, string>();
    for (const entry of watch) {
      const { userId, chatId } = (entry ?? {}) as { userId?: unknown; chatId?: unknown };
      if (typeof userId !== "string" || typeof chatId !== "string") return refuse(stream.ws, id, "validation_failed", "watch entries are {userId, chatId}");
      entries.set(userId, chatId);
    }
    unwatch(stream);
    stream.watchUntil = Date.now() + PRESENCE_LEASE_MS;
    const presence: object[] = [];
    const refused: string[] = [];
    for (const [userId, chatId] of entries) {
      const members = rooms.get(chatId)?.members;
      if (userId === stream.userId || !members?.has(stream.userId) || !members.has(userId)) {
        refused.push(userId);
        continue;
      }
      const watched = accountOf(userId);
      watched.watchers.add(stream);
      stream.watching.add(userId);
      presence.push(presenceOf(watched, userId));
    }
    stream.ws.send(JSON.stringify({ type: "reply", id, ok: true, result: { presence, refused, leaseMs: PRESENCE_LEASE_MS } }));
  }

  /** Chats past the device's cursor are caught up on in pages; chats it did not list are announced, live from their head. */
  function resume(stream: StreamSession, account: Account, id: string, cursors: Record<string, unknown>): void {
    if (stream.phase !== "new") return refuse(stream.ws, id, "validation_failed", "a stream resumes once");
    for (const chatId of account.chats) {
      const cursor = cursors[chatId];
      if (cursor !== undefined && (!Number.isSafeInteger(cursor) || (cursor as number) < 0 || (cursor as number) > rooms.get(chatId)!.headSeq)) {
        return refuse(stream.ws, id, "invalid_cursor", `no seq ${String(cursor)} in ${chatId}`);
      }
    }
    const announced: Room[] = [];
    for (const chatId of account.chats) {
      const room = rooms.get(chatId)!;
      room.streams.add(stream);
      const cursor = cursors[chatId] as number | undefined;
      if (cursor === undefined) announced.push(room);
      else if (cursor < room.headSeq) stream.behind.set(chatId, cursor);
    }
    stream.phase = "catching_up";
    const unknownChats = Object.keys(cursors).filter((chatId) => !account.chats.has(chatId));
    stream.ws.send(JSON.stringify({ type: "reply", id, ok: true, result: { behind: stream.behind.size, announced: announced.length, unknownChats } }));
    for (const room of announced) stream.ws.send(JSON.stringify({ type: "chat", chat: chatSummary(room) }));
    sendBatch(stream);
  }

  /** Pages until the batch holds PAGE_BYTES of events, then `catching_up` (the client answers `sync`); `synced` when no chat is behind. */
  function sendBatch(stream: StreamSession): void {
    let bytes = 0;
    while (bytes < PAGE_BYTES && stream.behind.size > 0) {
      const [chatId, cursor] = stream.behind.entries().next().value!;
      const room = rooms.get(chatId)!;
      const events: string[] = [];
      let pageBytes = 0;
      if (cursor === 0) events.push(createdEventText(room, stream.userId));
      for (let i = Math.max(0, cursor - 1); i < room.log.length && events.length < PAGE_SIZE; i++) {
        const json = room.log[i]!;
        if (events.length > 0 && pageBytes + json.length + 1 > PAGE_BYTES) break;
        events.push(json);
        pageBytes += json.length + 1;
      }
      const last = cursor + events.length;
      const done = last >= room.headSeq;
      if (events.length > 0) stream.ws.send(eventsFrameText(chatId, events, !done));
      bytes += pageBytes;
      if (done) stream.behind.delete(chatId);
      else stream.behind.set(chatId, last);
    }
    if (stream.behind.size > 0) {
      stream.ws.send(JSON.stringify({ type: "catching_up", behind: stream.behind.size }));
    } else if (stream.phase === "catching_up") {
      stream.phase = "live";
      stream.ws.send('{"type":"synced"}');
    }
  }

  function chatSummary(room: Room): object {
    return {
      chatId: room.chatId,
      kind: room.kind,
      name: room.kind === "direct" ? "" : room.name,
      addedAt: room.createdAt,
      headSeq: room.headSeq,
      memberCount: room.members.size,
      lastActivityAt: room.createdAt,
      membership: "member",
      readSeq: 0,
      unreadCount: 0,
      pinned: false,
      archived: false,
    };
  }

  function createdEventText(room: Room, userId: string): string {
    return JSON.stringify({ type: "chat.created", seq: 1, createdAt: room.createdAt, actorId: userId, kind: room.kind, name: room.name, members: [] });
  }

  function parseFrame(ws: WebSocket, data: Buffer, isBinary: boolean): ({ id: string } & Record<string, unknown>) | null {
    if (isBinary) {
      errorFrame(ws, "binary_not_supported", "frames are JSON text");
      return null;
    }
    const text = data.toString();
    if (text === "ping") {
      ws.send("pong");
      return null;
    }
    let frame: Record<string, unknown>;
    try {
      frame = JSON.parse(text);
    } catch {
      errorFrame(ws, "invalid_json", "the frame is not JSON");
      return null;
    }
    if (typeof frame.id !== "string") {
      errorFrame(ws, "validation_failed", "id is required");
      return null;
    }
    return frame as { id: string } & Record<string, unknown>;
  }

  function refuse(ws: WebSocket, id: string, code: string, message: string): void {
    ws.send(JSON.stringify({ type: "reply", id, ok: false, error: { code, message, retryable: false } }));
  }

  function errorFrame(ws: WebSocket, code: string, message: string): void {
    ws.send(JSON.stringify({ type: "error", error: { code, message, retryable: false } }));
  }

  http.listen(port, "127.0.0.1", () => {
    const address = http.address();
    process.stdout.write(`listening ${typeof address === "object" && address ? address.port : port}\n`);
  });
  // Stop with the parent: a benchmark must never leave a server behind.
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
}

function eventsFrameText(chatId: string, eventsJson: string[], more: boolean): string {
  return `{"type":"events","chatId":${JSON.stringify(chatId)},"events":[${eventsJson.join(",")}],"more":${more}}`;
}

// ---------------------------------------------------------------------------
// The launcher

export async function startBareServer(): Promise<Target> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), "--port", "0"], { stdio: ["pipe", "pipe", "inherit"] });
  const port = await new Promise<number>((resolve, reject) => {
    let output = "";
    const timer = setTimeout(() => reject(new Error(`the bare server did not start: ${output}`)), 10_000);
    child.stdout!.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const match = /listening (\d+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    child.once("exit", (code) => reject(new Error(`the bare server exited with ${code}: ${output}`)));
  });
  return new BareTarget(child, port);
}

class BareTarget implements Target {
  readonly name = "bare" as const;
  readonly description = `bare Node ${process.version} ws server, in-memory routing, no persistence`;
  readonly api = null;
  readonly processes;
  readonly memoryPid: number;
  readonly setup = { users: 0, userMs: 0, chats: 0, chatMs: 0 };
  readonly #child: ChildProcess;
  readonly #port: number;
  readonly #users: BenchUser[] = [];
  #freshUsers = 0;
  #chats = 0;

  constructor(child: ChildProcess, port: number) {
    this.#child = child;
    this.#port = port;
    this.memoryPid = child.pid!;
    this.processes = [{ role: "bare-node", pid: child.pid! }];
  }

  socketUrl(chatId: string, after?: number): string {
    return `ws://127.0.0.1:${this.#port}/chat/${chatId}${after === undefined ? "" : `?after=${after}`}`;
  }

  streamUrl(): string {
    return `ws://127.0.0.1:${this.#port}/chat`;
  }

  async users(count: number): Promise<BenchUser[]> {
    while (this.#users.length < count) this.#users.push(bareUser("bare", this.#users.length));
    this.setup.users = this.#users.length + this.#freshUsers;
    return this.#users.slice(0, count);
  }

  async freshUsers(count: number): Promise<BenchUser[]> {
    const users = Array.from({ length: count }, () => bareUser("barf", this.#freshUsers++));
    this.setup.users = this.#users.length + this.#freshUsers;
    return users;
  }

  async createGroup(members: readonly BenchUser[], name: string): Promise<string> {
    return this.#createChat(`g_bare${String(++this.#chats).padStart(22, "0")}`, name, members);
  }

  async createDirect(a: BenchUser, b: BenchUser): Promise<string> {
    return this.#createChat(`d_bare${String(++this.#chats).padStart(22, "0")}`, "", [a, b]);
  }

  /** Tells the server the chat's members, for the device streams (a chat socket needs none). */
  async #createChat(chatId: string, name: string, members: readonly BenchUser[]): Promise<string> {
    const startedAt = performance.now();
    const response = await fetch(`http://127.0.0.1:${this.#port}/bare/chats`, {
      method: "POST",
      body: JSON.stringify({ chatId, name, memberIds: members.map((m) => m.userId) }),
      signal: AbortSignal.timeout(10_000),
    });
    if (response.status !== 201) throw new Error(`the bare server refused chat ${chatId}: HTTP ${response.status}`);
    this.setup.chats++;
    this.setup.chatMs += performance.now() - startedAt;
    return chatId;
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.#child.once("exit", resolve));
    this.#child.stdin!.end();
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), 3_000);
    await exited;
    clearTimeout(timer);
  }
}

/** A user the bare server trusts: its token is "<userId>.<deviceId>". */
function bareUser(prefix: string, n: number): BenchUser {
  const userId = `u_${prefix}${String(n).padStart(16, "0")}`;
  const deviceId = `dv_${prefix}${String(n).padStart(16, "0")}`;
  return { userId, deviceId, credentials: `${userId}.${deviceId}`, issuedAt: performance.now() };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const portIndex = process.argv.indexOf("--port");
  serve(portIndex >= 0 ? Number(process.argv[portIndex + 1]) : 0);
}
