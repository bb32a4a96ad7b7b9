import { z } from "zod";
import { Limits } from "./limits.ts";
import { text } from "./text.ts";

/**
 * Media: files shared in chats (images, short video, audio, PDF, common documents) and
 * profile avatars. The bytes live in R2 under opaque keys; a message event holds only
 * the reference and what a client needs to draw it before downloading.
 */

/** A media id, minted by the server at upload (`m_` and 22 random base64url characters). */
export const MediaId = z.string().regex(/^m_[A-Za-z0-9_-]{22}$/, "not a media id");
export type MediaId = z.infer<typeof MediaId>;

/**
 * What an upload turned out to be, from its first bytes (never from what the client
 * claimed). The allow-list and its magic numbers are in `src/media/content-types.ts`.
 */
export const MediaKind = z.enum(["image", "video", "audio", "document"]);
export type MediaKind = z.infer<typeof MediaKind>;

/** A small preview the sending client made (a JPEG, PNG or WebP, base64), shown before download. */
export const Thumbnail = z
  .string()
  .max(Limits.maxThumbnailChars, `must be at most ${Limits.maxThumbnailChars} characters of base64`)
  .regex(/^[A-Za-z0-9+/]+={0,2}$/, "must be base64");

/** A file name as the sender named it (shown and used for downloads); never a path. */
export const MediaName = text()
  .min(1)
  .max(Limits.maxMediaNameLength)
  .regex(/^[^/\\\p{Cc}]+$/u, "must not contain slashes or control characters");

/**
 * An attachment as the sender describes it in `send`: the media id from its upload to
 * this chat, and what only the client knows. Type and size come from the upload.
 */
export const AttachmentInput = z.strictObject({
  mediaId: MediaId,
  name: MediaName.optional(),
  width: z.number().int().positive().max(100_000).optional(),
  height: z.number().int().positive().max(100_000).optional(),
  durationMs: z.number().int().nonnegative().max(24 * 3_600_000).optional(),
  thumbnail: Thumbnail.optional(),
});
export type AttachmentInput = z.infer<typeof AttachmentInput>;

/** An attachment as messages carry it: the sender's description plus what the server measured. */
export const Attachment = AttachmentInput.extend({
  kind: MediaKind,
  /** The type the server detected from the first bytes. */
  contentType: z.string(),
  /** Bytes. */
  size: z.number().int().positive(),
});
export type Attachment = z.infer<typeof Attachment>;

export const Attachments = z.array(AttachmentInput).min(1).max(Limits.maxAttachmentsPerMessage);

/** 201 from an upload (POST /api/chats/:chatId/media, or completing a multipart upload). */
export const UploadResult = z.object({
  mediaId: MediaId,
  kind: MediaKind,
  contentType: z.string(),
  size: z.number().int().positive(),
  /** The upload is deleted at this time (ms) unless a message carries it by then. */
  expiresAt: z.number().int(),
});
export type UploadResult = z.infer<typeof UploadResult>;

/** POST /api/chats/:chatId/media/multipart: a file too large for one request. */
export const StartMultipartRequest = z.strictObject({
  size: z.number().int().positive(),
  name: MediaName.optional(),
});
export type StartMultipartRequest = z.infer<typeof StartMultipartRequest>;

/** 201 from starting a multipart upload: send `partCount` parts of `partSize` bytes (the last one the rest). */
export const MultipartUpload = z.object({
  mediaId: MediaId,
  partSize: z.number().int().positive(),
  partCount: z.number().int().positive(),
  expiresAt: z.number().int(),
});
export type MultipartUpload = z.infer<typeof MultipartUpload>;

/** 200 from PUT …/multipart/:mediaId/parts/:partNumber. */
export const UploadedPart = z.object({ partNumber: z.number().int().positive(), size: z.number().int().positive() });
export type UploadedPart = z.infer<typeof UploadedPart>;

/** POST /api/chats/:chatId/media/:mediaId/url: a link for an `<img>` or `<video>` tag. */
export const SignedMediaUrl = z.object({
  /** Relative to the API's origin: `/media/<chatId>/<mediaId>?expires=<ms>&sig=<base64url>`. */
  url: z.string(),
  expiresAt: z.number().int(),
});
export type SignedMediaUrl = z.infer<typeof SignedMediaUrl>;
