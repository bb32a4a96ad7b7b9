import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../lib/app-env.ts";
import { AppError } from "../lib/app-error.ts";
import { configFrom } from "../lib/config.ts";
import { randomId } from "../lib/crypto.ts";
import { describeError, log } from "../lib/log.ts";
import { unwrap } from "../lib/result.ts";
import { chatRoomObject } from "../lib/stubs.ts";
import { jsonBody, parseWith, queryParams } from "../lib/validate.ts";
import { mediaResponse } from "../media/downloads.ts";
import { requireUrlSecret, signMediaUrl } from "../media/signed-urls.ts";
import { requireAuthOnce } from "../middleware/auth.ts";
import { declaredLength, peek, requestBody, requireAllowedType, writeExactly, type PeekedBody } from "../media/uploads.ts";
import {
  MediaId,
  MediaName,
  StartMultipartRequest,
  type MultipartUpload,
  type SignedMediaUrl,
  type UploadedPart,
  type UploadResult,
} from "../protocol/index.ts";
import { chatIdParam } from "./chats.ts";

/**
 * Media of a chat, under /api/chats/:chatId/media: uploads streamed into R2, multipart uploads for larger files, downloads
 * and signed links. The bytes pass through the Worker; the chat's object keeps the
 * registry (who uploaded what, which message carries it) and decides who may read.
 */

/** Parts of a multipart upload: R2 wants at least 5 MiB for every part but the last. */
export const MULTIPART_PART_BYTES = 8 * 1024 * 1024;
/** R2's most parts per upload. */
const MAX_PARTS = 10_000;

const UploadQuery = z.strictObject({ name: MediaName.optional() });
const PartNumber = z.string().regex(/^\d{1,5}$/, "not a part number").transform(Number).pipe(z.number().int().min(1).max(MAX_PARTS));

/**
 * Routes whose body is a file streamed into R2: the API's JSON body limit does not
 * apply to them (each checks Content-Length against its own limit before reading).
 */
export function isUploadRoute(method: string, path: string): boolean {
  if (method === "POST") return /^\/api\/chats\/[^/]+\/media\/?$/.test(path);
  if (method === "PUT") return /^\/api\/chats\/[^/]+\/media\/multipart\/[^/]+\/parts\/[^/]+$/.test(path) || /^\/api\/me\/avatar\/?$/.test(path);
  return false;
}

/** Size of each part (the last takes the rest), so that any allowed size fits in R2's part count. */
export function partSizeFor(size: number): number {
  const mib = 1024 * 1024;
  return Math.max(MULTIPART_PART_BYTES, Math.ceil(size / MAX_PARTS / mib) * mib);
}

