import { env, runInDurableObject } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import { expect } from "vitest";
import { ApiClient, type ApiRequestOptions } from "../../src/client/index.ts";
import { z } from "zod";
import { configFrom } from "../../src/lib/config.ts";
import { mintId } from "../../src/lib/minted-id.ts";
import { PhoneNumber, ServerFrame, StreamServerFrame, type TokenResponse } from "../../src/protocol/index.ts";

/** What a chat socket or a device stream may send. */
const AnyServerFrame = z.union([ServerFrame, StreamServerFrame]);
type AnyServerFrame = z.infer<typeof AnyServerFrame>;

/**
 * Where this file's client addresses start. The Rate Limiting bindings' counts are
 * shared by every test file of a run, so each file starts at a random point of
 * 10.0.0.0/8 rather than at the same first address.
 */
let counter = Math.floor(Math.random() * 2 ** 24);
/** Where this file's phone numbers start: +1 415 NXX XXXX, with NXX from 200 to 999. */
let phoneCounter = Math.floor(Math.random() * 7_000_000);
/** A valid phone number and a client address no other test uses (storage is shared per file). */
export function uniquePhone(): string {
  phoneCounter += 1;
  const exchange = 200 + Math.floor(phoneCounter / 10_000) % 800;
  return `+1415${exchange}${String(phoneCounter % 10_000).padStart(4, "0")}`;
}
export function uniqueIp(): string {
  counter += 1;
  return `10.${(counter >> 16) & 255}.${(counter >> 8) & 255}.${counter & 255}`;
}

export type RequestOptions = { method?: string; body?: unknown; token?: string; ip?: string; headers?: Record<string, string> };

/**
 * The SDK's client, calling the Worker in this runtime; each request comes from a new
 * client address. With a session, its calls carry that session's token.
 */
export function apiClient(session?: TokenResponse): ApiClient {
  return new ApiClient({
    baseUrl: "http://chat.test",
    fetch: (input, init) => exports.default.fetch(input, init),
    headers: () => ({ "cf-connecting-ip": uniqueIp() }),
    ...(session ? { session } : {}),
  });
}

/**
 * Calls the Worker like a client would, answering the Response whatever its status. A
 * string body is sent as it is (labelled JSON unless `headers` say otherwise).
 */
export function api(path: string, options: RequestOptions = {}): Promise<Response> {
  const request: ApiRequestOptions = { auth: options.token ?? false };
  if (typeof options.body === "string") request.rawBody = options.body;
  else if (options.body !== undefined) request.body = options.body;
  request.headers = options.ip === undefined ? { ...options.headers } : { ...options.headers, "cf-connecting-ip": options.ip };
  return apiClient().request(options.method ?? (options.body === undefined || options.body === "" ? "GET" : "POST"), path, request);
}

export async function expectError(response: Response, status: number, code: string): Promise<void> {
  const text = await response.text();
  expect({ status: response.status, body: text }).toMatchObject({ status });
  const body = JSON.parse(text) as { error: { code: string; message: string } };
  expect(body.error.code).toBe(code);
  expect(text).not.toMatch(/at .*\.(ts|js):\d+/); // never a stack trace
}

export type Session = TokenResponse & { phone: string };

/** Forgets the codes sent to a number, so a test can log it in again without waiting out the resend interval. */
export async function forgetOtpSends(phone: string): Promise<void> {
  const canonical = PhoneNumber.parse(phone);
  await runInDurableObject(env.PHONE.get(env.PHONE.idFromName(canonical)), async (_instance, state) => {
    const stored = await state.storage.get<{ sentAt: number[]; requesters: Record<string, number[]> }>("state");
    if (!stored) return;
    stored.sentAt = [];
    stored.requesters = {};
    await state.storage.put("state", stored);
  });
}

/**
 * Requests a code and logs in with it (development mode returns the code). Given a
 * number that may have had a code already, it first forgets the number's sends, so a
 * second device logs in without waiting out the resend interval.
 */
export async function login(phone?: string, deviceName = "test device"): Promise<Session> {
  if (phone === undefined) phone = uniquePhone();
  else await forgetOtpSends(phone);
  const anonymous = apiClient();
  const { devCode, attemptId } = await anonymous.requestOtp(phone);
  if (!devCode) throw new Error("no devCode: the tests run in development mode");
  return { ...(await anonymous.login({ phone, code: devCode, attemptId, deviceName })), phone };
}

/** A socket client that queues what it receives, for tests to await frame by frame. */
export class TestSocket {
  readonly frames: AnyServerFrame[] = [];
  readonly raw: string[] = [];
  closed: { code: number; reason: string } | null = null;
  #waiters: (() => void)[] = [];

