import { and, asc, count, eq, gt, inArray, isNotNull, lte, min } from "drizzle-orm";
import type { DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import * as schema from "../db/chat-room-schema.ts";
import { AppError } from "../lib/app-error.ts";
import { describeError, log } from "../lib/log.ts";
import { Attachment, Limits, type AttachmentInput, type MediaKind, type UploadResult } from "../protocol/index.ts";
import type { Period } from "./membership.ts";

/** A multipart upload's progress, kept as JSON in its row (`media.multipart`). */
export type MultipartState = {
  /** R2's id of the upload ("" until R2 has created it). */
  uploadId: string;
  partSize: number;
  partCount: number;
  /** Each stored part's etag, by part number. */
  parts: Record<string, string>;
};

/** What the Worker needs to write a part (`name`: the one given at start, to tell Office files from ZIPs). */
export type PartTarget = { r2Key: string; uploadId: string; size: number; name: string | null };
/** What the Worker needs to finish a multipart upload. */
export type Completion = { r2Key: string; uploadId: string; parts: R2UploadedPart[] };
/** A file as a download serves it. */
export type StoredMedia = { r2Key: string; kind: MediaKind; contentType: string; size: number; name: string | null };
export type Reservation = { r2Key: string; expiresAt: number };
export type DetectedMedia = { kind: MediaKind; contentType: string; size: number };

type MediaRow = typeof schema.media.$inferSelect;

/** Deleting rows purged per pass (one R2 batch delete). */
const PURGE_BATCH = 100;
/** A failed R2 delete is tried again this much later (the scheduler also retries a handler that throws). */
const PURGE_RETRY_MS = 30_000;
/**
 * A single upload's reservation (`uploading`) expires this soon (15 minutes) unless its
 * bytes are stored, when it gets the full `Limits.pendingUploadTtlMs`: an upload whose
 * Worker was cancelled (the client went away) holds a pending slot for minutes, not a day.
 */
export const UPLOADING_TTL_MS = 15 * 60_000;
/**
 * A multipart upload being completed (`completing`) is kept at least this long (1 hour)
 * from when completion starts: neither its expiry nor an abandon purges it while R2
 * assembles it, and a completion that never finishes is purged after it.
 */
export const COMPLETING_TTL_MS = 60 * 60_000;

/** States of an upload not yet attached (they count toward the pending cap, and expire). */
const PENDING_STATES: MediaRow["state"][] = ["uploading", "completing", "ready"];

/** Whether R2 refused an abort because the multipart upload is gone (aborted or completed already). */
export function isNoSuchUpload(error: unknown): boolean {
  const message = error instanceof Error ? error.message : String(error);
  return /no ?such ?upload|10024|upload does not exist/i.test(message);
}

/** The R2 key of a chat's file: opaque, never derived from a name the client chose. */
export const mediaKey = (chatId: string, mediaId: string) => `chats/${chatId}/${mediaId}`;

const notFound = () => new AppError("not_found", 404, "no such media", { retryable: false });
const invalidAttachment = (mediaId: string, why: string) =>
  new AppError("invalid_attachment", 400, `attachment ${mediaId} ${why}`, { retryable: false });

/**
 * The chat's files (table `media`): an upload is reserved (`uploading`) before its bytes
 * stream to R2 (a multipart upload is `completing` while R2 assembles it), `ready` once stored, `attached` to exactly one message, and `deleting`
 * when it expired unattached or its message was deleted, until its R2 object is gone.
 * Every state change is synchronous SQL; only deleting R2 objects awaits, and a failure
 * there leaves the row `deleting` for the scheduler's next pass.
 */
export class MediaRegistry {
  readonly #db: DrizzleSqliteDODatabase<typeof schema>;
  readonly #bucket: R2Bucket;
  /** Makes the registry's deadline due no later than `at` (expiry, or a purge to retry). */
  readonly #schedule: (at: number) => void;

  constructor(deps: { db: DrizzleSqliteDODatabase<typeof schema>; bucket: R2Bucket; schedule: (at: number) => void }) {
    this.#db = deps.db;
    this.#bucket = deps.bucket;
    this.#schedule = deps.schedule;
  }

  /**
   * Registers an upload before its bytes are written: at most
   * `Limits.maxPendingUploadsPerMember` pending per member (429 `too_many_uploads`).
   * A reservation whose upload never finishes expires: a single upload after
   * `UPLOADING_TTL_MS`, a multipart one after `Limits.pendingUploadTtlMs`. Reservations
   * past their expiry (the alarm has not purged them yet) do not count.
   */
  reserve(
    uploaderId: string,
    chatId: string,
    mediaId: string,
    upload: { size: number; name?: string | undefined; multipart?: MultipartState | undefined },
    now: number,
  ): Reservation {
    const { media } = schema;
    const pending = this.#db
      .select({ n: count() })
      .from(media)
      .where(and(eq(media.uploaderId, uploaderId), inArray(media.state, PENDING_STATES), gt(media.expiresAt, now)))
      .get()!.n;
    if (pending >= Limits.maxPendingUploadsPerMember) {
      throw new AppError(
        "too_many_uploads",
        429,
        `at most ${Limits.maxPendingUploadsPerMember} uploads may wait to be sent in a chat: send or let some expire first`,
        { retryable: false },
      );
    }
    const r2Key = mediaKey(chatId, mediaId);
    const expiresAt = now + (upload.multipart ? Limits.pendingUploadTtlMs : UPLOADING_TTL_MS);
    this.#db
      .insert(media)
      .values({
        mediaId,
        uploaderId,
        state: "uploading",
        r2Key,
        size: upload.size,
        createdAt: now,
        expiresAt,
        name: upload.name ?? null,
        multipart: upload.multipart ? JSON.stringify(upload.multipart) : null,
      })
      .run();
    this.#schedule(expiresAt);
    return { r2Key, expiresAt };
  }

  /**
   * The upload's bytes are in R2: it is ready to be attached, and waits
   * `Limits.pendingUploadTtlMs` from now for a message.
   */
  stored(uploaderId: string, mediaId: string, detected: DetectedMedia, now: number): UploadResult {
    const row = this.#db.select().from(schema.media).where(eq(schema.media.mediaId, mediaId)).get();
    if (!row || row.uploaderId !== uploaderId) throw notFound();
    // A single upload is `uploading`; a multipart one `completing` (a retried completion may find it `ready`).
    if (row.multipart && row.state === "ready") return resultOf(row);
    if (row.state !== (row.multipart ? "completing" : "uploading")) throw notFound();
    const expiresAt = now + Limits.pendingUploadTtlMs;
    this.#db
      .update(schema.media)
      .set({ state: "ready", kind: detected.kind, contentType: detected.contentType, size: detected.size, expiresAt })
      .where(eq(schema.media.mediaId, mediaId))
      .run();
    this.#schedule(expiresAt);
    return { mediaId, kind: detected.kind, contentType: detected.contentType, size: detected.size, expiresAt };
  }

  /**
   * An upload that will not finish (refused type, failed write): its row goes
   * `deleting`, so whatever R2 holds for it is removed by the next purge.
   * `multipartOnly`: DELETE …/multipart/:mediaId, which only aborts a multipart upload
   * still taking parts (a finished one is a file now, 404 here; one being completed too).
   */
  abandon(uploaderId: string, mediaId: string, now: number, options: { multipartOnly?: boolean } = {}): void {
    const row = this.#db.select().from(schema.media).where(eq(schema.media.mediaId, mediaId)).get();
    if (!row || row.uploaderId !== uploaderId) throw notFound();
    const abandonable = options.multipartOnly ? row.multipart !== null && row.state === "uploading" : row.state === "uploading" || row.state === "ready";
    if (!abandonable) throw notFound();
    this.#db.update(schema.media).set({ state: "deleting", expiresAt: null }).where(eq(schema.media.mediaId, mediaId)).run();
    this.#schedule(now);
  }

  // ---- Multipart ----

  /** R2 created the multipart upload of a reservation. */
  multipartCreated(uploaderId: string, mediaId: string, uploadId: string): void {
    const row = this.#ownUpload(uploaderId, mediaId, "uploading");
    const state = multipartOf(row);
    state.uploadId = uploadId;
    this.#db.update(schema.media).set({ multipart: JSON.stringify(state) }).where(eq(schema.media.mediaId, mediaId)).run();
  }

  /** Where part `partNumber` of a multipart upload goes, and how long it must be. */
  partTarget(uploaderId: string, mediaId: string, partNumber: number): PartTarget {
    const row = this.#ownUpload(uploaderId, mediaId, "uploading");
    const state = multipartOf(row);
    if (!state.uploadId) throw notFound();
    if (partNumber > state.partCount) {
      throw new AppError("validation_failed", 400, `this upload has ${state.partCount} parts`, { retryable: false });
    }
    const size = partNumber < state.partCount ? state.partSize : row.size - state.partSize * (state.partCount - 1);
    return { r2Key: row.r2Key, uploadId: state.uploadId, size, name: row.name };
  }

  /**
   * A part is stored; part 1 also says what the file is (from its first bytes). Also
   * while completing: a part sent again before the completion began may finish after
   * it, and its new etag is what R2 will want from the next completion.
   */
  partStored(uploaderId: string, mediaId: string, partNumber: number, etag: string, detected: { kind: MediaKind; contentType: string } | null): void {
    const row = this.#ownUpload(uploaderId, mediaId, "uploading", "completing");
    const state = multipartOf(row);
    state.parts[String(partNumber)] = etag;
    this.#db
      .update(schema.media)
      .set({ multipart: JSON.stringify(state), ...(detected ? { kind: detected.kind, contentType: detected.contentType } : {}) })
      .where(eq(schema.media.mediaId, mediaId))
      .run();
  }

  /**
   * Every part, for R2 to assemble; 400 while one is missing. The row goes `completing`
   * first (kept `COMPLETING_TTL_MS` at least): no abandon, and no expiry, purges it while
   * R2 assembles the object. A retried completion finds it `completing` again, or
   * `ready` when it finished: then its result, `done`, is all there is to answer.
   */
  completion(uploaderId: string, mediaId: string, now: number): (Completion & DetectedMedia & { done?: undefined }) | { done: UploadResult } {
    const row = this.#db.select().from(schema.media).where(eq(schema.media.mediaId, mediaId)).get();
    if (!row || row.uploaderId !== uploaderId || !row.multipart) throw notFound();
    if (row.state === "ready") return { done: resultOf(row) };
    if (row.state !== "uploading" && row.state !== "completing") throw notFound();
    const state = multipartOf(row);
    const missing: number[] = [];
    for (let part = 1; part <= state.partCount; part++) if (!state.parts[String(part)]) missing.push(part);
    if (missing.length > 0 || !row.kind || !row.contentType) {
      throw new AppError("validation_failed", 400, `parts missing: ${missing.slice(0, 20).join(", ")}`, { retryable: false });
    }
    const parts = Object.entries(state.parts).map(([partNumber, etag]) => ({ partNumber: Number(partNumber), etag }));
    const expiresAt = Math.max(row.expiresAt ?? 0, now + COMPLETING_TTL_MS);
    this.#db.update(schema.media).set({ state: "completing", expiresAt }).where(eq(schema.media.mediaId, mediaId)).run();
    this.#schedule(expiresAt);
    return { r2Key: row.r2Key, uploadId: state.uploadId, parts, kind: row.kind, contentType: row.contentType, size: row.size };
  }

  // ---- Messages ----

  /**
   * The attachments of a new message, from the sender's descriptions and the uploads:
   * each must be the sender's own upload to this chat, stored and not yet attached, and
   * named once. 400 `invalid_attachment` otherwise.
   */
  resolve(senderId: string, inputs: AttachmentInput[]): Attachment[] {
    const ids = inputs.map((input) => input.mediaId);
    const rows = new Map(
      this.#db
        .select()
        .from(schema.media)
        .where(inArray(schema.media.mediaId, ids))
        .all()
        .map((row) => [row.mediaId, row]),
    );
    const seen = new Set<string>();
    return inputs.map((input) => {
      const row = rows.get(input.mediaId);
      if (seen.has(input.mediaId)) throw invalidAttachment(input.mediaId, "is named twice");
      seen.add(input.mediaId);
      // Another chat's media, a made-up id and someone else's upload look the same.
      if (!row || row.uploaderId !== senderId) throw invalidAttachment(input.mediaId, "is not your upload to this chat");
      if (row.state === "attached") throw invalidAttachment(input.mediaId, "is already attached to a message");
      if (row.state !== "ready" || !row.kind || !row.contentType) throw invalidAttachment(input.mediaId, "is not uploaded (or expired)");
      const name = input.name ?? row.name ?? undefined;
      return Attachment.parse({ ...input, ...(name !== undefined ? { name } : {}), kind: row.kind, contentType: row.contentType, size: row.size });
    });
  }

  /** The message `seq` carries these uploads (same turn as its append): no longer pending. */
  attach(mediaIds: string[], seq: number): void {
    if (mediaIds.length === 0) return;
    this.#db
      .update(schema.media)
      .set({ state: "attached", attachedSeq: seq, expiresAt: null })
      .where(and(inArray(schema.media.mediaId, mediaIds), eq(schema.media.state, "ready")))
      .run();
  }

  /**
   * The message at `seq` was deleted: its files go `deleting` now (no download serves
   * them from here on) and their R2 objects are deleted; a failure is retried by the
   * scheduler, whose deadline is set before anything is awaited.
   */
  async releaseMessage(seq: number, now: number): Promise<void> {
    const { media } = schema;
    const released = this.#db
      .update(media)
      .set({ state: "deleting", expiresAt: null })
      .where(and(eq(media.attachedSeq, seq), eq(media.state, "attached")))
      .returning({ mediaId: media.mediaId })
      .all();
    if (released.length === 0) return;
    this.#schedule(now + PURGE_RETRY_MS);
    try {
      await this.#purge();
    } catch (error) {
      log.warn("could not delete a deleted message's media yet; retrying", describeError(error));
    }
  }

  // ---- Downloads ----

  /**
   * A file `userId` may download: an attached one whose message lies in one of their
   * membership `periods`, or their own upload not yet sent. 404 `not_found` otherwise,
   * the same whether or not it exists.
   */
  readable(userId: string, mediaId: string, periods: Period[]): StoredMedia {
    const row = this.#db.select().from(schema.media).where(eq(schema.media.mediaId, mediaId)).get();
    if (!row || !row.kind || !row.contentType) throw notFound();
    if (row.state === "ready" && row.uploaderId === userId && periods.some((p) => p.leftSeq === null)) return this.#describe(row);
    if (row.state !== "attached" || row.attachedSeq === null) throw notFound();
    const seq = row.attachedSeq;
    if (!periods.some((p) => p.joinedSeq <= seq && (p.leftSeq === null || seq <= p.leftSeq))) throw notFound();
    return this.#describe(row);
  }

  /** A file a signed link names (its signer's access was checked when it was signed). */
  linked(mediaId: string): StoredMedia {
    const row = this.#db.select().from(schema.media).where(eq(schema.media.mediaId, mediaId)).get();
    if (!row || (row.state !== "attached" && row.state !== "ready") || !row.kind || !row.contentType) throw notFound();
    return this.#describe(row);
  }

  #describe(row: MediaRow): StoredMedia {
    return { r2Key: row.r2Key, kind: row.kind!, contentType: row.contentType!, size: row.size, name: this.#nameOf(row) };
  }

  /** The name the message gave the file, else the one given at upload. */
  #nameOf(row: MediaRow): string | null {
    if (row.attachedSeq !== null) {
      const stored = this.#db.select({ attachments: schema.events.attachments }).from(schema.events).where(eq(schema.events.seq, row.attachedSeq)).get();
      if (stored?.attachments) {
        const named = (JSON.parse(stored.attachments) as Attachment[]).find((a) => a.mediaId === row.mediaId)?.name;
        if (named) return named;
      }
    }
    return row.name;
  }

  // ---- Deadline ----

  /**
   * The scheduler's "media" deadline: pending uploads past their expiry go `deleting`,
   * `deleting` rows have their R2 objects deleted, and the deadline moves to the next
   * expiry. Idempotent (alarms are delivered at least once).
   */
  async run(now: number): Promise<void> {
    const { media } = schema;
    this.#db
      .update(media)
      .set({ state: "deleting", expiresAt: null })
      .where(and(inArray(media.state, PENDING_STATES), lte(media.expiresAt, now)))
      .run();
    const more = await this.#purge();
    if (more) this.#schedule(now);
    const next = this.#db.select({ at: min(media.expiresAt) }).from(media).where(isNotNull(media.expiresAt)).get()?.at;
    if (next !== null && next !== undefined) this.#schedule(next);
  }

  /**
   * Deletes one batch of `deleting` files from R2, then their rows; true when more remain.
   * Throws when R2 fails: a row whose multipart upload could not be aborted (for any
   * reason but the upload being gone already) stays `deleting`, for the retry.
   */
  async #purge(): Promise<boolean> {
    const { media } = schema;
    const rows = this.#db.select().from(media).where(eq(media.state, "deleting")).orderBy(asc(media.mediaId)).limit(PURGE_BATCH).all();
    if (rows.length === 0) return false;
    // Unfinished multipart uploads hold their parts apart from the object.
    const aborts = await Promise.all(
      rows.map(async (row) => {
        const uploadId = row.multipart ? (JSON.parse(row.multipart) as MultipartState).uploadId : null;
        if (!uploadId) return null;
        try {
          await this.#bucket.resumeMultipartUpload(row.r2Key, uploadId).abort();
          return null;
        } catch (error) {
          return isNoSuchUpload(error) ? null : error;
        }
      }),
    );
    const purgeable = rows.filter((_row, i) => aborts[i] === null);
    if (purgeable.length > 0) {
      await this.#bucket.delete(purgeable.map((row) => row.r2Key));
      // After the await: only rows still deleting (nothing moves a row out of that state).
      this.#db
        .delete(media)
        .where(and(inArray(media.mediaId, purgeable.map((row) => row.mediaId)), eq(media.state, "deleting")))
        .run();
    }
    const failed = aborts.find((error) => error !== null);
    if (failed !== undefined) throw failed;
    return rows.length === PURGE_BATCH;
  }

  #ownUpload(uploaderId: string, mediaId: string, ...states: MediaRow["state"][]): MediaRow {
    const row = this.#db.select().from(schema.media).where(eq(schema.media.mediaId, mediaId)).get();
    if (!row || row.uploaderId !== uploaderId || !states.includes(row.state)) throw notFound();
    return row;
  }
}

/** What an upload's stored row answers (a retried completion gets the same). */
function resultOf(row: MediaRow): UploadResult {
  return { mediaId: row.mediaId, kind: row.kind!, contentType: row.contentType!, size: row.size, expiresAt: row.expiresAt! };
}

function multipartOf(row: MediaRow): MultipartState {
  if (!row.multipart) throw new AppError("not_found", 404, "no such multipart upload", { retryable: false });
  return JSON.parse(row.multipart) as MultipartState;
}
