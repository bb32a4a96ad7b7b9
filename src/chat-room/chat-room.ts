import { DurableObject } from "cloudflare:workers";
import { drizzle, type DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import migrations from "../../migrations/chat-room/migrations.js";
import { applyMigrations, hasSchema } from "../db/apply-migrations.ts";
import * as schema from "../db/chat-room-schema.ts";
import { AppError, validationError } from "../lib/app-error.ts";
import { failureOf } from "../lib/failure.ts";
import { configFrom, type Config } from "../lib/config.ts";
import { describeError, log } from "../lib/log.ts";
import { attempt, succeed, type Outcome } from "../lib/result.ts";
import { countInstanceStart } from "../lib/instance-starts.ts";
import {
  ClientFrame,
  CloseCode,
  Heartbeat,
  Limits,
  type Chat,
  type ChatEvent,
  type ChatKind,
  type ChatSummary,
  type ErrorBody,
  type MemberRole,
  type HistoryQuery,
  type SendMessageRequest,
  type SendResult,
} from "../protocol/index.ts";
import { commands, type Respond, type RoomCommands } from "./commands.ts";
import { SendBatch } from "./send-batch.ts";
import { EventLog, type EventPage, type Sender } from "./event-log.ts";
import { Membership } from "./membership.ts";
import { TokenBuckets } from "../lib/token-buckets.ts";
import { AccountSendLeases } from "./account-send-leases.ts";
import { CatchUp } from "./catch-up.ts";
import { closeQuietly, deviceTag, sendErrorFrame, sendFrame, Sessions, type SessionState } from "./sessions.ts";
import { ForwardedIdentity } from "../lib/forwarded-identity.ts";
import { refuseUpgrade, upgradeResponse } from "../lib/upgrade-response.ts";

export type CreateChatInput = {
  chatId: string;
  kind: ChatKind;
  name: string;
  description: string;
  creatorId: string;
  /** The other initial members (the creator excluded). */
  memberIds: string[];
};

/** Sends stored per commit at most: bounds the work (and broadcast frame) of one turn. */
const MAX_SENDS_PER_COMMIT = 64;

type PendingSend = { sender: Sender; input: SendMessageRequest; respond: Respond<SendResult> };

/** Retry delay for telling members' User objects about the chat after a failure. */
const INDEX_RETRY_MS = 30_000;

/**
 * One object per chat (`idFromName(chatId)`): the source of truth for the chat's
 * members and its event log, and the sequencer that gives every event its `seq`.
 * It holds the hibernatable sockets of the clients that have the chat open.
 */
export class ChatRoom extends DurableObject<Env> {
  readonly #db: DrizzleSqliteDODatabase<typeof schema>;
  readonly #config: Config;
  readonly #sendRate: TokenBuckets;
  readonly #catchUp: CatchUp;
  /**
   * What frame handlers may do, as a private object rather than public methods: a
   * public method of a Durable Object can be called by anyone holding a stub, over RPC.
   */
  readonly #commandContext: RoomCommands = {
    enqueueSend: (sender, input, respond) => this.#sendBatch.add({ sender, input, respond }),
    sendNextPage: (ws, session) => this.#catchUp.nextPage(ws, session),
  };
  readonly #sessions: Sessions;
  #log!: EventLog;
  #membership!: Membership;
  readonly #sendBatch = new SendBatch<PendingSend>((batch) => this.#leaseThenStore(batch), MAX_SENDS_PER_COMMIT);
  readonly #accountLeases = new AccountSendLeases((userId, count) => this.env.USER.get(this.env.USER.idFromName(userId)).grantSends(count));

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    countInstanceStart("ChatRoom");
    this.#db = drizzle(ctx.storage, { schema });
    this.#config = configFrom(env);
    this.#sendRate = new TokenBuckets(this.#config.send.ratePerSecond, this.#config.send.burst);
    this.#sessions = new Sessions(ctx, () => this.#membership.chat?.chatId ?? "");
    this.#catchUp = new CatchUp({
      log: () => this.#log,
      sessions: this.#sessions,
      chatId: () => this.#membership.requireChat().chatId,
      pageSize: this.#config.catchUpPageSize,
    });
    // Heartbeats are answered by the runtime itself: an idle chat never wakes for them.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(Heartbeat.request, Heartbeat.response));
    void ctx.blockConcurrencyWhile(async () => {
      if (hasSchema(ctx.storage)) await this.#openStorage();
      else {
        // No chat here: every lookup answers chat_not_found and writes nothing.
        this.#log = EventLog.empty(ctx.storage.sql);
        this.#membership = Membership.empty(this.#db);
      }
    });
  }

  async #openStorage(): Promise<void> {
    await applyMigrations(this.#db, this.ctx.storage, migrations);
    this.#log = new EventLog(this.ctx.storage.sql);
    this.#membership = new Membership(this.#db);
  }

  // ---- RPC from the Worker ----

  /** Creates the chat with its first event; a direct chat that exists is returned as is. */
  async create(input: CreateChatInput, now = Date.now()): Promise<Outcome<{ chat: Chat; created: boolean }>> {
    const existing = this.#membership.chat;
    if (existing) {
      return attempt(() => {
        if (existing.kind !== "direct" || input.kind !== "direct") {
          throw new AppError("internal", 500, "chat id collision", { retryable: true });
        }
        return { chat: this.#membership.describe(this.#log.headSeq), created: false };
      });
    }
    if (!hasSchema(this.ctx.storage)) await this.#openStorage();
    const members = [
      { userId: input.creatorId, role: input.kind === "direct" ? ("member" as const) : ("admin" as const), joinedSeq: 1 },
      ...input.memberIds.map((userId) => ({ userId, role: "member" as const, joinedSeq: 1 })),
    ];
    this.#membership.create(
      { chatId: input.chatId, kind: input.kind, name: input.name, description: input.description, createdBy: input.creatorId, createdAt: now },
      members,
    );
    this.#log.append(
      { type: "chat.created", actorId: input.creatorId, kind: input.kind, name: input.name, members: members.map(({ userId, role }) => ({ userId, role })) },
      now,
    );
    // Committed with the rows above: if this object dies before every member's
    // User object has the chat in its list, the alarm finishes the job.
    void this.ctx.storage.setAlarm(now + INDEX_RETRY_MS);
    if (await this.#indexInMemberAccounts()) await this.ctx.storage.deleteAlarm();
    return { ok: true, value: { chat: this.#membership.describe(this.#log.headSeq), created: true } };
  }

  getChat(userId: string): Outcome<Chat> {
    return attempt(() => {
      this.#membership.requireMember(userId);
      return this.#membership.describe(this.#log.headSeq);
    });
  }

  /** The REST path of a send (bots, tests, clients without the chat open). */
  send(sender: Sender, input: SendMessageRequest): Promise<Outcome<SendResult>> {
    return new Promise((resolve) => this.#sendBatch.add({ sender, input, respond: resolve }));
  }

  /**
   * A page of history as the JSON text of a `HistoryPage`: the events were serialized
   * once to count the page's bytes, and that text is the answer (no second pass in the
   * Worker, no structured copy of the events across the call).
   */
  history(userId: string, query: HistoryQuery): Outcome<string> {
    return attempt(() => {
      const member = this.#membership.requireMember(userId);
      const headSeq = this.#log.headSeq;
      const floor = member.joinedSeq;
      let page: EventPage;
      let hasMore: boolean;
      if (query.after !== undefined) {
        page = this.#log.after(Math.max(query.after, floor - 1), query.limit, Limits.maxPageBytes);
        hasMore = (page.events.at(-1)?.seq ?? headSeq) < headSeq;
      } else {
        page = this.#log.before(query.before ?? headSeq + 1, floor, query.limit, Limits.maxPageBytes);
        hasMore = (page.events[0]?.seq ?? floor) > floor;
      }
      return `{"events":[${page.json.join(",")}],"hasMore":${hasMore},"headSeq":${headSeq}}`;
    });
  }

  /** A revoked device's sockets close at once. */
  closeDeviceSockets(deviceId: string): number {
    return this.#sessions.closeTagged(deviceTag(deviceId), CloseCode.deviceRevoked, "device_revoked");
  }

  override async alarm(): Promise<void> {
    if (!(await this.#indexInMemberAccounts())) {
      await this.ctx.storage.setAlarm(Date.now() + INDEX_RETRY_MS);
    }
  }

  // ---- Sockets ----

  override async fetch(request: Request): Promise<Response> {
    if (request.headers.get("Upgrade")?.toLowerCase() !== "websocket") {
      return Response.json({ error: { code: "validation_failed", message: "expected a WebSocket upgrade", retryable: false } }, { status: 426 });
    }
    const identity = ForwardedIdentity.read(request.headers);
    const opened = attempt(() => this.#openSession(identity, new URL(request.url).searchParams.get("after")));
    if (!opened.ok) return refuseUpgrade(request.headers, opened.error);
    const { session, role } = opened.value;
    const [client, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
    this.#sessions.accept(server, session, Limits.maxSocketsPerDevicePerChat);
    sendFrame(server, {
      type: "ready",
      chatId: this.#membership.requireChat().chatId,
      userId: identity.userId,
      deviceId: identity.deviceId,
      role,
      headSeq: this.#log.headSeq,
      catchingUp: !session.live,
    });
    if (!session.live) this.#catchUp.firstPage(server, session);
    return upgradeResponse(request.headers, client);
  }

  #openSession(identity: ForwardedIdentity, afterParam: string | null, now = Date.now()): { session: SessionState; role: MemberRole } {
    const member = this.#membership.requireMember(identity.userId);
    const headSeq = this.#log.headSeq;
    const base = { userId: identity.userId, deviceId: identity.deviceId, openedAt: now, expiresAt: identity.tokenExpiresAt };
    if (afterParam === null) return { session: { ...base, cursor: headSeq, live: true }, role: member.role };
    const after = /^\d{1,15}$/.test(afterParam) ? Number(afterParam) : Number.NaN;
    if (!Number.isSafeInteger(after) || after > headSeq) {
      throw new AppError("invalid_cursor", 400, `after must be a seq between 0 and ${headSeq}`, { retryable: false });
    }
    // A member sees the chat from the event that made them a member.
    const cursor = Math.max(after, member.joinedSeq - 1);
    return { session: { ...base, cursor, live: cursor >= headSeq }, role: member.role };
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    const session = this.#sessions.get(ws);
    if (!session) return closeQuietly(ws, CloseCode.tryAgain, "unknown session");
    // A socket lives as long as the token it opened with; the client resumes with a new one.
    if (session.expiresAt <= Date.now()) return this.#sessions.expire(ws);
    if (typeof message !== "string") {
      return sendErrorFrame(ws, { code: "binary_not_supported", message: "frames are JSON text", retryable: false });
    }
    if (message.length > Limits.maxFrameBytes) {
      return sendErrorFrame(ws, { code: "too_large", message: `frames are at most ${Limits.maxFrameBytes} bytes`, retryable: false });
    }
    let raw: unknown;
    try {
      raw = JSON.parse(message);
    } catch {
      return sendErrorFrame(ws, { code: "invalid_json", message: "the frame is not JSON", retryable: false });
    }
    const id = typeof raw === "object" && raw !== null && "id" in raw && typeof raw.id === "string" ? raw.id : null;
    // Dispatch on `type` first: parsing one frame schema is much cheaper than the union.
    const schema = typeof raw === "object" && raw !== null && "type" in raw ? frameSchemas.get(String(raw.type)) : undefined;
    const parsed = (schema ?? ClientFrame).safeParse(raw);
    if (!parsed.success) {
      const error = knownType(raw) ? validationError(parsed.error.issues).toBody() : unknownFrame(raw);
      return id === null ? sendErrorFrame(ws, error) : sendFrame(ws, { type: "reply", id, ok: false, error });
    }
    const frame = parsed.data;
    const respond: Respond<unknown> = (outcome) =>
      sendFrame(ws, outcome.ok ? { type: "reply", id: frame.id, ok: true, result: outcome.value } : { type: "reply", id: frame.id, ok: false, error: outcome.error });
    try {
      const handler = commands[frame.type] as (room: RoomCommands, ws: WebSocket, session: SessionState, frame: ClientFrame, respond: Respond<unknown>) => void;
      handler(this.#commandContext, ws, session, frame, respond);
    } catch (error) {
      respond(failureOf(error, { object: "ChatRoom" }));
    }
  }

  override async webSocketClose(ws: WebSocket, code: number): Promise<void> {
    this.#sessions.forget(ws);
    // Always answer a close; 1005/1006 are reserved and cannot be sent back.
    closeQuietly(ws, code === 1005 || code === 1006 ? CloseCode.normal : code, "closed");
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    log.warn("socket error", describeError(error));
    this.#sessions.forget(ws);
  }

  // ---- Commands ----

  /**
   * Stores a batch at once when its senders hold enough of their accounts' send tokens
   * (the common case: no await on the hot path); otherwise leases them first.
   */
  #leaseThenStore(batch: PendingSend[]): void | Promise<void> {
    const now = Date.now();
    const needed = new Map<string, number>();
    for (const { sender } of batch) needed.set(sender.userId, (needed.get(sender.userId) ?? 0) + 1);
    let covered = true;
    for (const [userId, count] of needed) covered &&= this.#accountLeases.covers(userId, count, now);
    if (covered) return this.#storeSends(batch);
    return this.#accountLeases.prepare(needed, now).then(() => this.#storeSends(batch));
  }

  /**
   * Stores a batch of sends in one turn: one transaction, one commit. Each sender
   * gets its ack first, then every live socket gets the batch's events in one frame.
   */
  #storeSends(batch: PendingSend[]): void {
    const now = Date.now();
    const stored: ChatEvent[] = [];
    const outcomes = batch.map(({ sender, input }) => {
      try {
        const result = this.#storeMessage(sender, input, now, stored);
        return succeed(result);
      } catch (error) {
        return failureOf(error, { object: "ChatRoom" });
      }
    });
    batch.forEach(({ respond }, index) => respond(outcomes[index]!));
    this.#sessions.broadcast(stored, () => this.ctx.storage.sync());
  }

  #storeMessage(sender: Sender, input: SendMessageRequest, now: number, stored: ChatEvent[]): SendResult {
    const member = this.#membership.requireMember(sender.userId);
    const chat = this.#membership.requireChat();
    if (chat.kind === "broadcast" && member.role !== "admin") {
      throw new AppError("admins_only", 403, "only admins post in a broadcast chat", { retryable: false });
    }
    const waitMs = Math.max(this.#sendRate.waitMs(sender.userId, now), this.#accountLeases.waitMs(sender.userId, now));
    if (waitMs > 0) {
      // A retry of a stored message is answered even when the sender is over its rate.
      const original = this.#log.findByClientId(sender.deviceId, input.clientId);
      if (!original) throw new AppError("rate_limited", 429, "sending too fast", { retryAfterMs: waitMs });
    }
    if (input.replyToSeq !== undefined) this.#checkReplyTarget(input.replyToSeq, member.joinedSeq);
    const { event, duplicate } = this.#log.appendMessage(sender, input, now);
    if (!duplicate) {
      this.#sendRate.take(sender.userId, now);
      this.#accountLeases.take(sender.userId);
      stored.push(event);
    }
    return { seq: event.seq, messageId: event.messageId, createdAt: event.createdAt, duplicate };
  }

  #checkReplyTarget(replyToSeq: number, visibleFrom: number): void {
    if (replyToSeq < visibleFrom || this.#log.typeAt(replyToSeq) !== "message") {
      throw new AppError("invalid_reply", 400, `replyToSeq ${replyToSeq} is not a message of this chat`, { retryable: false });
    }
  }

  /** Adds the chat to the list of every member whose User object does not have it yet. */
  async #indexInMemberAccounts(): Promise<boolean> {
    const chat = this.#membership.chat;
    if (!chat) return true;
    const pending = this.#membership.notifiedBelow(1);
    const memberIds = this.#membership.current().map((m) => m.userId);
    const results = await Promise.allSettled(
      pending.map(async (member) => {
        const summary: ChatSummary = { chatId: chat.chatId, kind: chat.kind, name: chat.name, addedAt: chat.createdAt };
        if (chat.kind === "direct") {
          const peerId = memberIds.find((id) => id !== member.userId);
          if (peerId) summary.peerId = peerId;
        }
        await this.env.USER.get(this.env.USER.idFromName(member.userId)).addChat(summary);
        this.#membership.markNotified(member.userId, member.joinedSeq);
      }),
    );
    const failures = results.filter((r) => r.status === "rejected");
    for (const failure of failures) log.warn("could not add a chat to a member's list", describeError(failure.reason));
    return failures.length === 0;
  }
}

// Maps and sets, not plain objects: a frame `type` such as `constructor` or `__proto__`
// must not find what every object inherits.
const KNOWN_TYPES: ReadonlySet<string> = new Set(Object.keys(commands));
const frameSchemas: ReadonlyMap<string, typeof ClientFrame> = new Map(
  ClientFrame.options.map((option) => [option.shape.type.value, option as unknown as typeof ClientFrame]),
);
function knownType(raw: unknown): boolean {
  return typeof raw === "object" && raw !== null && "type" in raw && KNOWN_TYPES.has(String(raw.type));
}

function unknownFrame(raw: unknown): ErrorBody {
  const type = typeof raw === "object" && raw !== null && "type" in raw ? String(raw.type) : "(none)";
  return { code: "unknown_frame", message: `unknown frame type ${type.slice(0, 40)}`, retryable: false };
}
