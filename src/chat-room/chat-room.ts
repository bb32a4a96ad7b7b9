import { DurableObject } from "cloudflare:workers";
import { drizzle, type DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import migrations from "../../migrations/chat-room/migrations.js";
import { applyMigrations, hasSchema } from "../db/apply-migrations.ts";
import * as schema from "../db/chat-room-schema.ts";
import { AppError } from "../lib/app-error.ts";
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
  type ChatIndexUpdate,
  type ChatKind,
  type AddMembersResult,
  type ChangeResult,
  type UpdateChatRequest,
  type MemberRole,
  type HistoryQuery,
  type SendMessageRequest,
  type SendResult,
  type MessageStatus,
  type ReceiptResult,
  type ReceiptsFrame,
  type TypingNotice,
  type TypingResult,
  type TypingState,
  type DeleteResult,
  type DeleteScope,
  type DeletedForEveryone,
  type DeletedForMe,
  type MultipartUpload,
  type UploadResult,
} from "../protocol/index.ts";
import { MediaRegistry, type DetectedMedia, type PartTarget, type Reservation, type StoredMedia } from "./media-registry.ts";
import { commands, type RoomCommands } from "./commands.ts";
import type { Respond } from "../sockets/frame-dispatch.ts";
import { SendBatch } from "./send-batch.ts";
import { EventLog, type Sender } from "./event-log.ts";
import { Membership, type PeriodRow } from "./membership.ts";
import { TokenBuckets } from "../lib/token-buckets.ts";
import { AccountSendLeases } from "./account-send-leases.ts";
import { CatchUp } from "./catch-up.ts";
import { Sessions, type SessionState } from "./sessions.ts";
import { deviceTag } from "../sockets/attachments.ts";
import { sendFrame, sendText } from "../sockets/socket-io.ts";
import { FrameDispatcher } from "../sockets/frame-dispatch.ts";
import { ForwardedIdentity } from "../lib/forwarded-identity.ts";
import { refuseUpgrade, upgradeResponse } from "../lib/upgrade-response.ts";
import { userObject } from "../lib/stubs.ts";
import type { User } from "../user/user.ts";
import { Scheduler } from "../lib/scheduler.ts";
import { AccountFanOut } from "./account-fan-out.ts";
import { visibleAfter, visibleBefore } from "./visible-events.ts";
import { MembershipChanges } from "./membership-changes.ts";
import { chatIndexEntries } from "./chat-index-entry.ts";
import { StreamPushes, type StreamPage } from "./stream-pushes.ts";
import { Receipts, type ReceiptKind } from "./receipts.ts";
import { ReceiptPushes } from "./receipt-pushes.ts";
import { TypingThrottle } from "./typing.ts";
import { userTag } from "../sockets/attachments.ts";
import { undeliveredTo, type Undelivered } from "./undelivered.ts";
import { Deletes, FormerPreviewNotices } from "./deletes.ts";

export type CreateChatInput = {
  chatId: string;
  kind: ChatKind;
  name: string;
  description: string;
  creatorId: string;
  /** The other initial members (the creator excluded). */
  memberIds: string[];
  /** Accounts whose `groupAdd` setting asks for an invitation instead. */
  inviteIds: string[];
};

/** Sends stored per commit at most: bounds the work (and broadcast frame) of one turn. */
const MAX_SENDS_PER_COMMIT = 64;

type PendingSend = { sender: Sender; input: SendMessageRequest; respond: Respond<SendResult> };

/**
 * The object's deadlines (one alarm): see Scheduler. "media": pending uploads' expiry and
 * R2 deletes; "former-previews": notices of a delete to former members, until answered.
 */
