import { AppError } from "./app-error.ts";
import { base64url, constantTimeEqual, fromBase64url, hmacSha256, randomBytes } from "./crypto.ts";

/**
 * Ids the server mints for accounts and chats carry a tag: 16 bytes that identify
 * the thing, then the first 8 bytes of HMAC(secret, prefix + those bytes). Only this
 * server can make an id that passes `isMintedId`, so a made-up id is refused at the
 * Worker with no Durable Object woken and no storage created anywhere (an object
 * that is merely addressed already gets a database file under `wrangler dev`).
 *
 * `u_` accounts and `g_` groups have random bodies; a direct chat's body is derived
 * from its pair (see `directChatId`). 24 bytes, 32 base64url characters after the prefix.
 */
const BODY_BYTES = 16;
const TAG_BYTES = 8;

export type IdPrefix = "u" | "g" | "d";

async function tag(secret: string, prefix: string, body: Uint8Array): Promise<Uint8Array> {
  return (await hmacSha256(secret, `id-tag\n${prefix}\n${base64url(body)}`)).slice(0, TAG_BYTES);
}

/** A new id: random unless `body` (16 bytes) is given. */
export async function mintId(secret: string, prefix: IdPrefix, body: Uint8Array = randomBytes(BODY_BYTES)): Promise<string> {
  const bytes = new Uint8Array(BODY_BYTES + TAG_BYTES);
  bytes.set(body.slice(0, BODY_BYTES));
  bytes.set(await tag(secret, prefix, bytes.subarray(0, BODY_BYTES)), BODY_BYTES);
  return `${prefix}_${base64url(bytes)}`;
}

/**
 * Ids already checked in this isolate (a tag check is deterministic). Bounded:
 * oldest first out. Keyed by secret so one key's result never vouches for another's.
 */
const verifiedBySecret = new Map<string, Set<string>>();
const MAX_VERIFIED = 20_000;

/** Whether `id` was minted by this server with `prefix`. */
export async function isMintedId(secret: string, prefix: IdPrefix, id: string): Promise<boolean> {
  if (!id.startsWith(`${prefix}_`)) return false;
  let verified = verifiedBySecret.get(secret);
  if (!verified) verifiedBySecret.set(secret, (verified = new Set()));
  if (verified.has(id)) return true;
  const bytes = fromBase64url(id.slice(prefix.length + 1));
  if (!bytes || bytes.length !== BODY_BYTES + TAG_BYTES) return false;
  const expected = await tag(secret, prefix, bytes.subarray(0, BODY_BYTES));
  if (!constantTimeEqual(base64url(expected), base64url(bytes.subarray(BODY_BYTES)))) return false;
  if (verified.size >= MAX_VERIFIED) verified.delete(verified.keys().next().value!);
  verified.add(id);
  return true;
}

/** Refuses a chat id this server never minted as `chat_not_found`, before any object is addressed. */
export async function requireMintedChatId(secret: string, chatId: string): Promise<void> {
  const prefix = chatId.startsWith("d_") ? "d" : "g";
  if (!(await isMintedId(secret, prefix, chatId))) throw new AppError("chat_not_found", 404, "no such chat", { retryable: false });
}
