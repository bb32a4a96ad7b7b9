import { AppError } from "../lib/app-error.ts";
import { base64url, constantTimeEqual, hmacSha256 } from "../lib/crypto.ts";
import { Limits, type SignedMediaUrl } from "../protocol/index.ts";

/**
 * Links for `<img>` and `<video>` tags, which cannot send a bearer token: the Worker
 * checks the caller's access once, then signs (media, chat, expiry) with its own key
 * (`MEDIA_URL_SECRET`). A link is valid for at most `Limits.maxSignedUrlTtlMs`, names
 * its chat (so it cannot be replayed against another), and is checked before any object
 * is woken: a forged or stale link costs nothing but the HMAC.
 */

/** The key of signed links, or 500 `misconfigured` when none is set (checked before any work). */
export function requireUrlSecret(secret: string | null): string {
  if (secret === null) {
    throw new AppError("misconfigured", 500, "signed media URLs are off: set MEDIA_URL_SECRET (`wrangler secret put MEDIA_URL_SECRET`)", { retryable: false });
  }
  return secret;
}

async function signature(secret: string, chatId: string, mediaId: string, expiresAt: number): Promise<string> {
  return base64url(await hmacSha256(secret, `media-url\n${chatId}\n${mediaId}\n${expiresAt}`));
}

/** A signed link to a chat's media, valid until `now + ttlMs` (at most the limit). */
export async function signMediaUrl(secret: string | null, chatId: string, mediaId: string, now: number, ttlMs = Limits.maxSignedUrlTtlMs): Promise<SignedMediaUrl> {
  const key = requireUrlSecret(secret);
  const expiresAt = now + Math.min(ttlMs, Limits.maxSignedUrlTtlMs);
  const sig = await signature(key, chatId, mediaId, expiresAt);
  return { url: `/media/${chatId}/${mediaId}?expires=${expiresAt}&sig=${sig}`, expiresAt };
}

/**
 * Checks a link's query against its path: 403 `invalid_signature` when forged, for
 * another chat or media, expired, or claiming to last longer than a link may. Answers
 * when it expires.
 */
export async function verifyMediaUrl(secret: string | null, chatId: string, mediaId: string, query: { expires?: string | undefined; sig?: string | undefined }, now: number): Promise<number> {
  const key = requireUrlSecret(secret);
  const refused = (why: string) => new AppError("invalid_signature", 403, `this media link is not valid: ${why}`, { retryable: false });
  const expiresAt = query.expires !== undefined && /^\d{1,15}$/.test(query.expires) ? Number(query.expires) : Number.NaN;
  if (!Number.isSafeInteger(expiresAt) || !query.sig) throw refused("it is incomplete");
  const expected = await signature(key, chatId, mediaId, expiresAt);
  if (!constantTimeEqual(expected, query.sig)) throw refused("the signature does not match");
  if (expiresAt <= now) throw refused("it expired; ask for a new one");
  if (expiresAt > now + Limits.maxSignedUrlTtlMs) throw refused("it claims to last too long");
  return expiresAt;
}
