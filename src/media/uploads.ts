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

/**
 * A body whose first bytes were read: `head` holds them, `rest` is the body from there
 * (null when the head was all of it). Nothing beyond the head is read until it is piped.
 */
export type PeekedBody = { head: Uint8Array; rest: ReadableStream<Uint8Array> | null };

/** Reads just enough of `body` to sniff its type. */
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
  reader.releaseLock();
  const head = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    head.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return { head, rest: done ? null : body };
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
 * The upload as a body of exactly `length` bytes, for R2 (which needs the length up
 * front). The peeked head is written first, then the rest is piped by the runtime
 * itself: no JavaScript runs per chunk, which keeps an upload's CPU time to about a third
 * of a stream pumped in JavaScript (measured by the benchmark's media scenario).
 *
 * After a failed write, `mismatch(error)` says whether the body was at fault: a body
 * shorter or longer than declared makes the FixedLengthStream refuse it, which either fails
 * the pipe before R2's put reports anything or is the very error the put reports; when R2
 * fails on its own, its put fails first with its own error. The pipe is awaited first.
 */
function exactLength(source: ReadableStream<Uint8Array> | PeekedBody, length: number): { body: ReadableStream<Uint8Array>; mismatch: (putError: unknown) => Promise<boolean> } {
  const fixed = new FixedLengthStream(length);
  let putFailed = false;
  let bodyAtFault = false;
  const piped = pipeInto(source, fixed.writable).catch((error: unknown) => {
    // Failing before the put reported its failure: the body caused it.
    if (!putFailed) bodyAtFault = true;
    log.info("an upload body could not be piped into storage", describeError(error));
  });
  return {
    body: fixed.readable as ReadableStream<Uint8Array>,
    mismatch: async (putError: unknown) => {
      putFailed = true;
      await piped;
      return bodyAtFault || isLengthError(putError);
    },
  };
}

/** The runtime's own refusal of a body that is not the declared length (a TypeError naming FixedLengthStream). */
function isLengthError(error: unknown): boolean {
  return error instanceof TypeError && error.message.includes("FixedLengthStream");
}

async function pipeInto(source: ReadableStream<Uint8Array> | PeekedBody, writable: WritableStream<Uint8Array>): Promise<void> {
  if (source instanceof ReadableStream) return source.pipeTo(writable);
  const writer = writable.getWriter();
  if (source.head.byteLength > 0) await writer.write(source.head);
  if (!source.rest) return writer.close();
  writer.releaseLock();
  return source.rest.pipeTo(writable);
}

/**
 * Hands `write` (an R2 put or part upload) the upload as a body of exactly `length`
 * bytes, and answers what it answers; a failed write is a 400 when the body was not that
 * long, a 503 (retryable) when storage failed.
 */
export async function writeExactly<T>(source: ReadableStream<Uint8Array> | PeekedBody, length: number, write: (body: ReadableStream<Uint8Array>) => Promise<T>): Promise<T> {
  const { body, mismatch } = exactLength(source, length);
  try {
    return await write(body);
  } catch (error) {
    throw writeError(await mismatch(error), error);
  }
}

/** A request's body, or 400 when it has none. */
export function requestBody(request: Request): ReadableStream<Uint8Array> {
  if (!request.body) throw new AppError("validation_failed", 400, "the file is empty", { retryable: false });
  return request.body as ReadableStream<Uint8Array>;
}

/** The error for a write that failed: the body's length was wrong (400), or R2 failed (503). */
function writeError(lengthMismatch: boolean, error: unknown): AppError {
  if (lengthMismatch) return new AppError("validation_failed", 400, "the body was not as long as its Content-Length", { retryable: false });
  log.warn("could not store an upload", describeError(error));
  return new AppError("unavailable", 503, "the file could not be stored; try again", { retryable: true });
}
