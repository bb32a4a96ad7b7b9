import { Hono } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { randomId } from "../lib/crypto.ts";
import { userObject } from "../lib/stubs.ts";
import { declaredLength, peek, requestBody, requireAllowedType, writeExactly } from "../media/uploads.ts";
import { Limits, type Me } from "../protocol/index.ts";
import { requireAuthOnce } from "../middleware/auth.ts";
import { avatarKey } from "../user/avatar-pictures.ts";

/**
 * Profile pictures: the same streaming upload as chat media (Content-Length first,
 * magic bytes, images only), one R2 object per picture, whose id the profile carries.
 * A new picture replaces the old one, whose object is deleted. The account's object
 * records the new id before its object is written, and deletes whatever the profile
 * does not take (src/user/avatar-pictures.ts): the Worker never deletes a picture.
 */

/** PUT and DELETE /api/me/avatar. */
export const ownAvatarRoutes = new Hono<AppEnv>()
  .use(requireAuthOnce)
  .put("/", async (c) => {
    const size = declaredLength(c.req.raw.headers, Limits.maxAvatarBytes);
    const { userId } = c.get("caller");
    const peeked = await peek(requestBody(c.req.raw));
    const detected = requireAllowedType(peeked.head, undefined, (type) => type.kind === "image");
    const avatarId = randomId("m");
    const key = avatarKey(userId, avatarId);
    const account = userObject(c.env, userId);
    // Recorded before the write: if this Worker dies before the profile takes it, the account deletes it.
    await account.reserveAvatar(avatarId);
    await writeExactly(peeked, size, (body) =>
      c.env.MEDIA.put(key, body, { httpMetadata: { contentType: detected.contentType }, customMetadata: { userId, avatarId } }),
    );
    // The account deletes the replaced picture. If this call fails, the new one is not
    // deleted here (the profile may have taken it): its record does, unless the profile did.
    const changed: { previous: string | null; me: Me } = await account.setAvatar(avatarId);
    return c.json(changed.me);
  })
  .delete("/", async (c) => {
    const { userId } = c.get("caller");
    const changed = await userObject(c.env, userId).setAvatar(null);
    return c.json(changed.me);
  });
