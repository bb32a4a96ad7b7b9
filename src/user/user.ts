import { DurableObject } from "cloudflare:workers";
import { drizzle, type DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import migrations from "../../migrations/user/migrations.js";
import { applyMigrations, hasSchema } from "../db/apply-migrations.ts";
import * as schema from "../db/user-schema.ts";
import { AppError } from "../lib/app-error.ts";
import { describeError, log } from "../lib/log.ts";
import { attempt, type Outcome } from "../lib/result.ts";
import { OpenChatSockets } from "./open-chat-sockets.ts";
import { TokenBuckets } from "../lib/token-buckets.ts";
import { configFrom } from "../lib/config.ts";
import type { SendGrant } from "../chat-room/account-send-leases.ts";
import type { AddPolicy } from "../chat-room/add-refusals.ts";
import type { DeletedForMe, HiddenPage, HiddenQuery, ReceiptsFrame, TypingNotice, BlockList, ChatIndexUpdate, ChatList, ChatListQuery, ChatSettingsPatch, ChatSummary, Device, Invitation, InvitationList, Me, Presence, Profile, ProfilePatch } from "../protocol/index.ts";
import { ChatIndex } from "./chat-index.ts";
import { Devices, type IssuedDevice, type Rotation } from "./devices.ts";
import { AccountProfile } from "./profile.ts";
import { AvatarPictures } from "./avatar-pictures.ts";
import { Scheduler } from "../lib/scheduler.ts";
import { Limits } from "../protocol/index.ts";
import { Blocks } from "./blocks.ts";
import { Invitations } from "./invitations.ts";
import { countInstanceStart } from "../lib/instance-starts.ts";
import { fanOutInterval } from "../chat-room/fan-out-pacing.ts";
import { DeviceStreams, type StreamSession } from "./device-streams.ts";
import { streamCommands, type StreamCommands } from "./stream-commands.ts";
import { FrameDispatcher } from "../sockets/frame-dispatch.ts";
import { deviceTag } from "../sockets/attachments.ts";
import { sendFrame } from "../sockets/socket-io.ts";
import { ForwardedIdentity } from "../lib/forwarded-identity.ts";
import { refuseUpgrade, upgradeResponse } from "../lib/upgrade-response.ts";
import { failureOf } from "../lib/failure.ts";
import { CloseCode, Heartbeat, StreamClientFrame } from "../protocol/index.ts";
import type { StreamPush } from "../chat-room/stream-pushes.ts";
import type { ChatRoom } from "../chat-room/chat-room.ts";
import { AccountPresence } from "./presence.ts";
import { PresenceSubscriptions } from "./presence-subscriptions.ts";
import { isMintedId } from "../lib/minted-id.ts";
import { OfflineNotifications } from "./offline-notifications.ts";
import { HiddenMessages } from "./hidden-messages.ts";


/**
 * One object per account (`idFromName(userId)`): profile, devices with their hashed
 * refresh tokens, the index of the account's chats, the device streams and presence.
 */
export class User extends DurableObject<Env> {
  readonly #db: DrizzleSqliteDODatabase<typeof schema>;
  /**
   * False until the account's first login creates its tables. An object addressed by
   * an id with no account answers "not found" from every method and writes nothing.
   */
  #exists = false;
  readonly #profile: AccountProfile;
  readonly #devices: Devices;
  readonly #openChatSockets: OpenChatSockets;
  readonly #chatIndex: ChatIndex;
  readonly #blocks: Blocks;
  readonly #invitations: Invitations;
  /** Messages the account deleted for itself. */
  readonly #hidden: HiddenMessages;
  /** The object's deadlines behind its one alarm. */
  readonly #scheduler: Scheduler<"invitation-expiry" | "presence-sweep" | "offline-notifications" | "avatar-cleanup">;
  /** The profile picture objects in R2 (pending, replaced), so none is left behind. */
  readonly #pictures: AvatarPictures;
  readonly #notifications: OfflineNotifications;
  /** The account's send bucket, shared by all its chats (in memory, like every rate limit). */
  #sendBudget: TokenBuckets | null = null;
  readonly #streams: DeviceStreams;
  /** This account's presence, and who watches it (src/user/presence.ts). */
  readonly #presence: AccountPresence;
  /** Whom this account's streams watch. */
  readonly #watching: PresenceSubscriptions;
  #userId: string | null = null;
  readonly #streamFrames: FrameDispatcher<StreamCommands, StreamSession, StreamClientFrame>;
  /** Stubs of the chats this account's streams talk to (one per chat: calls on one stub arrive in order). */
  readonly #chatStubs = new Map<string, DurableObjectStub<ChatRoom>>();
  /**
   * What stream frames may do, as a private object rather than public methods: a
   * public method of a Durable Object can be called by anyone holding a stub, over RPC.
   */
  readonly #streamContext: StreamCommands = {
    resume: (ws, session, cursors, since, respond) => {
      this.#streams.resume(ws, session, cursors, since).then(
        ({ result, announced }) => {
          respond({ ok: true, value: result });
          this.#streams.startCatchUp(ws, announced, since);
        },
        (error: unknown) => respond(failureOf(error, { object: "User", during: "resume" })),
      );
    },
    sync: (ws) => this.#streams.sync(ws),
    send: (session, chatId, input, respond) => {
      // Only chats in the account's list are asked: a made-up id wakes no object.
      if (!this.#chatIndex.get(chatId)) return respond(notYourChat());
      this.#chatRoom(chatId)
        .send({ userId: session.userId, deviceId: session.deviceId }, input)
        .then(respond, (error: unknown) => respond(failureOf(error, { object: "User", during: "stream send" })));
    },
    read: (chatId, seq, respond) => {
      if (!this.#chatIndex.get(chatId)) return respond(notYourChat());
      this.markRead(chatId, seq).then(respond, (error: unknown) => respond(failureOf(error, { object: "User", during: "stream read" })));
    },
    delivered: (chatId, seq, respond) => {
      if (!this.#chatIndex.get(chatId)) return respond(notYourChat());
      this.#chatRoom(chatId)
        .reportDelivered(this.#ownId(), seq)
        .then(respond, (error: unknown) => respond(failureOf(error, { object: "User", during: "stream delivered" })));
    },
    typing: (chatId, state, respond) => {
      if (!this.#chatIndex.get(chatId)) return respond(notYourChat());
      this.#chatRoom(chatId)
        .typing(this.#ownId(), state)
        .then(respond, (error: unknown) => respond(failureOf(error, { object: "User", during: "stream typing" })));
    },
    status: (chatId, seq, respond) => {
      if (!this.#chatIndex.get(chatId)) return respond(notYourChat());
      this.#chatRoom(chatId)
        .messageStatus(this.#ownId(), seq)
        .then(respond, (error: unknown) => respond(failureOf(error, { object: "User", during: "stream status" })));
    },
    deleteMessage: (chatId, seq, scope, respond) => {
      if (!this.#chatIndex.get(chatId)) return respond(notYourChat());
      const deleted =
        scope === "everyone" ? this.#chatRoom(chatId).deleteForEveryone(this.#ownId(), seq) : this.deleteForMe(chatId, seq);
      deleted.then(respond, (error: unknown) => respond(failureOf(error, { object: "User", during: "stream delete" })));
    },
    appState: (ws, state) => ({ state: this.#presence.setAppState(ws, state) }),
    watchPresence: (ws, watch, respond) => {
      this.#watching.subscribe(ws, watch).then(
        (value) => respond({ ok: true, value }),
        (error: unknown) => respond(failureOf(error, { object: "User", during: "presence subscribe" })),
      );
    },
  };

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    countInstanceStart("User");
    this.#db = drizzle(ctx.storage, { schema });
    this.#profile = new AccountProfile(this.#db);
    this.#devices = new Devices(this.#db);
    this.#openChatSockets = new OpenChatSockets(ctx.storage);
    this.#hidden = new HiddenMessages(this.#db);
    this.#chatIndex = new ChatIndex(this.#db, (chatId, seq) => this.#hidden.isHidden(chatId, seq));
    this.#blocks = new Blocks(this.#db);
    this.#invitations = new Invitations(this.#db);
    this.#scheduler = new Scheduler(ctx.storage, {
      "invitation-expiry": (now) => this.#expireInvitations(now),
      "presence-sweep": (now) => this.#presence.sweep(now),
      "offline-notifications": (now) => this.#notifications.run(now),
      "avatar-cleanup": (now) => (this.#exists ? this.#pictures.clean(now) : undefined),
    });
    this.#pictures = new AvatarPictures({
      storage: ctx.storage,
      profile: this.#profile,
      bucket: env.MEDIA,
      userId: () => this.#ownId(),
      schedule: (at) => this.#scheduler.noLaterThan("avatar-cleanup", at),
    });
    this.#notifications = new OfflineNotifications({
      storage: ctx.storage,
      settings: configFrom(env).notify,
      userId: () => this.#ownId(),
      entry: (chatId) => this.#chatIndex.get(chatId),
      undelivered: (chatId) => this.#chatRoom(chatId).undelivered(this.#ownId()),
      schedule: (at) => this.#scheduler.noLaterThan("offline-notifications", at),
    });
    this.#streams = new DeviceStreams(ctx, {
      entries: () => this.#chatIndex.streamEntries(),
      summary: (chatId) => this.#chatIndex.get(chatId),
      open: (chatId, after) => this.#chatRoom(chatId).openStream(this.#ownId(), after),
      page: (chatId, after) => this.#chatRoom(chatId).streamPage(this.#ownId(), after),
      receiptsSince: (since) => this.#chatIndex.receiptsSince(since),
      hiddenAfter: (after, limit) => this.#hidden.page(after, limit),
      // Past the longest interval between a chat's fan-out rounds, twice: the next event
      // of a chat quiet that long reaches this account at once.
      quietAfterMs: 2 * fanOutInterval(configFrom(env).fanOutIntervalMs, Limits.maxGroupMembers),
    });
    const streams = this.#streams;
    const isMemberOf = (chatId: string) => this.#exists && this.#chatIndex.get(chatId)?.membership === "member";
    const hidesLastSeen = () => this.#exists && this.#profile.hidesLastSeen();
    this.#presence = new AccountPresence({
      ctx,
      streams: () => streams.entries(),
      saveStream: (ws, session) => streams.save(ws, session),
      heartbeatMs: configFrom(env).heartbeatMs,
      exists: () => this.#exists,
      ownId: () => this.#ownId(),
      hidesLastSeen,
      isMemberOf,
      blocks: (userId) => this.#exists && this.#blocks.has(userId),
      sweepBy: (at) => this.#scheduler.noLaterThan("presence-sweep", at),
      tell: (watcherId, presence) => this.#userObject(watcherId).presenceChanged(presence),
    });
    this.#watching = new PresenceSubscriptions({
      streams: () => streams.entries(),
      session: (ws) => streams.get(ws),
      saveStream: (ws, session) => streams.save(ws, session),
      ownId: () => this.#ownId(),
      hidesLastSeen,
      isMemberOf,
      isIssuedUserId: (userId) => isMintedId(configFrom(env).hmacSecret, "u", userId),
      watch: (userId, chatId) => this.#userObject(userId).watchPresence(this.#ownId(), chatId),
    });
    this.#streamFrames = new FrameDispatcher({
      frames: StreamClientFrame,
      commands: streamCommands,
      context: this.#streamContext,
      sessions: this.#streams,
      maxFrameBytes: Limits.maxFrameBytes,
      object: "User",
      frameRate: { perSecond: Limits.streamFramesPerSecond, burst: Limits.streamFrameBurst },
    });
    // Heartbeats are answered by the runtime itself: an idle account never wakes for them.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(Heartbeat.request, Heartbeat.response));
    void ctx.blockConcurrencyWhile(async () => {
      if (hasSchema(ctx.storage)) await this.#openStorage();
    });
  }

  async #openStorage(): Promise<void> {
    await applyMigrations(this.#db, this.ctx.storage, migrations);
    this.#exists = true;
  }

  /** Creates the account on its first login; returns it either way. */
  async ensureAccount(userId: string, phone: string, now = Date.now()): Promise<Me> {
    if (!this.#exists) await this.#openStorage();
    this.#profile.create(userId, phone, now);
    return this.me();
  }

  me(): Me {
    const me = this.#exists ? this.#profile.me() : null;
    if (!me) throw new AppError("not_found", 404, "no such account");
    return me;
  }

  /** What other users may see. Null when this id has no account. */
  publicProfile(): Profile | null {
    return this.#exists ? this.#profile.public() : null;
  }

  updateProfile(patch: ProfilePatch): Me {
    this.me(); // an account that does not exist is not created by a patch
    this.#profile.update(patch);
    if (patch.hideLastSeen !== undefined) this.#presence.settingsChanged();
    return this.me();
  }

  // ---- Profile picture (the bytes are in R2: src/routes/avatars.ts) ----

  /**
   * Before the Worker writes a new picture's object: records its id, so the object is
   * deleted after `PENDING_AVATAR_MS` unless `setAvatar` takes it (src/user/avatar-pictures.ts).
   */
  reserveAvatar(avatarId: string, now = Date.now()): void {
    this.me(); // an account that does not exist is not created here
    this.#pictures.reserve(avatarId, now);
  }

  /**
   * Sets (null: removes) the account's picture (a reserved one); answers the id it
   * replaces, whose object this object deletes (retried by its alarm while R2 fails).
   */
  async setAvatar(avatarId: string | null, now = Date.now()): Promise<{ previous: string | null; me: Me }> {
    this.me(); // an account that does not exist is not created here
    const previous = await this.#pictures.set(avatarId, now);
    return { previous, me: this.me() };
  }

  /**
   * RPC from the account `viewerId`, a member of `chatId`: this account's picture id
   * when it may see it (the same check as presence: a member of that chat here, not
   * blocking the viewer); null otherwise, or when there is none. Nothing is stored.
   */
  avatarFor(viewerId: string, chatId: string): string | null {
    if (!this.#exists || !this.#isMemberOf(chatId) || this.#blocks.has(viewerId)) return null;
    return this.#profile.avatarId();
  }

  /**
   * GET /api/users/:userId/avatar?chatId=: the picture id of `userId`, who must share
   * `chatId` with this account (each side checks its own list, as for presence).
   * `not_found` otherwise, and when there is no picture.
   */
  async avatarOf(userId: string, chatId: string): Promise<Outcome<string>> {
    const refused = () => failureOf(new AppError("not_found", 404, "no picture of that user in that chat", { retryable: false }));
    if (!this.#exists) return refused();
    if (userId === this.#ownId()) {
      const own = this.#profile.avatarId();
      return own ? { ok: true, value: own } : refused();
    }
    if (!this.#isMemberOf(chatId)) return refused();
    const avatarId = await this.#userObject(userId).avatarFor(this.#ownId(), chatId);
    return avatarId ? { ok: true, value: avatarId } : refused();
  }

  #isMemberOf(chatId: string): boolean {
    return this.#chatIndex.get(chatId)?.membership === "member";
  }

  /** A new login: a device and its first refresh token. */
  createDevice(name: string, now = Date.now()): Promise<IssuedDevice> {
    return this.#devices.create(this.me().userId, name, now);
  }

  /** Trades a refresh token for a new one (see Devices.rotate); reuse revokes the device and closes its sockets. */
  async rotateRefreshToken(userId: string, token: string, now = Date.now()): Promise<Outcome<Rotation>> {
    let reusedBy: string | null = null;
    const rotate = await this.#devices.rotate(userId, token, configFrom(this.env).hmacSecret, now, (deviceId) => {
      reusedBy = deviceId;
    });
    const outcome = attempt(() => {
      if (!this.#exists) throw new AppError("invalid_refresh_token", 401, "unknown refresh token");
      return rotate();
    });
    if (reusedBy) await this.#closeDeviceSockets(reusedBy);
    return outcome;
  }

  /**
   * Called on every authenticated request: a revoked device is refused at once. For a
   * chat socket, `socket` says which chat it opens and until when its token is valid,
   * so a later revocation knows where to close it.
   */
  checkDevice(deviceId: string, socket?: { chatId: string; expiresAt: number }, now = Date.now()): Outcome<null> {
    return attempt(() => {
      if (!this.#exists) throw new AppError("device_revoked", 401, "this device was logged out");
      this.#devices.check(deviceId, now);
      if (socket) this.#openChatSockets.record(deviceId, socket.chatId, socket.expiresAt, now);
      return null;
    });
  }

  listDevices(currentDeviceId: string): Device[] {
    return this.#devices.list(currentDeviceId);
  }

  /** Logs a device out everywhere: its tokens are refused and its open sockets closed. */
  async revokeDevice(deviceId: string, now = Date.now()): Promise<Outcome<null>> {
    const outcome = attempt(() => {
      this.#devices.revoke(deviceId, now);
      return null;
    });
    if (outcome.ok) await this.#closeDeviceSockets(deviceId);
    return outcome;
  }

  /**
   * Tokens of the account's send bucket for a chat to spend (see AccountSendLeases):
   * up to `requested`, or none and when to ask again.
   */
  grantSends(requested: number, now = Date.now()): SendGrant {
    if (!this.#exists) return { granted: 0, retryAfterMs: 60_000 };
    const { ratePerSecond, burst } = configFrom(this.env).accountSend;
    this.#sendBudget ??= new TokenBuckets(ratePerSecond, burst);
    // A quarter of the burst at most per lease, so tokens one chat holds but does not
    // spend cannot starve the account's other chats for long.
    return this.#sendBudget.grant("account", now, Math.min(requested, Math.max(1, Math.floor(burst / 4))));
  }

  // ---- Chat list (kept current by each chat's fan-out) ----

  /**
   * A chat's news for this account's list, merged by max(headSeq) (retries and late
   * arrivals never go backwards). An id with no account acknowledges and stores
   * nothing: there is no one to tell.
   */
  chatChanged(update: ChatIndexUpdate, now = Date.now()): void {
    if (!this.#exists) return;
    // The entry before the update tells the streams whether the account just joined.
    const previous = this.#streams.size > 0 ? this.#chatIndex.get(update.chatId) : null;
    const summary = this.#chatIndex.update(update, now);
    if (summary) this.#inboxChanged(summary, previous);
    this.#notifications.chatChanged(update, summary, now);
  }

  /**
   * The account read a chat up to `seq`, on one of its devices: the chat records it
   * (it keeps read positions) and answers the entry, which is stored and synced here.
   */
  async markRead(chatId: string, seq: number, now = Date.now()): Promise<Outcome<ChatSummary>> {
    const me = attempt(() => this.me());
    if (!me.ok) return me;
    const read = await this.#chatRoom(chatId).markRead(me.value.userId, seq);
    if (!read.ok) return read;
    // Stored through the same merge as the fan-out's updates: a later one may have landed meanwhile.
    this.#chatIndex.update(read.value, now);
    const summary = this.#chatIndex.get(chatId)!;
    this.#inboxChanged(summary);
    return { ok: true, value: summary };
  }

  /** The account's own settings of a chat in its list (pinned, muted, archived); the chat is not told. */
  updateChatSettings(chatId: string, patch: ChatSettingsPatch): Outcome<ChatSummary> {
    return attempt(() => {
      if (!this.#exists) throw new AppError("chat_not_found", 404, "no such chat in your list", { retryable: false });
      const summary = this.#chatIndex.updateSettings(chatId, patch);
      this.#inboxChanged(summary);
      return summary;
    });
  }

  /** The single place where a change to the chat list leaves for the account's devices. */
  #inboxChanged(summary: ChatSummary, previous: ChatSummary | null = summary): void {
    this.#streams.chatChanged(previous, summary);
  }

  // ---- Device streams (GET /chat) ----

  /**
   * Opens a device stream: the Worker verified the token's signature, and the device is
   * checked here, where its record is (no other object is asked).
   */
  override async fetch(request: Request): Promise<Response> {
    if (request.headers.get("Upgrade")?.toLowerCase() !== "websocket") {
      return Response.json({ error: { code: "validation_failed", message: "expected a WebSocket upgrade", retryable: false } }, { status: 426 });
    }
    const now = Date.now();
    const opened = attempt(() => {
      const identity = ForwardedIdentity.read(request.headers);
      if (!this.#exists || this.#ownId() !== identity.userId) throw new AppError("device_revoked", 401, "this device was logged out");
      this.#devices.check(identity.deviceId, now);
      return identity;
    });
    if (!opened.ok) return refuseUpgrade(request.headers, opened.error);
    const { userId, deviceId, tokenExpiresAt } = opened.value;
    const [client, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
    this.#streams.accept(
      server,
      { userId, deviceId, openedAt: now, expiresAt: tokenExpiresAt, phase: "new", appState: "foreground", watching: [], watchUntil: 0 },
      Limits.maxStreamsPerDevice,
    );
    sendFrame(server, { type: "stream.ready", userId, deviceId, heartbeatMs: configFrom(this.env).heartbeatMs });
    this.#presence.changed(now);
    return upgradeResponse(request.headers, client);
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    const now = Date.now();
    this.#presence.heard(ws, now);
    this.#streamFrames.receive(ws, message, now);
  }

  override async webSocketClose(ws: WebSocket, code: number): Promise<void> {
    const session = this.#streams.get(ws);
    this.#streams.closed(ws, code);
    this.#streamEnded(ws, session);
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    const session = this.#streams.get(ws);
    this.#streams.failed(ws, error);
    this.#streamEnded(ws, session);
  }

  #streamEnded(ws: WebSocket, session: StreamSession | undefined): void {
    this.#watching.forget(ws);
    this.#presence.ended(ws, session);
  }

  // ---- Presence (src/user/presence.ts) ----

  /**
   * RPC from the account `watcherId`, which is a member of `chatId`: this account's
   * presence, and its changes pushed to the watcher for `Limits.presenceLeaseMs`. Null
   * (and nothing stored) when this account is not a member of that chat, blocked the
   * watcher, or does not exist.
   */
  watchPresence(watcherId: string, chatId: string): Presence | null {
    return this.#presence.presenceFor(watcherId, chatId, true);
  }

  /** As `watchPresence`, without a subscription (REST). */
  presenceFor(watcherId: string, chatId: string): Presence | null {
    return this.#presence.presenceFor(watcherId, chatId, false);
  }

  /** RPC from an account this one watches: to the streams watching it. False when none does (the lease is dropped). */
  presenceChanged(presence: Presence): boolean {
    if (!this.#exists) return false;
    return this.#watching.deliver(presence);
  }

  /**
   * GET /api/users/:userId/presence?chatId=: the presence of `userId`, who must share
   * `chatId` with this account (each side checks its own list). `not_found` otherwise,
   * whether or not the account exists.
   */
  async presenceOf(userId: string, chatId: string): Promise<Outcome<Presence>> {
    const refused = () => failureOf(new AppError("not_found", 404, "no such user in that chat", { retryable: false }));
    if (!this.#exists || userId === this.#ownId() || this.#chatIndex.get(chatId)?.membership !== "member") return refused();
    const presence = await this.#userObject(userId).presenceFor(this.#ownId(), chatId);
    if (!presence) return refused();
    if (presence.lastSeenAt !== undefined && this.#profile.hidesLastSeen()) return { ok: true, value: { userId: presence.userId, online: presence.online } };
    return { ok: true, value: presence };
  }

  #userObject(userId: string): DurableObjectStub<User> {
    return this.env.USER.get(this.env.USER.idFromName(userId)) as DurableObjectStub<User>;
  }

  /**
   * The account's own messages in a chat moved (RPC from the ChatRoom): stored in the
   * chat list (merged by max) and sent to the streams that are live.
   */
  receiptsChanged(frame: ReceiptsFrame, now = Date.now()): void {
    if (!this.#exists) return;
    const moved = this.#chatIndex.receiptsMoved(frame, now);
    if (moved) this.#streams.sendToResumed(moved);
  }

  /**
   * A message of a chat this account left was deleted for everyone (RPC from the
   * ChatRoom): the list's preview of it, if any, shows it deleted, on every device.
   */
  messageDeleted(chatId: string, seq: number): void {
    if (!this.#exists) return;
    const summary = this.#chatIndex.previewDeleted(chatId, seq);
    if (summary) this.#inboxChanged(summary);
  }

  // ---- Delete for me (src/user/hidden-messages.ts) ----

  /**
   * Hides the message at `seq` of `chatId` for this account, on all its devices (REST and
   * the device stream). The chat must be in the account's list (`not_a_member`, asking no
   * chat otherwise), and the chat says whether the account could see such a message
   * (`not_found`), writing nothing: only a real message of a real chat is stored.
   */
  async deleteForMe(chatId: string, seq: number, now = Date.now()): Promise<Outcome<DeletedForMe>> {
    if (!this.#exists || !this.#chatIndex.get(chatId)) return notYourChat();
    const existing = this.#hidden.find(chatId, seq);
    if (existing) return { ok: true, value: { ...existing, for: "me", duplicate: true } };
    const checked = await this.#chatRoom(chatId).checkVisibleMessage(this.#ownId(), seq);
    if (!checked.ok) return checked;
    return this.hideMessage(chatId, seq, now);
  }

  /**
   * Records a hidden message the chat has checked (RPC from the ChatRoom, for a chat
   * socket's `delete`, and from `deleteForMe`): every resumed stream of the account gets
   * it at once. `cap` is `Limits.maxHiddenMessages` (tests pass a lower one).
   */
  hideMessage(chatId: string, seq: number, now = Date.now(), cap: number = Limits.maxHiddenMessages): Outcome<DeletedForMe> {
    if (!this.#exists || !this.#chatIndex.get(chatId)) return notYourChat();
    return attempt(() => {
      const { entry, duplicate } = this.#hidden.hide(chatId, seq, now, cap);
      if (!duplicate) {
        this.#streams.sendToResumed({ type: "hidden", entries: [entry], more: false });
        // The chat list's preview of that message keeps no content of it, on every device.
        const summary = this.#chatIndex.previewHidden(chatId, seq);
        if (summary) this.#inboxChanged(summary);
      }
      return { ...entry, for: "me" as const, duplicate };
    });
  }

  /** GET /api/me/hidden: the account's hidden messages after `after`, in hiddenNo order. */
  hiddenPage(query: HiddenQuery): HiddenPage {
    if (!this.#exists) return { entries: [], hasMore: false, headHiddenNo: 0 };
    return this.#hidden.page(query.after, query.limit);
  }

  /** A member of one of the account's chats is typing or stopped (RPC from the ChatRoom): to the live streams, nothing stored. */
  typingChanged(notice: TypingNotice): void {
    this.#streams.sendToResumed(notice);
  }

  /** A chat's new events for the account's streams (RPC from the ChatRoom); false when none is open. */
  streamEvents(push: StreamPush): boolean {
    return this.#streams.deliver(push);
  }

  /** This account's id (it never changes once the account exists): read once, not per stream frame. */
  #ownId(): string {
    return (this.#userId ??= this.me().userId);
  }

  #chatRoom(chatId: string): DurableObjectStub<ChatRoom> {
    let stub = this.#chatStubs.get(chatId);
    if (!stub) {
      if (this.#chatStubs.size >= 4096) this.#chatStubs.clear();
      stub = this.env.CHAT_ROOM.get(this.env.CHAT_ROOM.idFromName(chatId));
      this.#chatStubs.set(chatId, stub);
    }
    return stub;
  }

  listChats(query: ChatListQuery): ChatList {
    if (!this.#exists) return { chats: [] };
    return this.#chatIndex.list(query);
  }

  // ---- Who may add this account to groups ----

  /**
   * What happens when `adderId` adds this account to a group: it is added, gets an
   * invitation instead (its `groupAdd` setting), or the add is refused (no such
   * account, or it blocked the adder).
   */
  addPolicy(adderId: string): AddPolicy {
    const groupAdd = this.#exists ? this.#profile.groupAdd() : null;
    if (!groupAdd) return "missing";
    if (this.#blocks.has(adderId)) return "blocked";
    if (groupAdd === "everyone") return "allow";
    if (groupAdd === "contacts" && this.#chatIndex.hasDirectChatWith(adderId)) return "allow";
    return "invite";
  }

  receiveInvitation(invitation: Invitation, now = Date.now()): void {
    if (!this.#exists) return;
    this.#invitations.add(invitation, now);
    // Expired invitations are deleted even if nobody lists them again.
    this.#scheduler.noLaterThan("invitation-expiry", invitation.createdAt + Limits.invitationTtlMs);
  }

  override async alarm(): Promise<void> {
    await this.#scheduler.run();
  }

  #expireInvitations(now: number): void {
    if (!this.#exists) return;
    const next = this.#invitations.prune(now);
    if (next !== null) this.#scheduler.at("invitation-expiry", next);
  }

  listInvitations(now = Date.now()): InvitationList {
    if (!this.#exists) return { invitations: [] };
    return { invitations: this.#invitations.list(now) };
  }

  hasInvitation(chatId: string, now = Date.now()): boolean {
    return this.#exists && this.#invitations.has(chatId, now);
  }

  /** Removes the invitation to `chatId` (accepting or declining it), or `not_found`. */
  takeInvitation(chatId: string, now = Date.now()): Outcome<Invitation> {
    return attempt(() => {
      const invitation = this.#exists ? this.#invitations.take(chatId, now) : null;
      if (!invitation) throw new AppError("not_found", 404, "no such invitation", { retryable: false });
      return invitation;
    });
  }

  // ---- Blocks ----

  /** Whether this account blocked `userId`. */
  isBlocking(userId: string): boolean {
    return this.#exists && this.#blocks.has(userId);
  }

  block(userId: string, now = Date.now()): Outcome<boolean> {
    return attempt(() => {
      const added = this.#blocks.add(userId, now);
      // A lease the blocked account holds on this one's presence ends with the block.
      this.#presence.blocked(userId);
      return added;
    });
  }

  unblock(userId: string): boolean {
    return this.#exists && this.#blocks.remove(userId);
  }

  listBlocks(): BlockList {
    return { blocked: this.#exists ? this.#blocks.list() : [] };
  }

  /**
   * Tells the chats where the device may still have a socket to close it: those it
   * opened one on within a token's lifetime (every chat of the account only when it
   * opened too many to list).
   */
  async #closeDeviceSockets(deviceId: string, now = Date.now()): Promise<void> {
    this.#streams.closeTagged(deviceTag(deviceId), CloseCode.deviceRevoked, "device_revoked");
    const chatIds = this.#openChatSockets.chatsOf(deviceId, now) ?? this.#chatIndex.chatIds();
    this.#openChatSockets.forget(deviceId);
    const results = await Promise.allSettled(
      chatIds.map((chatId) => this.env.CHAT_ROOM.get(this.env.CHAT_ROOM.idFromName(chatId)).closeDeviceSockets(deviceId)),
    );
    for (const result of results) {
      if (result.status === "rejected") log.warn("could not close a revoked device's sockets", describeError(result.reason));
    }
  }
}

/** A stream frame about a chat the account's list does not have. */
function notYourChat(): Outcome<never> {
  return failureOf(new AppError("not_a_member", 403, "not a chat of yours", { retryable: false }));
}