  constructor(readonly ws: WebSocket) {
    ws.accept();
    ws.addEventListener("message", (event) => {
      const text = String(event.data);
      this.raw.push(text);
      if (text !== "pong") this.frames.push(AnyServerFrame.parse(JSON.parse(text)));
      this.#wake();
    });
    ws.addEventListener("close", (event) => {
      this.closed = { code: event.code, reason: event.reason };
      this.#wake();
    });
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** Waits until `predicate` holds over what was received so far. */
  async until<T>(predicate: () => T | undefined | false, what = "a frame", timeoutMs = 5000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = predicate();
      if (value) return value;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.frames.slice(-5))}`);
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  async reply(id: string) {
    return this.until(() => this.frames.find((f) => f.type === "reply" && f.id === id) as Extract<AnyServerFrame, { type: "reply" }> | undefined, `reply ${id}`);
  }

  async closeEvent() {
    return this.until(() => this.closed ?? undefined, "close");
  }

  /** Every event received, in arrival order. */
  events() {
    return this.frames.flatMap((f) => (f.type === "events" ? f.events : []));
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}

/** Opens a device stream (`GET /chat`); the socket is null when the upgrade was not answered with one. */
export async function openStream(token: string): Promise<{ response: Response; socket: TestSocket | null }> {
  const headers = new Headers({ Upgrade: "websocket", "cf-connecting-ip": uniqueIp(), authorization: `Bearer ${token}` });
  const response = await exports.default.fetch(new Request("http://chat.test/chat", { headers }));
  return { response, socket: response.webSocket ? new TestSocket(response.webSocket) : null };
}

let resumeCounter = 0;
/** Opens a device stream and resumes it from `cursors`; resolves with the socket and the reply to `resume`. */
export async function resumeStream(token: string, cursors: Record<string, number> = {}) {
  const { response, socket } = await openStream(token);
  expect(response.status).toBe(101);
  await socket!.until(() => socket!.frames.find((f) => f.type === "stream.ready"), "stream.ready");
  const id = `resume-${++resumeCounter}`;
  socket!.send({ type: "resume", id, cursors });
  return { socket: socket!, reply: await socket!.reply(id) };
}

export async function openSocket(chatId: string, token: string, options: { after?: number; protocols?: string[]; headers?: Record<string, string> } = {}): Promise<{ response: Response; socket: TestSocket | null }> {
  const headers = new Headers({ Upgrade: "websocket", "cf-connecting-ip": uniqueIp(), ...options.headers });
  if (options.protocols) headers.set("Sec-WebSocket-Protocol", options.protocols.join(", "));
  else headers.set("authorization", `Bearer ${token}`);
  const query = options.after === undefined ? "" : `?after=${options.after}`;
  const response = await exports.default.fetch(new Request(`http://chat.test/chat/${chatId}${query}`, { headers }));
  return { response, socket: response.webSocket ? new TestSocket(response.webSocket) : null };
}

export async function connect(chatId: string, token: string, after?: number): Promise<TestSocket> {
  const { response, socket } = await openSocket(chatId, token, after === undefined ? {} : { after });
  expect(response.status).toBe(101);
  await socket!.until(() => socket!.frames.find((f) => f.type === "ready"), "ready");
  return socket!;
}

export async function createGroup(creator: Session, members: Session[], kind: "group" | "broadcast" = "group", name = "Team"): Promise<string> {
  return (await apiClient(creator).createChat({ kind, name, memberIds: members.map((m) => m.user.userId) })).chatId;
}

export async function createDirect(a: Session, b: Session): Promise<string> {
  return (await apiClient(a).createChat({ kind: "direct", peerId: b.user.userId })).chatId;
}

/** Sends over REST, the path bots use. */
export async function restSend(session: Session, chatId: string, clientId: string, body: string, replyToSeq?: number) {
  return api(`/api/chats/${chatId}/messages`, { token: session.credentials, body: replyToSeq === undefined ? { clientId, body } : { clientId, body, replyToSeq } });
}

/** A history page; `query` as in the URL, e.g. "?after=3&limit=10". */
export async function history(session: Session, chatId: string, query = "") {
  const params = Object.fromEntries([...new URLSearchParams(query)].map(([key, value]) => [key, Number(value)]));
  return apiClient(session).history(chatId, params);
}

let frameCounter = 0;
/** Sends a message frame and waits for its reply. */
export async function socketSend(socket: TestSocket, clientId: string, body: string) {
  const id = `f${++frameCounter}`;
  socket.send({ type: "send", id, clientId, body });
  return socket.reply(id);
}

/**
 * The Rate Limiting binding counts in fixed windows aligned to the wall clock (locally:
 * `floor(now / period)`), so a test that counts requests up to a limit fails if a window
 * ends half-way through. This waits, when needed, until at least `needMs` of the current
 * 60 s window remain.
 */
export async function awayFromRateWindowEdge(needMs = 10_000): Promise<void> {
  const left = 60_000 - (Date.now() % 60_000);
  if (left < needMs) await new Promise((resolve) => setTimeout(resolve, left + 50));
}

/** Accounts made directly in their objects (the same first write a login does), many at once. */
export async function accounts(count: number): Promise<string[]> {
  const secret = configFrom(env).hmacSecret;
  const ids = await Promise.all(Array.from({ length: count }, () => mintId(secret, "u")));
  for (let start = 0; start < ids.length; start += 64) {
    await Promise.all(ids.slice(start, start + 64).map((id) => env.USER.get(env.USER.idFromName(id)).ensureAccount(id, uniquePhone())));
  }
  return ids;
}

/** Tables an object created for itself (the runtime's own bookkeeping excluded). */
export function ownTables(state: DurableObjectState): string[] {
  return state.storage.sql
    .exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table'")
    .toArray()
    .map((row) => row.name)
    .filter((name) => !name.startsWith("__miniflare") && !name.startsWith("_cf_"));
}
