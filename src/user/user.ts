import { DurableObject } from "cloudflare:workers";
import { and, desc, eq, isNull, lt } from "drizzle-orm";
import { drizzle, type DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import migrations from "../../migrations/user/migrations.js";
import { applyMigrations, hasSchema } from "../db/apply-migrations.ts";
import * as schema from "../db/user-schema.ts";
import { AppError } from "../lib/app-error.ts";
import { base64url, hmacSha256, randomBytes, randomId, sha256Hex } from "../lib/crypto.ts";
import { describeError, log } from "../lib/log.ts";
import { attempt, type Outcome } from "../lib/result.ts";
import { OpenChatSockets } from "./open-chat-sockets.ts";
import { TokenBuckets } from "../lib/token-buckets.ts";
import { configFrom } from "../lib/config.ts";
import type { SendGrant } from "../chat-room/account-send-leases.ts";
import type { AddPolicy } from "../chat-room/add-refusals.ts";
import type { BlockList, ChatIndexUpdate, ChatList, ChatListQuery, Device, Invitation, InvitationList, Me, Profile, ProfilePatch } from "../protocol/index.ts";
import { ChatIndex } from "./chat-index.ts";
import { Scheduler } from "../lib/scheduler.ts";
import { Limits } from "../protocol/index.ts";
import { Blocks } from "./blocks.ts";
import { Invitations } from "./invitations.ts";


/** A device's last-active time is written at most this often, not on every request. */
const ACTIVITY_WRITE_INTERVAL_MS = 60_000;

/** How long a used refresh token is remembered, so presenting it again is caught as reuse. */
const USED_TOKEN_RETENTION_MS = 30 * 24 * 3_600_000;

/**
 * A refresh token presented again this soon after its first use, while its replacement
 * is still unused, is a retry (two tabs refreshing at once, a lost response): it gets
 * the same new pair again instead of revoking the device.
 */
export const REFRESH_RETRY_GRACE_MS = 60_000;

export type IssuedDevice = { device: Device; refreshToken: string };

/**
 * One object per account (`idFromName(userId)`): profile, devices with their hashed
 * refresh tokens, and the index of the account's chats. Later: the device stream,
 * presence and the inbox.
 */
export class User extends DurableObject<Env> {
  readonly #db: DrizzleSqliteDODatabase<typeof schema>;
  /**
   * False until the account's first login creates its tables. An object addressed by
   * an id with no account answers "not found" from every method and writes nothing.
   */
  #exists = false;
  readonly #openChatSockets: OpenChatSockets;
  readonly #chatIndex: ChatIndex;
  readonly #blocks: Blocks;
  readonly #invitations: Invitations;
  /** The object's deadlines behind its one alarm. */
  readonly #scheduler: Scheduler<"invitation-expiry">;
  /** The account's send bucket, shared by all its chats (in memory, like every rate limit). */
  #sendBudget: TokenBuckets | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#db = drizzle(ctx.storage, { schema });
    this.#openChatSockets = new OpenChatSockets(ctx.storage);
    this.#chatIndex = new ChatIndex(this.#db);
    this.#blocks = new Blocks(this.#db);
    this.#invitations = new Invitations(this.#db);
    this.#scheduler = new Scheduler(ctx.storage, { "invitation-expiry": (now) => this.#expireInvitations(now) });
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
    this.#db.insert(schema.profile).values({ userId, phone, createdAt: now }).onConflictDoNothing().run();
    return this.me();
  }

  me(): Me {
    const row = this.#exists ? this.#db.select().from(schema.profile).get() : undefined;
    if (!row) throw new AppError("not_found", 404, "no such account");
    return { userId: row.userId, phone: row.phone, displayName: row.displayName, about: row.about, groupAdd: row.groupAdd, createdAt: row.createdAt };
  }

  /** What other users may see. Null when this id has no account. */
  publicProfile(): Profile | null {
    if (!this.#exists) return null;
    const row = this.#db.select().from(schema.profile).get();
    if (!row) return null;
    return { userId: row.userId, displayName: row.displayName, about: row.about, createdAt: row.createdAt };
  }

  updateProfile(patch: ProfilePatch): Me {
    this.#db.update(schema.profile).set(patch).run();
    return this.me();
  }

  /** A new login: a device and its first refresh token. */
  async createDevice(name: string, now = Date.now()): Promise<IssuedDevice> {
    const deviceId = randomId("dv");
    const { token, tokenHash } = await newRefreshToken(this.me().userId);
    this.#db.insert(schema.devices).values({ deviceId, name, createdAt: now, lastActiveAt: now }).run();
    this.#db.insert(schema.refreshTokens).values({ tokenHash, deviceId, createdAt: now }).run();
    return { device: this.#device(deviceId, deviceId), refreshToken: token };
  }

  /**
   * Trades a refresh token for a new one. The replacement is derived from the old
   * token with the server's secret, so a retry within REFRESH_RETRY_GRACE_MS, before
   * the replacement was used, gets the same pair again (`issuedAt` is the first
   * rotation's time, for an identical access token). Any other use of a used token is
   * a sign of theft: the device is revoked, so both the thief and the owner must log
   * in again.
   */
  async rotateRefreshToken(userId: string, token: string, now = Date.now()): Promise<Outcome<IssuedDevice & { issuedAt: number }>> {
    const tokenHash = await sha256Hex(token);
    const replacement = await newRefreshToken(userId, { secret: configFrom(this.env).hmacSecret, usedToken: token });
    let reusedBy: string | null = null;
    const outcome = attempt(() => {
      // The token names its account: a made-up one finds no row here, like any unknown token.
      const stored = this.#exists ? this.#db.select().from(schema.refreshTokens).where(eq(schema.refreshTokens.tokenHash, tokenHash)).get() : undefined;
      if (!stored) throw new AppError("invalid_refresh_token", 401, "unknown refresh token");
      const device = this.#db.select().from(schema.devices).where(eq(schema.devices.deviceId, stored.deviceId)).get();
      if (!device || device.revokedAt !== null) throw new AppError("device_revoked", 401, "this device was logged out");
      if (stored.usedAt !== null) {
        const next = this.#db.select().from(schema.refreshTokens).where(eq(schema.refreshTokens.tokenHash, replacement.tokenHash)).get();
        const retry = now - stored.usedAt <= REFRESH_RETRY_GRACE_MS && next?.deviceId === stored.deviceId && next.usedAt === null;
        if (retry) return { device: this.#device(stored.deviceId, stored.deviceId), refreshToken: replacement.token, issuedAt: stored.usedAt };
        this.#revokeRows(stored.deviceId, now);
        reusedBy = stored.deviceId;
        throw new AppError("refresh_token_reused", 401, "refresh token reused: the device was logged out");
      }
      this.#db.update(schema.refreshTokens).set({ usedAt: now }).where(eq(schema.refreshTokens.tokenHash, tokenHash)).run();
      // Used tokens are kept to detect reuse, for a while: one is made every refresh.
      this.#db
        .delete(schema.refreshTokens)
        .where(and(eq(schema.refreshTokens.deviceId, stored.deviceId), lt(schema.refreshTokens.usedAt, now - USED_TOKEN_RETENTION_MS)))
        .run();
      this.#db.insert(schema.refreshTokens).values({ tokenHash: replacement.tokenHash, deviceId: stored.deviceId, createdAt: now }).run();
      this.#db.update(schema.devices).set({ lastActiveAt: now }).where(eq(schema.devices.deviceId, stored.deviceId)).run();
      return { device: this.#device(stored.deviceId, stored.deviceId), refreshToken: replacement.token, issuedAt: now };
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
      const device = this.#exists ? this.#db.select().from(schema.devices).where(eq(schema.devices.deviceId, deviceId)).get() : undefined;
      if (!device || device.revokedAt !== null) throw new AppError("device_revoked", 401, "this device was logged out");
      if (socket) this.#openChatSockets.record(deviceId, socket.chatId, socket.expiresAt, now);
      if (now - device.lastActiveAt > ACTIVITY_WRITE_INTERVAL_MS) {
        // At most once a minute per device, so holding this one answer behind the
        // commit is cheap. (A timer set here to write later never fired: timers set
        // while answering an RPC did not run once the call returned.)
        this.#db.update(schema.devices).set({ lastActiveAt: now }).where(eq(schema.devices.deviceId, deviceId)).run();
      }
      return null;
    });
  }

  listDevices(currentDeviceId: string): Device[] {
    return this.#db
      .select()
      .from(schema.devices)
      .where(isNull(schema.devices.revokedAt))
      .orderBy(desc(schema.devices.lastActiveAt))
      .all()
      .map((row) => toDevice(row, currentDeviceId));
  }

  /** Logs a device out everywhere: its tokens are refused and its open sockets closed. */
  async revokeDevice(deviceId: string, now = Date.now()): Promise<Outcome<null>> {
    const outcome = attempt(() => {
      const device = this.#db
        .select()
        .from(schema.devices)
        .where(and(eq(schema.devices.deviceId, deviceId), isNull(schema.devices.revokedAt)))
        .get();
      if (!device) throw new AppError("not_found", 404, "no such device");
      this.#revokeRows(deviceId, now);
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
    this.#chatIndex.update(update, now);
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
    const profile = this.#exists ? this.#db.select({ groupAdd: schema.profile.groupAdd }).from(schema.profile).get() : undefined;
    if (!profile) return "missing";
    if (this.#blocks.has(adderId)) return "blocked";
    if (profile.groupAdd === "everyone") return "allow";
    if (profile.groupAdd === "contacts" && this.#chatIndex.hasDirectChatWith(adderId)) return "allow";
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
    return attempt(() => this.#blocks.add(userId, now));
  }

  unblock(userId: string): boolean {
    return this.#exists && this.#blocks.remove(userId);
  }

  listBlocks(): BlockList {
    return { blocked: this.#exists ? this.#blocks.list() : [] };
  }

  /** Token rows stay, so a revoked device's refresh tokens answer `device_revoked`. */
  #revokeRows(deviceId: string, now: number): void {
    this.#db.update(schema.devices).set({ revokedAt: now }).where(eq(schema.devices.deviceId, deviceId)).run();
  }

  /**
   * Tells the chats where the device may still have a socket to close it: those it
   * opened one on within a token's lifetime (every chat of the account only when it
   * opened too many to list).
   */
  async #closeDeviceSockets(deviceId: string, now = Date.now()): Promise<void> {
    const chatIds = this.#openChatSockets.chatsOf(deviceId, now) ?? this.#chatIndex.chatIds();
    this.#openChatSockets.forget(deviceId);
    const results = await Promise.allSettled(
      chatIds.map((chatId) => this.env.CHAT_ROOM.get(this.env.CHAT_ROOM.idFromName(chatId)).closeDeviceSockets(deviceId)),
    );
    for (const result of results) {
      if (result.status === "rejected") log.warn("could not close a revoked device's sockets", describeError(result.reason));
    }
  }

  #device(deviceId: string, currentDeviceId: string): Device {
    const row = this.#db.select().from(schema.devices).where(eq(schema.devices.deviceId, deviceId)).get();
    if (!row) throw new Error(`device ${deviceId} vanished`);
    return toDevice(row, currentDeviceId);
  }
}

function toDevice(row: typeof schema.devices.$inferSelect, currentDeviceId: string): Device {
  return {
    deviceId: row.deviceId,
    name: row.name,
    createdAt: row.createdAt,
    lastActiveAt: row.lastActiveAt,
    current: row.deviceId === currentDeviceId,
  };
}

/**
 * `rt1.<userId>.<43 characters>`: the user id routes the refresh to this object; only
 * the hash is stored. A login's first token is random; each rotation's replacement is
 * base64url(HMAC-SHA256(secret, "refresh-rotation\n" + used token)), so presenting
 * the same token twice yields the same replacement, and nobody without the secret can
 * compute it.
 */
async function newRefreshToken(userId: string, rotation?: { secret: string; usedToken: string }): Promise<{ token: string; tokenHash: string }> {
  const body = rotation ? await hmacSha256(rotation.secret, `refresh-rotation\n${rotation.usedToken}`) : randomBytes(32);
  const token = `rt1.${userId}.${base64url(body)}`;
  return { token, tokenHash: await sha256Hex(token) };
}

export function userIdOfRefreshToken(token: string): string | null {
  const match = /^rt1\.(u_[A-Za-z0-9_-]{16,40})\.[A-Za-z0-9_-]{43}$/.exec(token);
  return match?.[1] ?? null;
}
