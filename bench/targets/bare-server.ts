/**
 * The baseline: a bare Node `ws` server that routes the same JSON frames as the
 * Worker, without persistence, auth checks or a runtime in between. It answers
 * `ready` on connect, `reply` then a broadcast `events` frame on `send`, `pong` to
 * `ping`, and catch-up pages (`?after=`, `sync`) from an in-memory log, so the same
 * scenarios run against it unchanged. The ratio workerd/bare is the cost of the
 * platform and of our server code.
 *
 * Run directly (`node bench/targets/bare-server.ts --port 0`) it serves and prints
 * `listening <port>`; imported, `startBareServer()` launches it as a child process
 * (its own process, like workerd, so the client's CPU is not shared with it).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage } from "node:http";
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

type Session = { ws: WebSocket; userId: string; deviceId: string; cursor: number; live: boolean };
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
type Room = { chatId: string; headSeq: number; createdAt: number; log: MessageEvent[]; sessions: Set<Session> };

function serve(port: number): void {
  const rooms = new Map<string, Room>();
  const roomOf = (chatId: string): Room => {
    let room = rooms.get(chatId);
    if (!room) {
      // seq 1 is the chat's creation, as in the Worker.
      room = { chatId, headSeq: 1, createdAt: Date.now(), log: [], sessions: new Set() };
      rooms.set(chatId, room);
    }
    return room;
  };

  const http = createServer((request, response) => {
    if (request.url === "/healthz") response.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}');
    else response.writeHead(404).end();
  });
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_FRAME_BYTES });

  http.on("upgrade", (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(request.url ?? "/", "http://bare");
    const chatId = /^\/chat\/([A-Za-z0-9_-]+)$/.exec(url.pathname)?.[1];
    // Tokens are "<userId>.<deviceId>": the bare server trusts them (no auth cost).
    const token = /^Bearer\s+(\S+)$/i.exec(request.headers.authorization ?? "")?.[1];
    const [userId, deviceId] = token?.split(".") ?? [];
    if (!chatId || !userId || !deviceId) {
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
      ws.send(JSON.stringify({ type: "ready", chatId, userId, deviceId, role: "member", headSeq: room.headSeq, catchingUp: !session.live }));
      if (!session.live) sendNextPage(room, session);
      ws.on("message", (data: Buffer, isBinary: boolean) => onFrame(room, session, data, isBinary));
      ws.on("close", () => room.sessions.delete(session));
      ws.on("error", () => room.sessions.delete(session));
    });
  });

  function onFrame(room: Room, session: Session, data: Buffer, isBinary: boolean): void {
    if (isBinary) return errorFrame(session.ws, "binary_not_supported", "frames are JSON text");
    const text = data.toString();
    if (text === "ping") return session.ws.send("pong");
    let frame: { type?: unknown; id?: unknown; clientId?: unknown; body?: unknown };
    try {
      frame = JSON.parse(text);
    } catch {
      return errorFrame(session.ws, "invalid_json", "the frame is not JSON");
    }
    if (typeof frame.id !== "string") return errorFrame(session.ws, "validation_failed", "id is required");
    if (frame.type === "send" && typeof frame.clientId === "string" && typeof frame.body === "string") {
      const event: MessageEvent = {
        type: "message",
        seq: ++room.headSeq,
        createdAt: Date.now(),
        messageId: randomUUID(),
        senderId: session.userId,
        senderDeviceId: session.deviceId,
        clientId: frame.clientId,
        body: frame.body,
      };
      room.log.push(event);
      // Ack first, then broadcast: the same order as the Worker.
      session.ws.send(JSON.stringify({ type: "reply", id: frame.id, ok: true, result: { seq: event.seq, messageId: event.messageId, createdAt: event.createdAt, duplicate: false } }));
      const pushed = JSON.stringify({ type: "events", chatId: room.chatId, events: [event], more: false });
      for (const other of room.sessions) if (other.live) other.ws.send(pushed);
      return;
    }
    if (frame.type === "sync") {
      const cursor = sendNextPage(room, session);
      session.ws.send(JSON.stringify({ type: "reply", id: frame.id, ok: true, result: { cursor } }));
      return;
    }
    session.ws.send(JSON.stringify({ type: "reply", id: frame.id, ok: false, error: { code: "unknown_frame", message: "unknown frame", retryable: false } }));
  }

  function sendNextPage(room: Room, session: Session): number {
    if (session.live) return room.headSeq;
    // log[i] holds seq i + 2 (seq 1 is the creation event, not kept).
    const from = Math.max(0, session.cursor - 1);
    const events: object[] = room.log.slice(from, from + PAGE_SIZE);
    if (session.cursor === 0) events.unshift({ type: "chat.created", seq: 1, createdAt: room.createdAt, actorId: session.userId, kind: "group", name: "bare", members: [] });
    const page = events.slice(0, PAGE_SIZE) as { seq: number }[];
    session.cursor = page.at(-1)?.seq ?? room.headSeq;
    session.live = session.cursor >= room.headSeq;
    session.ws.send(JSON.stringify({ type: "events", chatId: room.chatId, events: page, more: !session.live }));
    return session.cursor;
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

  async users(count: number): Promise<BenchUser[]> {
    while (this.#users.length < count) {
      const n = this.#users.length;
      const userId = `u_bare${String(n).padStart(16, "0")}`;
      const deviceId = `dv_bare${String(n).padStart(16, "0")}`;
      this.#users.push({ userId, deviceId, credentials: `${userId}.${deviceId}`, issuedAt: performance.now() });
    }
    this.setup.users = this.#users.length;
    return this.#users.slice(0, count);
  }

  async createGroup(): Promise<string> {
    this.setup.chats++;
    return `g_bare${String(++this.#chats).padStart(22, "0")}`;
  }

  async createDirect(): Promise<string> {
    this.setup.chats++;
    return `d_bare${String(++this.#chats).padStart(22, "0")}`;
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

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const portIndex = process.argv.indexOf("--port");
  serve(portIndex >= 0 ? Number(process.argv[portIndex + 1]) : 0);
}
