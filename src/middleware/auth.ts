import { createMiddleware } from "hono/factory";
import { verifyAccessToken } from "../auth/access-token.ts";
import type { AppEnv, Caller } from "../lib/app-env.ts";
import { AppError } from "../lib/app-error.ts";
import { configFrom } from "../lib/config.ts";
import { ForwardedIdentity, WS_BEARER_PREFIX } from "../lib/forwarded-identity.ts";
import { unwrap } from "../lib/result.ts";
import { userObject } from "../lib/stubs.ts";

/**
 * Requires a valid access token from a device that is still logged in. The token
 * comes from `Authorization: Bearer`, or for WebSocket upgrades from the offered
 * subprotocol `bearer.<token>` (browsers cannot set headers on a WebSocket).
 */
export const requireAuth = createMiddleware<AppEnv>(async (c, next) => {
  c.set("caller", await authenticate(c.env, c.req.raw.headers));
  await next();
});

/**
 * `requireAuth` for routes mounted beside a router that already checked the caller
 * (the media routes under /api/chats, the avatar routes under /api/me and /api/users):
 * the check runs once per request either way, and the routes stay safe on their own.
 */
export const requireAuthOnce = createMiddleware<AppEnv>(async (c, next) => {
  if (!c.get("caller")) c.set("caller", await authenticate(c.env, c.req.raw.headers));
  await next();
});

export async function authenticate(env: Env, headers: Headers): Promise<Caller> {
  const { userId, deviceId } = await authenticateSocket(env, headers);
  return { userId, deviceId };
}

/**
 * The same check for a request, or for a chat socket (`chatId`): the device's object
 * learns which chat the socket opens, and the caller learns when the token expires
 * (the socket is closed then).
 */
export async function authenticateSocket(env: Env, headers: Headers, chatId?: string): Promise<ForwardedIdentity> {
  const identity = await verifyToken(env, headers);
  // Checked on every request so that a revoked device is refused at once.
  unwrap(await userObject(env, identity.userId).checkDevice(identity.deviceId, chatId === undefined ? undefined : { chatId, expiresAt: identity.tokenExpiresAt }));
  return identity;
}

/**
 * The token's signature and expiry only, for the device stream: its upgrade goes to
 * the account's own object, which checks the device itself.
 */
export async function verifyToken(env: Env, headers: Headers): Promise<ForwardedIdentity> {
  const token = bearerToken(headers);
  if (!token) throw new AppError("unauthorized", 401, "send Authorization: Bearer <credentials>", { retryable: false });
  const claims = await verifyAccessToken(configFrom(env), token);
  return { userId: claims.sub, deviceId: claims.deviceId, tokenExpiresAt: claims.exp * 1000 };
}

function bearerToken(headers: Headers): string | null {
  const authorization = headers.get("authorization");
  if (authorization) {
    const match = /^Bearer\s+(\S+)$/i.exec(authorization);
    return match?.[1] ?? null;
  }
  const offered = ForwardedIdentity.offeredSubprotocols(headers).find((p) => p.startsWith(WS_BEARER_PREFIX));
  return offered ? offered.slice(WS_BEARER_PREFIX.length) : null;
}
