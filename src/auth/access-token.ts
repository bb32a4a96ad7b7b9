import { sign, verify } from "hono/jwt";
import { JwtTokenExpired } from "hono/utils/jwt/types";
import { AppError } from "../lib/app-error.ts";
import type { Config } from "../lib/config.ts";
import { AccessClaims } from "../protocol/index.ts";

/** The only algorithm accepted: the token's own `alg` header is never trusted. */
const ALGORITHM = "HS256";

export async function issueAccessToken(config: Config, userId: string, deviceId: string, now = Date.now()): Promise<string> {
  const iat = Math.floor(now / 1000);
  const claims: AccessClaims = { sub: userId, deviceId, iat, exp: iat + config.accessTokenTtlSeconds };
  return sign(claims, config.jwtSecret, ALGORITHM);
}

/**
 * Tokens this isolate has already verified, by their exact text. A signature check
 * is deterministic, so a token seen before needs only its expiry checked again;
 * the device check (revocation) is never cached. Bounded: oldest entries go first.
 */
const verifiedByConfig = new WeakMap<Config, Map<string, AccessClaims>>();
const MAX_VERIFIED = 10_000;

/** Verifies signature, algorithm and expiry; the device check is the caller's. */
export async function verifyAccessToken(config: Config, token: string): Promise<AccessClaims> {
  let verified = verifiedByConfig.get(config); // per secret: never trust another key's result
  if (!verified) verifiedByConfig.set(config, (verified = new Map()));
  const known = verified.get(token);
  if (known) {
    if (known.exp * 1000 > Date.now()) return known;
    verified.delete(token);
  }
  const claims = await verifySignature(config, token);
  if (verified.size >= MAX_VERIFIED) verified.delete(verified.keys().next().value!);
  verified.set(token, claims);
  return claims;
}

async function verifySignature(config: Config, token: string): Promise<AccessClaims> {
  let payload: unknown;
  try {
    payload = await verify(token, config.jwtSecret, ALGORITHM);
  } catch (error) {
    if (error instanceof JwtTokenExpired) throw new AppError("token_expired", 401, "the access token expired: refresh it");
    throw new AppError("invalid_token", 401, "the access token is not valid");
  }
  const claims = AccessClaims.safeParse(payload);
  if (!claims.success) throw new AppError("invalid_token", 401, "the access token is not valid");
  return claims.data;
}
