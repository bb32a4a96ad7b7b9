import { and, desc, eq, isNull, lt } from "drizzle-orm";
import type { DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import * as schema from "../db/user-schema.ts";
import { AppError } from "../lib/app-error.ts";
import { base64url, hmacSha256, randomBytes, randomId, sha256Hex } from "../lib/crypto.ts";
import type { Device } from "../protocol/index.ts";

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
export type Rotation = IssuedDevice & { issuedAt: number };

/**
 * The account's devices and their refresh tokens (stored as SHA-256 hashes). Revoked
 * devices keep their rows, so their tokens stay refused. Every method is synchronous
 * but for hashing, and throws AppErrors for the object to turn into outcomes.
 */
export class Devices {
  readonly #db: DrizzleSqliteDODatabase<typeof schema>;

  constructor(db: DrizzleSqliteDODatabase<typeof schema>) {
    this.#db = db;
  }

  /** A new login: a device and its first refresh token. */
  async create(userId: string, name: string, now: number): Promise<IssuedDevice> {
    const deviceId = randomId("dv");
    const { token, tokenHash } = await newRefreshToken(userId);
    this.#db.insert(schema.devices).values({ deviceId, name, createdAt: now, lastActiveAt: now }).run();
    this.#db.insert(schema.refreshTokens).values({ tokenHash, deviceId, createdAt: now }).run();
    return { device: this.get(deviceId, deviceId), refreshToken: token };
  }

  /**
   * Trades a refresh token for a new one. The replacement is derived from the old
   * token with the server's secret, so a retry within REFRESH_RETRY_GRACE_MS, before
   * the replacement was used, gets the same pair again (`issuedAt` is the first
   * rotation's time, for an identical access token). Any other use of a used token is
   * a sign of theft: the device is revoked (`onReuse` is told which), so both the
   * thief and the owner must log in again.
   */
  async rotate(userId: string, token: string, secret: string, now: number, onReuse: (deviceId: string) => void): Promise<() => Rotation> {
    const tokenHash = await sha256Hex(token);
    const replacement = await newRefreshToken(userId, { secret, usedToken: token });
    // The rest runs in one synchronous turn, after the hashing.
    return () => {
      const { refreshTokens, devices } = schema;
      // The token names its account: a made-up one finds no row here, like any unknown token.
      const stored = this.#db.select().from(refreshTokens).where(eq(refreshTokens.tokenHash, tokenHash)).get();
      if (!stored) throw new AppError("invalid_refresh_token", 401, "unknown refresh token");
      const device = this.#db.select().from(devices).where(eq(devices.deviceId, stored.deviceId)).get();
      if (!device || device.revokedAt !== null) throw new AppError("device_revoked", 401, "this device was logged out");
      if (stored.usedAt !== null) {
        const next = this.#db.select().from(refreshTokens).where(eq(refreshTokens.tokenHash, replacement.tokenHash)).get();
        const retry = now - stored.usedAt <= REFRESH_RETRY_GRACE_MS && next?.deviceId === stored.deviceId && next.usedAt === null;
        if (retry) return { device: this.get(stored.deviceId, stored.deviceId), refreshToken: replacement.token, issuedAt: stored.usedAt };
        this.#revokeRows(stored.deviceId, now);
        onReuse(stored.deviceId);
        throw new AppError("refresh_token_reused", 401, "refresh token reused: the device was logged out");
      }
      this.#db.update(refreshTokens).set({ usedAt: now }).where(eq(refreshTokens.tokenHash, tokenHash)).run();
      // Used tokens are kept to detect reuse, for a while: one is made every refresh.
      this.#db
        .delete(refreshTokens)
        .where(and(eq(refreshTokens.deviceId, stored.deviceId), lt(refreshTokens.usedAt, now - USED_TOKEN_RETENTION_MS)))
        .run();
      this.#db.insert(refreshTokens).values({ tokenHash: replacement.tokenHash, deviceId: stored.deviceId, createdAt: now }).run();
      this.#db.update(devices).set({ lastActiveAt: now }).where(eq(devices.deviceId, stored.deviceId)).run();
      return { device: this.get(stored.deviceId, stored.deviceId), refreshToken: replacement.token, issuedAt: now };
    };
  }

  /** A device that may act now, or `device_revoked`; its last-active time is kept (at most once a minute). */
  check(deviceId: string, now: number): void {
    const device = this.#db.select().from(schema.devices).where(eq(schema.devices.deviceId, deviceId)).get();
    if (!device || device.revokedAt !== null) throw new AppError("device_revoked", 401, "this device was logged out");
    if (now - device.lastActiveAt > ACTIVITY_WRITE_INTERVAL_MS) {
      // At most once a minute per device, so holding this one answer behind the
      // commit is cheap. (A timer set here to write later never fired: timers set
      // while answering an RPC did not run once the call returned.)
      this.#db.update(schema.devices).set({ lastActiveAt: now }).where(eq(schema.devices.deviceId, deviceId)).run();
    }
  }

  list(currentDeviceId: string): Device[] {
    return this.#db
      .select()
      .from(schema.devices)
      .where(isNull(schema.devices.revokedAt))
      .orderBy(desc(schema.devices.lastActiveAt))
      .all()
      .map((row) => toDevice(row, currentDeviceId));
  }

  /** Marks a device logged out (its token rows stay, so they answer `device_revoked`), or `not_found`. */
  revoke(deviceId: string, now: number): void {
    const { devices } = schema;
    const device = this.#db.select().from(devices).where(and(eq(devices.deviceId, deviceId), isNull(devices.revokedAt))).get();
    if (!device) throw new AppError("not_found", 404, "no such device");
    this.#revokeRows(deviceId, now);
  }

  get(deviceId: string, currentDeviceId: string): Device {
    const row = this.#db.select().from(schema.devices).where(eq(schema.devices.deviceId, deviceId)).get();
    if (!row) throw new Error(`device ${deviceId} vanished`);
    return toDevice(row, currentDeviceId);
  }

  #revokeRows(deviceId: string, now: number): void {
    this.#db.update(schema.devices).set({ revokedAt: now }).where(eq(schema.devices.deviceId, deviceId)).run();
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
