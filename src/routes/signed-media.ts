import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../lib/app-env.ts";
import { configFrom } from "../lib/config.ts";
import { unwrap } from "../lib/result.ts";
import { chatRoomObject } from "../lib/stubs.ts";
import { parseWith, queryParams } from "../lib/validate.ts";
import { mediaResponse } from "../media/downloads.ts";
import { verifyMediaUrl } from "../media/signed-urls.ts";
import { ChatId, MediaId } from "../protocol/index.ts";

const SignedQuery = z.strictObject({ expires: z.string().max(20).optional(), sig: z.string().max(100).optional() });

/**
 * GET /media/:chatId/:mediaId?expires=&sig=: a signed link, no bearer token. The
 * signature is checked before any object is woken.
 */
export const signedMediaRoutes = new Hono<AppEnv>().get("/:chatId/:mediaId", async (c) => {
  const chatId = parseWith(ChatId, c.req.param("chatId"));
  const mediaId = parseWith(MediaId, c.req.param("mediaId"));
  const query = queryParams(c, SignedQuery);
  const now = Date.now();
  const expiresAt = await verifyMediaUrl(configFrom(c.env).media.urlSecret, chatId, mediaId, query, now);
  const media = unwrap(await chatRoomObject(c.env, chatId).linkedMedia(mediaId));
  // Caches may keep it no longer than the link is valid.
  return mediaResponse(c.env.MEDIA, media, c.req.raw.headers, `private, max-age=${Math.max(0, Math.floor((expiresAt - now) / 1000))}`);
});

