import { AppError } from "../lib/app-error.ts";
import { describeError, log } from "../lib/log.ts";
import { detectContentType, SNIFF_BYTES, type DetectedType } from "./content-types.ts";

/**
 * Streaming an upload from the request into R2: the body is never held whole. The size
 * is declared up front (Content-Length) and checked before a byte is read; the first
 * bytes are peeked to decide the type; then the peeked bytes and the rest flow through
 * a FixedLengthStream, which R2 needs to know the length and which fails the write if
 * the body turns out shorter or longer than declared.
 */

/**
 * The declared size of a raw upload: 411 `length_required` without Content-Length, 413
 * `too_large` over `maxBytes` (decided before the body is touched), 400 when empty or malformed.
 */
export function declaredLength(headers: Headers, maxBytes: number): number {
  const raw = headers.get("content-length");
  if (raw === null) {
    throw new AppError("length_required", 411, "send the file with a Content-Length header (its size in bytes)", { retryable: false });
  }
  if (!/^\d{1,16}$/.test(raw.trim())) throw new AppError("validation_failed", 400, "Content-Length must be a number of bytes", { retryable: false });
  const length = Number(raw.trim());
  if (length > maxBytes) {
    throw new AppError("too_large", 413, `a file here is at most ${maxBytes} bytes (larger files: the multipart upload)`, { retryable: false });
  }
  if (length === 0) throw new AppError("validation_failed", 400, "the file is empty", { retryable: false });
  return length;
}

/** A body whose first bytes were read: `head` holds them, `stream` yields the whole body again. */
export type PeekedBody = { head: Uint8Array; stream: ReadableStream<Uint8Array> };

/** Reads just enough of `body` to sniff its type; nothing else is read until `stream` is. */
export async function peek(body: ReadableStream<Uint8Array>, bytes = SNIFF_BYTES): Promise<PeekedBody> {
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let length = 0;
  let done = false;
  while (length < bytes) {
    const next = await reader.read();
    if (next.done) {
      done = true;
      break;
    }
    chunks.push(next.value);
    length += next.value.byteLength;
  }
  const head = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    head.set(chunk, offset);
    offset += chunk.byteLength;
  }
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      if (head.byteLength > 0) controller.enqueue(head);
      if (done) controller.close();
    },
    async pull(controller) {
      const next = await reader.read();
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
  return { head, stream };
}

/** The type of a peeked body, or 415 `unsupported_media_type` (see content-types.ts). */
export function requireAllowedType(head: Uint8Array, name: string | undefined, allowed?: (type: DetectedType) => boolean): DetectedType {
  const detected = detectContentType(head, name);
  if (!detected || (allowed && !allowed(detected))) {
    throw new AppError("unsupported_media_type", 415, "this kind of file cannot be shared (its first bytes are not an allowed type)", { retryable: false });
  }
  return detected;
}

/**
 * `stream` as a body of exactly `length` bytes, for R2 (which needs the length up front).
 * After a failed write, `mismatch()` says whether the body was not that long: the bytes
 * are counted on their way in, and the pipe is stopped and awaited before the answer, so
 * a short or long body is always a 400 and an R2 failure always a 503 (never decided by
 * which of the two errors settles first).
 */
export function exactLength(stream: ReadableStream<Uint8Array>, length: number): { body: ReadableStream<Uint8Array>; mismatch: () => Promise<boolean> } {
  const fixed = new FixedLengthStream(length);
  let seen = 0;
  let ended = false;
  const counter = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      seen += chunk.byteLength;
      controller.enqueue(chunk);
    },
    flush() {
      ended = true;
    },
  });
  const stop = new AbortController();
  const piped = stream.pipeThrough(counter, { signal: stop.signal }).pipeTo(fixed.writable, { signal: stop.signal });
  piped.catch(() => undefined);
  return {
    body: fixed.readable as ReadableStream<Uint8Array>,
    mismatch: async () => {
      stop.abort(new Error("the write failed"));
      await Promise.allSettled([piped]);
      const wrong = seen > length || (ended && seen !== length);
      if (wrong) log.info("an upload body did not match its Content-Length", { declared: length, seen });
      return wrong;
    },
  };
}

/** The error for a write that failed: the body's length was wrong (400), or R2 failed (503). */
export function writeError(lengthMismatch: boolean, error: unknown): AppError {
  if (lengthMismatch) return new AppError("validation_failed", 400, "the body was not as long as its Content-Length", { retryable: false });
  log.warn("could not store an upload", describeError(error));
  return new AppError("unavailable", 503, "the file could not be stored; try again", { retryable: true });
}
