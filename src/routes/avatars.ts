import { Hono } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { AppError } from "../lib/app-error.ts";
import { randomId } from "../lib/crypto.ts";
import { describeError, log } from "../lib/log.ts";
import { userObject } from "../lib/stubs.ts";
import { declaredLength, exactLength, peek, requireAllowedType, writeError } from "../media/uploads.ts";
import { Limits, type Me } from "../protocol/index.ts";
import { requireAuthOnce } from "../middleware/auth.ts";

/**
 * Profile pictures: the same streaming upload as chat media (Content-Length first,
 * magic bytes, images only), one R2 object per picture, whose id the profile carries.
 * A new picture replaces the old one, whose object is deleted.
 */

/** R2 key of a picture: a new id each time, so a cached old picture is never served for a new one. */
export const avatarKey = (userId: string, avatarId: string) => `avatars/${userId}/${avatarId}`;

/** PUT and DELETE /api/me/avatar. */
export const ownAvatarRoutes = new Hono<AppEnv>()
  .use(requireAuthOnce)
  .put("/", async (c) => {
    const size = declaredLength(c.req.raw.headers, Limits.maxAvatarBytes);
    const { userId } = c.get("caller");
    if (!c.req.raw.body) throw new AppError("validation_failed", 400, "the picture is empty", { retryable: false });
    const { head, stream } = await peek(c.req.raw.body as ReadableStream<Uint8Array>);
    const detected = requireAllowedType(head, undefined, (type) => type.kind === "image");
    const avatarId = randomId("m");
    const key = avatarKey(userId, avatarId);
    const { body, mismatch } = exactLength(stream, size);
    try {
      await c.env.MEDIA.put(key, body, { httpMetadata: { contentType: detected.contentType }, customMetadata: { userId, avatarId } });
    } catch (error) {
      throw writeError(await mismatch(), error);
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

/** Deletes a replaced picture's object; a failure leaves an unreferenced object, logged. */
async function deletePicture(env: Env, userId: string, avatarId: string | null): Promise<void> {
  if (!avatarId) return;
  try {
    await env.MEDIA.delete(avatarKey(userId, avatarId));
  } catch (error) {
    log.warn("could not delete a replaced profile picture", describeError(error));
  }
}
