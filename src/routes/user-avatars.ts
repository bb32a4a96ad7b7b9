import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../lib/app-env.ts";
import { AppError } from "../lib/app-error.ts";
import { configFrom } from "../lib/config.ts";
import { isMintedId } from "../lib/minted-id.ts";
import { unwrap } from "../lib/result.ts";
import { userObject } from "../lib/stubs.ts";
import { parseWith, queryParams } from "../lib/validate.ts";
import { contentDisposition } from "../media/downloads.ts";
import { requireAuthOnce } from "../middleware/auth.ts";
import { ChatId, UserId } from "../protocol/index.ts";
import { avatarKey } from "../user/avatar-pictures.ts";

const AvatarQuery = z.strictObject({ chatId: ChatId.optional() });

/**
 * GET /api/users/:userId/avatar?chatId=: for the user themselves, and for anyone who
 * shares `chatId` with them (checked as presence is: each account in its own list).
 * A stranger, a made-up id and a user without a picture are all 404, with nothing stored.
 */
export const userAvatarRoutes = new Hono<AppEnv>()
  .use(requireAuthOnce)
  .get("/:userId/avatar", async (c) => {
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