export const chatMediaRoutes = new Hono<AppEnv>()
  .use(requireAuthOnce)
  .post("/", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const { name } = queryParams(c, UploadQuery);
    // Before the body is touched: no length, or too long, is refused unread.
    const size = declaredLength(c.req.raw.headers, configFrom(c.env).media.maxBytes);
    const { userId } = c.get("caller");
    const mediaId = randomId("m");
    const room = chatRoomObject(c.env, chatId);
    const { r2Key } = unwrap(await room.reserveUpload(userId, mediaId, { size, name }));
    let written = false;
    try {
      const peeked = await peek(requestBody(c.req.raw));
      const detected = requireAllowedType(peeked.head, name);
      await writeExactly(peeked, size, (body) =>
        c.env.MEDIA.put(r2Key, body, { httpMetadata: { contentType: detected.contentType }, customMetadata: { chatId, mediaId } }),
      );
      written = true;
      const result: UploadResult = unwrap(await room.uploadStored(userId, mediaId, { ...detected, size }));
      return c.json(result, 201);
    } catch (error) {
      await abandon(c.env, room, userId, mediaId, written ? r2Key : null);
      throw error;
    }
  })
  .post("/multipart", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const request = await jsonBody(c, StartMultipartRequest);
    const { maxMultipartBytes } = configFrom(c.env).media;
    if (request.size > maxMultipartBytes) {
      throw new AppError("too_large", 413, `a multipart upload is at most ${maxMultipartBytes} bytes`, { retryable: false });
    }
    const partSize = partSizeFor(request.size);
    const upload = { size: request.size, name: request.name, partSize, partCount: Math.ceil(request.size / partSize) };
    const started: MultipartUpload = unwrap(await chatRoomObject(c.env, chatId).startMultipart(c.get("caller").userId, randomId("m"), upload));
    return c.json(started, 201);
  })
  .put("/multipart/:mediaId/parts/:partNumber", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const mediaId = parseWith(MediaId, c.req.param("mediaId"));
    const partNumber = parseWith(PartNumber, c.req.param("partNumber"));
    const { userId } = c.get("caller");
    const room = chatRoomObject(c.env, chatId);
    // The part's length is known from the start request: anything else is refused unread.
    const declared = declaredLength(c.req.raw.headers, configFrom(c.env).media.maxMultipartBytes);
    const target = unwrap(await room.multipartPart(userId, mediaId, partNumber));
    if (declared !== target.size) {
      throw new AppError("validation_failed", 400, `part ${partNumber} must be exactly ${target.size} bytes`, { retryable: false });
    }
    const body = requestBody(c.req.raw);
    let source: ReadableStream<Uint8Array> | PeekedBody = body;
    let detected = null;
    if (partNumber === 1) {
      const peeked = await peek(body);
      try {
        detected = requireAllowedType(peeked.head, target.name ?? undefined);
      } catch (error) {
        // The file is not one that may be shared: the whole upload goes.
        await abandon(c.env, room, userId, mediaId, null);
        throw error;
      }
      source = peeked;
    }
    const part = await writeExactly(source, target.size, (exact) =>
      c.env.MEDIA.resumeMultipartUpload(target.r2Key, target.uploadId).uploadPart(partNumber, exact),
    );
    unwrap(await room.multipartPartStored(userId, mediaId, partNumber, part.etag, detected));
    const uploaded: UploadedPart = { partNumber, size: target.size };
    return c.json(uploaded);
  })
  .post("/multipart/:mediaId/complete", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const mediaId = parseWith(MediaId, c.req.param("mediaId"));
    const { userId } = c.get("caller");
    const room = chatRoomObject(c.env, chatId);
    // The row goes `completing` first: neither an abandon nor the expiry purges it meanwhile.
    const completion = unwrap(await room.multipartCompletion(userId, mediaId));
    if (completion.done) return c.json(completion.done satisfies UploadResult, 201);
    try {
      await c.env.MEDIA.resumeMultipartUpload(completion.r2Key, completion.uploadId).complete(completion.parts);
    } catch (error) {
      // A retry after R2 completed it (and storing the result failed): the object is there.
      if (!(await assembled(c.env.MEDIA, completion.r2Key, completion.size))) {
        log.warn("could not complete a multipart upload", describeError(error));
        throw new AppError("unavailable", 503, "the upload could not be completed; try again", { retryable: true });
      }
    }
    const { kind, contentType, size } = completion;
    const result: UploadResult = unwrap(await room.uploadStored(userId, mediaId, { kind, contentType, size }));
    return c.json(result, 201);
  })
  .delete("/multipart/:mediaId", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const mediaId = parseWith(MediaId, c.req.param("mediaId"));
    // Only an upload still taking parts: a finished one is a file now (deleted by its expiry or its message).
    unwrap(await chatRoomObject(c.env, chatId).abandonUpload(c.get("caller").userId, mediaId, undefined, { multipartOnly: true }));
    return c.body(null, 204);
  })
  .get("/:mediaId", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const mediaId = parseWith(MediaId, c.req.param("mediaId"));
    const media = unwrap(await chatRoomObject(c.env, chatId).readableMedia(c.get("caller").userId, mediaId));
    return mediaResponse(c.env.MEDIA, media, c.req.raw.headers, "private");
  })
  .post("/:mediaId/url", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const mediaId = parseWith(MediaId, c.req.param("mediaId"));
    const secret = requireUrlSecret(configFrom(c.env).media.urlSecret);
    unwrap(await chatRoomObject(c.env, chatId).readableMedia(c.get("caller").userId, mediaId));
    const signed: SignedMediaUrl = await signMediaUrl(secret, chatId, mediaId, Date.now());
    return c.json(signed);
  });

/** Whether R2 holds the assembled object of a multipart upload, `size` bytes long. */
async function assembled(bucket: R2Bucket, r2Key: string, size: number): Promise<boolean> {
  try {
    return (await bucket.head(r2Key))?.size === size;
  } catch {
    return false;
  }
}

/** Drops a failed upload's reservation (and its R2 object); a failure here is only logged: the expiry cleans up. */
async function abandon(env: Env, room: ReturnType<typeof chatRoomObject>, userId: string, mediaId: string, writtenKey: string | null): Promise<void> {
  try {
    const outcome = await room.abandonUpload(userId, mediaId);
    // No reservation left to clean up the object through (it expired meanwhile): delete it here.
    if (!outcome.ok && writtenKey) await env.MEDIA.delete(writtenKey);
  } catch (error) {
    log.warn("could not abandon an upload", describeError(error));
  }
}
