import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../lib/app-env.ts";
import { AppError } from "../lib/app-error.ts";
import { configFrom } from "../lib/config.ts";
import { randomId } from "../lib/crypto.ts";
import { describeError, log } from "../lib/log.ts";
import { isMintedId } from "../lib/minted-id.ts";
import { unwrap } from "../lib/result.ts";
import { userObject } from "../lib/stubs.ts";
import { parseWith, queryParams } from "../lib/validate.ts";
import { contentDisposition } from "../media/downloads.ts";
import { declaredLength, exactLength, peek, requireAllowedType, writeError } from "../media/uploads.ts";
import { ChatId, Limits, UserId, type Me } from "../protocol/index.ts";

/**
 * Profile pictures: the same streaming upload as chat media (Content-Length first,
 * magic bytes, images only), one R2 object per picture, whose id the profile carries.
 * A new picture replaces the old one, whose object is deleted.
 */

/** R2 key of a picture: a new id each time, so a cached old picture is never served for a new one. */
const avatarKey = (userId: string, avatarId: string) => `avatars/${userId}/${avatarId}`;

const AvatarQuery = z.strictObject({ chatId: ChatId.optional() });

/** PUT and DELETE /api/me/avatar (the bearer check is the /api/me routes'). */
export const ownAvatarRoutes = new Hono<AppEnv>()
  .put("/", async (c) => {
    const size = declaredLength(c.req.raw.headers, Limits.maxAvatarBytes);
    const { userId } = c.get("caller");
    if (!c.req.raw.body) throw new AppError("validation_failed", 400, "the picture is empty", { retryable: false });
    const { head, stream } = await peek(c.req.raw.body as ReadableStream<Uint8Array>);
    const detected = requireAllowedType(head, undefined, (type) => type.kind === "image");
    const avatarId = randomId("m");
    const key = avatarKey(userId, avatarId);
    const { body, failed } = exactLength(stream, size);
    try {
      await c.env.MEDIA.put(key, body, { httpMetadata: { contentType: detected.contentType }, customMetadata: { userId, avatarId } });
    } catch (error) {
      throw writeError(failed(), error);
    }
    let changed: { previous: string | null; me: Me };
    try {
      changed = await userObject(c.env, userId).setAvatar(avatarId);
    } catch (error) {
      await c.env.MEDIA.delete(key);
      throw error;
    }
    await deletePicture(c.env, userId, changed.previous);
    return c.json(changed.me);
  })
  .delete("/", async (c) => {
    const { userId } = c.get("caller");
    const changed = await userObject(c.env, userId).setAvatar(null);
    await deletePicture(c.env, userId, changed.previous);
    return c.json(changed.me);
  });

/**
 * GET /api/users/:userId/avatar?chatId=: for the user themselves, and for anyone who
 * shares `chatId` with them (checked as presence is: each account in its own list).
 * A stranger, a made-up id and a user without a picture are all 404, with nothing stored.
 */
export const userAvatarRoutes = new Hono<AppEnv>().get("/:userId/avatar", async (c) => {
  const userId = parseWith(UserId, c.req.param("userId"));
  const callerId = c.get("caller").userId;
  const { chatId } = queryParams(c, AvatarQuery);
  if (userId !== callerId) {
    if (chatId === undefined) throw new AppError("validation_failed", 400, "chatId: name a chat you share with this user", { retryable: false });
    if (!(await isMintedId(configFrom(c.env).hmacSecret, "u", userId))) throw new AppError("not_found", 404, "no picture of that user in that chat", { retryable: false });
  }
  const avatarId = unwrap(await userObject(c.env, callerId).avatarOf(userId, chatId ?? ""));
  const ifNoneMatch = c.req.header("if-none-match");
  const object = await c.env.MEDIA.get(avatarKey(userId, avatarId), ifNoneMatch ? { onlyIf: { etagDoesNotMatch: ifNoneMatch.replace(/^W\//, "").replace(/"/g, "") } } : {});
  if (!object) throw new AppError("not_found", 404, "no picture of that user in that chat", { retryable: false });
  const headers = new Headers({
    "Content-Type": object.httpMetadata?.contentType ?? "application/octet-stream",
    "X-Content-Type-Options": "nosniff",
    "Content-Disposition": contentDisposition("image", null),
    "Cache-Control": "private",
    ETag: object.httpEtag,
  });
  if (!("body" in object)) return new Response(null, { status: 304, headers });
  headers.set("Content-Length", String(object.size));
  return new Response(object.body, { status: 200, headers });
});

/** Deletes a replaced picture's object; a failure leaves an unreferenced object, logged. */
async function deletePicture(env: Env, userId: string, avatarId: string | null): Promise<void> {
  if (!avatarId) return;
  try {
    await env.MEDIA.delete(avatarKey(userId, avatarId));
  } catch (error) {
    log.warn("could not delete a replaced profile picture", describeError(error));
  }
}