type Deadline = "fan-out" | "media" | "former-previews";

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
    receipt: (userId, kind, seq) => {
      const readBefore = kind === "seen" ? this.#membership.requireMember(userId).readSeq : 0;
      const result = this.#receipt(userId, kind, seq);
      // A read moved the member's read position: their account's list and devices follow.
      if (kind === "seen" && this.#membership.requireMember(userId).readSeq > readBefore) this.#tellAccountItsEntry(userId);
      return result;
    },
    status: (userId, seq) => this.messageStatus(userId, seq),
    typing: (userId, state) => this.typing(userId, state),
    deleteMessage: (userId, seq, scope, respond) => this.#deleteMessage(userId, seq, scope, respond),
  };
  readonly #sessions: Sessions;
  readonly #frames: FrameDispatcher<RoomCommands, SessionState, ClientFrame>;
  #log!: EventLog;
  #membership!: Membership;
  readonly #sendBatch = new SendBatch<PendingSend>((batch) => this.#leaseThenStore(batch), MAX_SENDS_PER_COMMIT);
  readonly #accountLeases = new AccountSendLeases((userId, count) => userObject(this.env, userId).grantSends(count));
  readonly #scheduler: Scheduler<Deadline>;
  readonly #accountStubs = new Map<string, DurableObjectStub<User>>();
  readonly #changes: MembershipChanges;
  readonly #fanOut: AccountFanOut;
  readonly #streams: StreamPushes;
  readonly #receipts: Receipts;
  readonly #typing = new TypingThrottle();
  readonly #deletes: Deletes;
  readonly #formerPreviews: FormerPreviewNotices;
  /** The chat's files (src/chat-room/media-registry.ts). */
  readonly #media: MediaRegistry;
  readonly #receiptPushes = new ReceiptPushes((userId, frame) => this.#memberAccount(userId).receiptsChanged(frame));

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    countInstanceStart("ChatRoom");
    this.#db = drizzle(ctx.storage, { schema });
    this.#config = configFrom(env);
    this.#sendRate = new TokenBuckets(this.#config.send.ratePerSecond, this.#config.send.burst);
    this.#sessions = new Sessions(ctx, () => this.#membership.chat?.chatId ?? "");
    this.#frames = new FrameDispatcher({
      frames: ClientFrame,
      commands,
      context: this.#commandContext,
      sessions: this.#sessions,
      maxFrameBytes: Limits.maxFrameBytes,
      object: "ChatRoom",
      // Per device, as on the device stream, for the frames that are cheap to send and cost
      // the chat work (receipts, status, typing); sends and catch-up pages have their own limits.
      frameRate: { perSecond: Limits.streamFramesPerSecond, burst: Limits.streamFrameBurst, unmetered: ["send", "sync"] },
    });
    this.#catchUp = new CatchUp({
      log: () => this.#log,
      sessions: this.#sessions,
      chatId: () => this.#membership.requireChat().chatId,
      periods: (userId) => this.#membership.periodsOf(userId),
      pageSize: this.#config.catchUpPageSize,
    });
    this.#fanOut = new AccountFanOut({
      log: () => this.#log,
      membership: () => this.#membership,
      notify: (userId, update) => this.#memberAccount(userId).chatChanged(update),
      entries: () => this.#indexEntries(),
      retryNoLaterThan: (at) => this.#scheduler.noLaterThan("fan-out", at),
      minIntervalMs: this.#config.fanOutIntervalMs,
    });
    this.#streams = new StreamPushes({
      storage: ctx.storage,
      log: () => this.#log,
      membership: () => this.#membership,
      push: (userId, push) => this.#memberAccount(userId).streamEvents(push),
      pageSize: this.#config.catchUpPageSize,
    });
    this.#receipts = new Receipts({
      db: this.#db,
      sql: ctx.storage.sql,
      log: () => this.#log,
      membership: () => this.#membership,
      push: (userId, frame) => this.#receiptsMoved(userId, frame),
    });
    this.#changes = new MembershipChanges({
      log: () => this.#log,
      membership: () => this.#membership,
      sessions: this.#sessions,
      changed: (events, now) => this.#changed(events, now),
    });
    this.#deletes = new Deletes({ log: () => this.#log, membership: () => this.#membership, windowMs: this.#config.deleteWindowMs });
    this.#scheduler = new Scheduler<Deadline>(ctx.storage, {
      "fan-out": (now) => this.#fanOut.retry(now),
      media: (now) => this.#media.run(now),
      "former-previews": () => this.#formerPreviews.retry(),
    });
    this.#formerPreviews = new FormerPreviewNotices({
      storage: ctx.storage,
      tell: (userId, seq) => this.#memberAccount(userId).messageDeleted(this.#membership.requireChat().chatId, seq),
      retryNoLaterThan: (at) => this.#scheduler.noLaterThan("former-previews", at),
    });
    this.#media = new MediaRegistry({ db: this.#db, bucket: env.MEDIA, schedule: (at) => this.#scheduler.noLaterThan("media", at) });
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
    this.#streams.restore();
    this.#receipts.restore();
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
      { userId: input.creatorId, role: input.kind === "direct" ? ("member" as const) : ("admin" as const) },
      ...input.memberIds.map((userId) => ({ userId, role: "member" as const })),
    ];
    this.#membership.create(
      { chatId: input.chatId, kind: input.kind, name: input.name, description: input.description, createdBy: input.creatorId, createdAt: now },
      members,
    );
    this.#log.append({ type: "chat.created", actorId: input.creatorId, kind: input.kind, name: input.name, members }, now);
    for (const userId of input.inviteIds) this.#membership.invite(userId, input.creatorId, now);
    this.#receipts.restore();
    this.#fanOut.committed(now);
    // The creator's list has the chat when this answers (the alarm covers a failure).
    await this.#fanOut.push();
    await this.#deliverInvitations(input.inviteIds, input.creatorId, now);
    return { ok: true, value: { chat: this.#membership.describe(this.#log.headSeq), created: true } };
  }

  getChat(userId: string): Outcome<Chat> {
    return attempt(() => {
      this.#membership.requireMember(userId);
      return this.#membership.describe(this.#log.headSeq);
    });
  }

  /**
   * A member read up to `seq` (RPC from their User object): merged by max, so a smaller
   * seq changes nothing. Answers their chat-list entry as of now, for their account to store.
   */
  markRead(userId: string, seq: number): Outcome<ChatIndexUpdate> {
    return attempt(() => {
      this.#receipt(userId, "seen", seq);
      return this.#indexEntries()(this.#membership.requireMember(userId));
    });
  }

  /** A device of a member received the chat up to `seq` (RPC from their User object, or REST). */
  reportDelivered(userId: string, seq: number): Outcome<ReceiptResult> {
    return attempt(() => this.#receipt(userId, "delivered", seq));
  }

  /**
   * What has reached no device of `userId` (RPC from their User object, for offline
   * notifications): counts, sender and time only, never a body. `not_a_member` for
   * anyone not a current member.
   */
  undelivered(userId: string): Outcome<Undelivered> {
    return attempt(() => undeliveredTo(this.#log, this.#membership.requireMember(userId)));
  }

  /** The status of one of `userId`'s own messages (checkLatestStatusOfMessage). */
  messageStatus(userId: string, seq: number): Outcome<MessageStatus> {
    return attempt(() => {
      this.#membership.requireMember(userId);
      return this.#receipts.statusOf(userId, seq);
    });
  }

  /**
   * A member is typing or stopped (from their chat socket, or their stream through
   * their User object): the other members' live sockets get it at once, and their
   * accounts' device streams through a call (chats small enough to be streamed). Never stored.
   */
  typing(userId: string, state: TypingState, now = Date.now()): Outcome<TypingResult> {
    return attempt(() => {
      const member = this.#membership.requireMember(userId);
      const chat = this.#membership.requireChat();
      if (chat.kind === "broadcast" && member.role !== "admin") {
        throw new AppError("admins_only", 403, "only admins post in a broadcast chat", { retryable: false });
      }
      if (!this.#typing.admit(userId, state, now)) return { forwarded: false };
      const notice: TypingNotice = { type: "typing", chatId: chat.chatId, userId, state, expiresInMs: Limits.typingExpiresMs };
      const text = JSON.stringify(notice);
      for (const [ws, session] of this.#sessions.entries()) {
        if (session.live && session.userId !== userId) sendText(ws, text);
      }
      for (const accountId of this.#streams.subscribed()) {
        // A removed member's subscription can outlive its membership for a moment (its final push).
        if (accountId === userId || !this.#membership.isMember(accountId)) continue;
        this.#memberAccount(accountId)
          .typingChanged(notice)
          .catch((error: unknown) => log.warn("could not pass a typing indicator on", describeError(error)));
      }
      return { forwarded: true };
    });
  }

  /**
   * Merges a receipt into a current member's watermarks (a seen one also moves their
   * read position) and tells the senders whose messages moved. Former members and seqs
   * past the head are refused; a seq before the member's period changes nothing.
   */
  #receipt(userId: string, kind: ReceiptKind, seq: number, now = Date.now()): ReceiptResult {
    const member = this.#membership.requireMember(userId);
    const headSeq = this.#log.headSeq;
    if (!Number.isSafeInteger(seq) || seq < 1 || seq > headSeq) {
      throw new AppError("invalid_cursor", 400, `seq must be between 1 and ${headSeq}`, { retryable: false });
    }
    this.#receipts.report(member, kind, seq, now);
    if (kind === "seen") this.#membership.readUpTo(member, seq);
    this.#receipts.settle(now);
    return { chatId: this.#membership.requireChat().chatId, deliveredSeq: member.deliveredSeq, seenSeq: member.seenSeq };
  }

  /** Sends a member's chat-list entry to their account now (a read made on a chat socket). */
  #tellAccountItsEntry(userId: string): void {
    const entry = this.#indexEntries()(this.#membership.requireMember(userId));
    this.#memberAccount(userId)
      .chatChanged(entry)
      .catch((error: unknown) => log.warn("could not give an account its read position", describeError(error)));
  }

  /** A sender's messages moved: their sockets here get the frame now, their account (for its streams and list) through a call. */
  #receiptsMoved(userId: string, frame: ReceiptsFrame): void {
    // Catching-up sockets too: watermarks do not depend on the order of events.
    for (const ws of this.ctx.getWebSockets(userTag(userId))) {
      if (this.#sessions.get(ws)) sendFrame(ws, frame);
    }
    this.#receiptPushes.push(userId, frame);
  }

  /** Chat-list entries as of now, with each member's receipt watermarks. */
  #indexEntries(): (period: PeriodRow) => ChatIndexUpdate {
    return chatIndexEntries(this.#log, this.#membership, (userId) => this.#receipts.upTo(userId));
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
      // Former members too: they read what they saw while members, and nothing after.
      const periods = this.#membership.periodsOf(userId);
      const headSeq = this.#log.headSeq;
      const page =
        query.after !== undefined
          ? visibleAfter(this.#log, periods, query.after, query.limit, Limits.maxPageBytes)
          : visibleBefore(this.#log, periods, query.before ?? headSeq + 1, query.limit, Limits.maxPageBytes);
      // A page a current member fetched has reached one of their devices: delivered (pages are ascending).
      // Only a page that joins what they had counts (pages are ascending): a jump to the
      // newest page of a long chat does not make the messages before it delivered.
      const member = this.#membership.isMember(userId) ? this.#membership.requireMember(userId) : null;
      const [first, newest] = [page.events[0]?.seq ?? 0, page.events.at(-1)?.seq ?? 0];
      if (member && newest > member.deliveredSeq && first <= member.deliveredSeq + 1) this.#receipt(userId, "delivered", newest);
      return `{"events":[${page.json.join(",")}],"hasMore":${page.hasMore},"headSeq":${headSeq}}`;
    });
  }

  // ---- Media (RPC from the Worker, which streams the bytes; src/routes/media.ts) ----

  /**
   * Registers an upload of `userId` (a member) before its bytes are written, so a
   * crashed upload is cleaned up by the expiry; `too_many_uploads` past the pending cap.
   */
  reserveUpload(userId: string, mediaId: string, upload: { size: number; name?: string | undefined }, now = Date.now()): Outcome<Reservation> {
    return attempt(() => this.#media.reserve(userId, this.#requireUploader(userId).chatId, mediaId, upload, now));
  }

  /** Who may upload: who may post (a member; in a broadcast chat, an admin). Answers the chat. */
  #requireUploader(userId: string): { chatId: string } {
    const member = this.#membership.requireMember(userId);
    const chat = this.#membership.requireChat();
    if (chat.kind === "broadcast" && member.role !== "admin") {
      throw new AppError("admins_only", 403, "only admins post in a broadcast chat", { retryable: false });
    }
    return chat;
  }

  /** The upload's bytes are stored (type detected from its first bytes): it may be attached. */
  uploadStored(userId: string, mediaId: string, detected: DetectedMedia, now = Date.now()): Outcome<UploadResult> {
    return attempt(() => {
      this.#membership.requireChat();
      return this.#media.stored(userId, mediaId, detected, now);
    });
  }

  /**
   * An upload refused or failed: whatever R2 holds of it is deleted. `multipartOnly`:
   * a client's abort of a multipart upload still taking parts (anything else is `not_found`).
   */
  async abandonUpload(userId: string, mediaId: string, now = Date.now(), options: { multipartOnly?: boolean } = {}): Promise<Outcome<null>> {
    const abandoned = attempt(() => {
      this.#membership.requireChat();
      this.#media.abandon(userId, mediaId, now, options);
      return null;
    });
    if (abandoned.ok) {
      // At once when R2 answers; otherwise the deadline just set retries.
      await this.#media.run(now).catch((error: unknown) => log.warn("could not delete an abandoned upload yet", describeError(error)));
    }
    return abandoned;
  }

  /** Starts a multipart upload: the reservation, then R2's upload (abandoned if R2 fails). */
  async startMultipart(
    userId: string,
    mediaId: string,
    upload: { size: number; name?: string | undefined; partSize: number; partCount: number },
    now = Date.now(),
  ): Promise<Outcome<MultipartUpload>> {
    const reserved = attempt(() => {
      const { chatId } = this.#requireUploader(userId);
      const multipart = { uploadId: "", partSize: upload.partSize, partCount: upload.partCount, parts: {} };
      return this.#media.reserve(userId, chatId, mediaId, { size: upload.size, name: upload.name, multipart }, now);
    });
    if (!reserved.ok) return reserved;
    const { r2Key, expiresAt } = reserved.value;
    let uploadId: string;
    try {
      uploadId = (await this.env.MEDIA.createMultipartUpload(r2Key, { customMetadata: { chatId: this.#membership.requireChat().chatId, mediaId } })).uploadId;
    } catch (error) {
      log.warn("could not start a multipart upload", describeError(error));
      await this.abandonUpload(userId, mediaId, now);
      return failureOf(new AppError("unavailable", 503, "the upload could not be started; try again", { retryable: true }));
    }
    return attempt(() => {
      this.#media.multipartCreated(userId, mediaId, uploadId);
      return { mediaId, partSize: upload.partSize, partCount: upload.partCount, expiresAt };
    });
  }

  /** Where a part goes and how long it must be. */
  multipartPart(userId: string, mediaId: string, partNumber: number): Outcome<PartTarget> {
    return attempt(() => {
      this.#membership.requireMember(userId);
      return this.#media.partTarget(userId, mediaId, partNumber);
    });
  }

  multipartPartStored(userId: string, mediaId: string, partNumber: number, etag: string, detected: { kind: DetectedMedia["kind"]; contentType: string } | null): Outcome<null> {
    return attempt(() => {
      this.#membership.requireMember(userId);
      this.#media.partStored(userId, mediaId, partNumber, etag, detected);
      return null;
    });
  }

  /** The parts to assemble (400 while one is missing), the row marked `completing`; or, done already, its result. */
  multipartCompletion(userId: string, mediaId: string, now = Date.now()): Outcome<ReturnType<MediaRegistry["completion"]>> {
    return attempt(() => {
      this.#membership.requireMember(userId);
      return this.#media.completion(userId, mediaId, now);
    });
  }

  /**
   * A file `userId` may download: attached to a message inside one of their membership
   * periods (former members included), or their own upload not yet sent. Anyone else,
   * whatever the reason, gets `not_found`.
   */
  readableMedia(userId: string, mediaId: string): Outcome<StoredMedia> {
    return attempt(() => {
      let periods;
      try {
        periods = this.#membership.periodsOf(userId);
      } catch (error) {
        if (error instanceof AppError && error.code === "not_a_member") throw new AppError("not_found", 404, "no such media", { retryable: false });
        throw error;
      }
      return this.#media.readable(userId, mediaId, periods);
    });
  }

  /** A file a signed link names (the link was checked by the Worker; its signer's access when signed). */
  linkedMedia(mediaId: string): Outcome<StoredMedia> {
    return attempt(() => {
      this.#membership.requireChat();
      return this.#media.linked(mediaId);
    });
  }

  // ---- Device streams (RPC from members' User objects) ----

  /**
   * A device stream resumes this chat from `after` (null: the chat is new to the
   * device, which starts at the head). Subscribes the account to live pushes (small
   * chats) and returns the first page of what the device missed.
   */
  openStream(userId: string, after: number | null): Outcome<StreamPage> {
    return attempt(() => {
      if (after !== null) this.#checkStreamCursor(after);
      return this.#streams.open(userId, after);
    });
  }

  /** The next page of a device stream's catch-up. */
  streamPage(userId: string, after: number): Outcome<StreamPage> {
    return attempt(() => {
      this.#checkStreamCursor(after);
      return this.#streams.page(userId, after);
    });
  }

  #checkStreamCursor(after: number): void {
    this.#membership.requireChat();
    const headSeq = this.#log.headSeq;
    if (!Number.isSafeInteger(after) || after < 0 || after > headSeq) {
      throw new AppError("invalid_cursor", 400, `the cursor must be a seq between 0 and ${headSeq}`, { retryable: false });
    }
  }

  // ---- Membership changes (RPC from the Worker; each one event in the log) ----

  /**
   * Adds accounts (admins only). Each account's own object first says whether this
   * admin may add it, must invite it instead, or is refused (no account, or it blocked
   * the admin: then nothing changes for anyone); the rest happens in one turn.
   */
  async addMembers(actorId: string, userIds: string[], now = Date.now()): Promise<Outcome<AddMembersResult>> {
    const allowed = attempt(() => this.#membership.requireAdmin(actorId));
    if (!allowed.ok) return allowed;
    const requested = [...new Set(userIds)];
    const candidates = requested.filter((userId) => !this.#membership.isMember(userId));
    const policies = await Promise.all(candidates.map((userId) => userObject(this.env, userId).addPolicy(actorId)));
    const outcome = attempt(() => this.#changes.add(actorId, requested, candidates, policies, now));
    if (outcome.ok) await this.#deliverInvitations(outcome.value.invited, actorId, now);
    return outcome;
  }

  removeMember(actorId: string, userId: string, now = Date.now()): Outcome<ChangeResult> {
    return attempt(() => this.#changes.remove(actorId, userId, now));
  }

  leave(userId: string, now = Date.now()): Outcome<ChangeResult> {
    return attempt(() => this.#changes.leave(userId, now));
  }

  setRole(actorId: string, userId: string, role: MemberRole, now = Date.now()): Outcome<ChangeResult> {
    return attempt(() => this.#changes.setRole(actorId, userId, role, now));
  }

  update(actorId: string, patch: UpdateChatRequest, now = Date.now()): Outcome<ChangeResult> {
    return attempt(() => this.#changes.update(actorId, patch, now));
  }

  acceptInvitation(userId: string, now = Date.now()): Outcome<ChangeResult> {
    return attempt(() => this.#changes.acceptInvitation(userId, now));
  }

  /** An invited account declines: the invitation is gone (nothing is written to the log). */
  declineInvitation(userId: string): void {
    if (this.#membership.chat) this.#membership.takeInvitation(userId, 0);
  }

  /**
   * Records a block between the two members of a direct chat: neither may send while
   * it lasts. A chat that does not exist stays that way (nothing is written).
   */
  setBlock(blockerId: string, blockedId: string, on: boolean): void {
    const chat = this.#membership.chat;
    if (chat?.kind !== "direct" || !this.#membership.isMember(blockerId)) return;
    this.#membership.setBlock(blockerId, blockedId, on);
  }

  /** Rows of fan-out state: one per membership period, whatever the number of messages. */
  fanOutStateRows(): number {
    return this.#membership.chat ? this.#membership.periodRowCount() : 0;
  }

  /**
   * A member's User object, its stub kept for the next round (at most one per member:
   * deriving the id hashes the name, and each round calls every member behind).
   */
  #memberAccount(userId: string): DurableObjectStub<User> {
    let stub = this.#accountStubs.get(userId);
    if (!stub) {
      if (this.#accountStubs.size >= Limits.maxGroupMembers * 2) this.#accountStubs.clear();
      stub = userObject(this.env, userId);
      this.#accountStubs.set(userId, stub);
    }
    return stub;
  }

  /** After a membership or chat change: the members' sockets get the events, their accounts the news. */
  #changed(events: ChatEvent[], now: number): void {
    for (const event of events) {
      if (event.type === "member.removed") this.#receipts.forget(event.userId);
      else if (event.type === "member.left") this.#receipts.forget(event.actorId);
    }
    // A member who left no longer holds anyone's messages back.
    this.#receipts.settle(now);
    this.#sessions.broadcast(events, () => this.ctx.storage.sync());
    this.#streams.committed();
    // Membership and names change what lists show beyond the head: no waiting.
    this.#fanOut.committed(now, true);
  }

  // ---- Deletes ----

  /**
   * Deletes the message at `seq` for everyone, as `userId` (REST, and the device stream
   * through the account): see Deletes for who may. The `message.deleted` event reaches
   * the chat's sockets, the streams and every member's list (its preview) at once. It
   * answers once the message's files are deleted from R2 too (when R2 fails, the answer
   * does not wait: the scheduler retries, and the files are unreadable already).
   */
  async deleteForEveryone(userId: string, seq: number, now = Date.now()): Promise<Outcome<DeletedForEveryone>> {
    const outcome = attempt(() => this.#deletes.forEveryone(userId, seq, now));
    if (!outcome.ok) return outcome;
    if (outcome.value.event) await this.#deleted(outcome.value.event, seq, now);
    return succeed(outcome.value.result);
  }

  /**
   * After a delete for everyone was stored: everyone hears of it in this turn; the
   * returned promise settles when the files' R2 objects are deleted (or the retry is set).
   */
  #deleted(event: ChatEvent, targetSeq: number, now: number): Promise<void> {
    const released = this.#releaseAttachments(targetSeq, now);
    this.#sessions.broadcast([event], () => this.ctx.storage.sync());
    this.#streams.committed();
    // The previews of every member's list change: no waiting for the interval.
    this.#fanOut.committed(now, true);
    this.#tellFormerMembers(targetSeq);
    return released;
  }

  /**
   * Former members who saw the message no longer hear of the chat, but their list may
   * still preview it: their accounts drop its content if so. A notice that fails is
   * retried from the scheduler (see FormerPreviewNotices).
   */
  #tellFormerMembers(targetSeq: number): void {
    this.#formerPreviews.send(this.#membership.formerMembersWhoSaw(targetSeq, Limits.maxGroupMembers), targetSeq);
  }

  /**
   * Whether `userId` could see a message at `seq` (RPC from their account before it
   * hides one for itself): `not_found` / `not_a_member` / `chat_not_found`, writing nothing.
   */
  checkVisibleMessage(userId: string, seq: number): Outcome<null> {
    return attempt(() => {
      this.#deletes.visible(userId, seq);
      return null;
    });
  }

  /** The chat socket's `delete`: for me, this chat checks the message, then the member's account hides it. */
  #deleteMessage(userId: string, seq: number, scope: DeleteScope, respond: (outcome: Outcome<DeleteResult>) => void): void {
    if (scope === "everyone") {
      // As for a send, the deleting socket gets its reply before the event.
      const now = Date.now();
      const outcome = attempt(() => this.#deletes.forEveryone(userId, seq, now));
      respond(outcome.ok ? succeed(outcome.value.result) : outcome);
      if (outcome.ok && outcome.value.event) void this.#deleted(outcome.value.event, seq, now);
      return;
    }
    const checked = this.checkVisibleMessage(userId, seq);
    if (!checked.ok) return respond(checked);
    const chatId = this.#membership.requireChat().chatId;
    this.#memberAccount(userId)
      .hideMessage(chatId, seq)
      .then(
        (outcome: Outcome<DeletedForMe>) => respond(outcome),
        (error: unknown) => respond(failureOf(error, { object: "ChatRoom", during: "delete for me" })),
      );
  }

  /** The deleted message's files leave storage (their R2 objects are deleted). */
  #releaseAttachments(targetSeq: number, now: number): Promise<void> {
    // The files turn `deleting` in this turn (no one can download them from here on);
    // their R2 objects are deleted after it, a failure retried by the scheduler.
    return this.#media.releaseMessage(targetSeq, now).catch((error: unknown) => log.warn("could not release a deleted message's media", describeError(error)));
  }

  /** Puts an invitation in each invited account's list (a failure is logged: the admin may invite again). */
  async #deliverInvitations(userIds: string[], invitedBy: string, now: number): Promise<void> {
    const chat = this.#membership.chat;
    if (userIds.length === 0 || !chat || chat.kind === "direct") return;
    const invitation = { chatId: chat.chatId, kind: chat.kind, name: chat.name, invitedBy, createdAt: now };
    const results = await Promise.allSettled(userIds.map((userId) => userObject(this.env, userId).receiveInvitation(invitation)));
    for (const result of results) {
      if (result.status === "rejected") log.warn("could not deliver an invitation", describeError(result.reason));
    }
  }

  /** A revoked device's sockets close at once. */
  closeDeviceSockets(deviceId: string): number {
    return this.#sessions.closeTagged(deviceTag(deviceId), CloseCode.deviceRevoked, "device_revoked");
  }

  override async alarm(): Promise<void> {
    await this.#scheduler.run();
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
      ...this.#receipts.upTo(identity.userId),
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
    // Catch-up shows only the member's periods; from the head, the socket is live.
    return { session: { ...base, cursor: after, live: after >= headSeq }, role: member.role };
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    this.#frames.receive(ws, message);
  }

  override async webSocketClose(ws: WebSocket, code: number): Promise<void> {
    this.#sessions.closed(ws, code);
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    this.#sessions.failed(ws, error);
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
    // One's own messages are never unread: each sender has read up to its last message
    // of the batch (one UPDATE per sender, not per message, in the same commit).
    const lastBySender = new Map<string, number>();
    for (const event of stored) if (event.type === "message") lastBySender.set(event.senderId, event.seq);
    for (const userId of lastBySender.keys()) this.#typing.sent(userId);
    for (const [userId, seq] of lastBySender) this.#membership.readUpTo(this.#membership.requireMember(userId), seq);
    batch.forEach(({ respond }, index) => respond(outcomes[index]!));
    this.#sessions.broadcast(stored, () => this.ctx.storage.sync());
    if (stored.length > 0) {
      this.#streams.committed();
      this.#fanOut.committed(now);
    }
  }

  #storeMessage(sender: Sender, input: SendMessageRequest, now: number, stored: ChatEvent[]): SendResult {
    const member = this.#membership.requireMember(sender.userId);
    const chat = this.#membership.requireChat();
    if (chat.kind === "broadcast" && member.role !== "admin") {
      throw new AppError("admins_only", 403, "only admins post in a broadcast chat", { retryable: false });
    }
    // Whether this is a retry of a stored send (looked up once, only when a check needs it):
    // a retry gets its original ack whatever changed since (rate, block, deleted reply, attached files).
    let retry: boolean | undefined;
    const isRetry = (): boolean => (retry ??= this.#log.findByClientId(sender.deviceId, input.clientId) !== null);
    const waitMs = Math.max(this.#sendRate.waitMs(sender.userId, now), this.#accountLeases.waitMs(sender.userId, now));
    if (waitMs > 0 && !isRetry()) throw new AppError("rate_limited", 429, "sending too fast", { retryAfterMs: waitMs });
    if (chat.kind === "direct" && this.#membership.blocked && !isRetry()) {
      throw new AppError("blocked", 403, "one of you blocked the other: no messages until unblocked", { retryable: false });
    }
    if (input.replyToSeq !== undefined) this.#checkReplyTarget(input.replyToSeq, member.joinedSeq, isRetry);
    const attachments = input.attachments && !isRetry() ? this.#media.resolve(sender.userId, input.attachments) : undefined;
    const { event, duplicate } = this.#log.appendMessage(sender, input, now, attachments);
    if (!duplicate) {
      // In the same turn as the append: no other send can attach them in between.
      if (attachments) this.#media.attach(attachments.map((attachment) => attachment.mediaId), event.seq);
      this.#sendRate.take(sender.userId, now);
      this.#accountLeases.take(sender.userId);
      stored.push(event);
    }
    return { seq: event.seq, messageId: event.messageId, createdAt: event.createdAt, duplicate };
  }

  #checkReplyTarget(replyToSeq: number, visibleFrom: number, isRetry: () => boolean): void {
    const target = replyToSeq >= visibleFrom ? this.#log.messageAt(replyToSeq) : null;
    if (!target) {
      throw new AppError("invalid_reply", 400, `replyToSeq ${replyToSeq} is not a message of this chat`, { retryable: false });
    }
    // A deleted message cannot be quoted; a retry of a reply stored before the delete still gets its ack.
    if (target.deletedSeq !== null && !isRetry()) {
      throw new AppError("invalid_reply", 400, `the message at replyToSeq ${replyToSeq} was deleted`, { retryable: false });
    }
  }
}
