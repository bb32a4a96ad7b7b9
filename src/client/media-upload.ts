import type { z } from "zod";
import { MultipartUpload, UploadedPart, UploadResult, type StartMultipartRequest } from "../protocol/index.ts";
import type { ApiRequestOptions } from "./api-client.ts";
import { ApiError } from "./api-error.ts";
import { backoffMs } from "./retry.ts";

/** A file to upload: a Blob (a `File` from an input), or its bytes. */
export type MediaData = Blob | ArrayBuffer | Uint8Array;

export type UploadOptions = {
  /** The file name, kept with the upload (shown and used for downloads). */
  name?: string;
  /** A hint only: the server decides what the file is from its first bytes. */
  contentType?: string;
  /** Bytes sent so far, rising to `total`. */
  onProgress?: (sent: number, total: number) => void;
  /** Aborts the upload (a multipart one on the server too); the promise rejects with the signal's reason. */
  signal?: AbortSignal;
};

/** The server's default single-upload limit (`MEDIA_MAX_BYTES`, 25 MiB). */
export const DEFAULT_SINGLE_UPLOAD_LIMIT = 25 * 1024 * 1024;
/** Bytes handed to the request at a time when progress is counted from the body stream. */
const CHUNK_BYTES = 64 * 1024;
/** Tries of one part before the upload is given up. */
const PART_ATTEMPTS = 5;

/** What an upload needs of the ApiClient. */
export type UploadContext = {
  call<T>(method: string, path: string, schema: z.ZodType<T> | null, options?: ApiRequestOptions): Promise<T>;
  /** The app gave the client its own fetch: uploads go through it too. */
  customFetch: boolean;
  singleUploadLimit: number;
};

export function mediaBlob(data: MediaData): Blob {
  return data instanceof Blob ? data : new Blob([data as ArrayBuffer]);
}

/** The request options that send `blob` as the body, typed `contentType` (default octet-stream). */
export function uploadBody(blob: Blob, contentType?: string): ApiRequestOptions {
  return { bytes: () => blob, headers: { "content-type": contentType || blob.type || "application/octet-stream" } };
}

/**
 * Uploads to `chatPath` (`/api/chats/:chatId`): in one request up to the single-upload
 * limit, else in parts.
 */
export async function uploadMedia(context: UploadContext, chatPath: string, data: MediaData, options: UploadOptions): Promise<UploadResult> {
  const blob = mediaBlob(data);
  options.signal?.throwIfAborted();
  if (blob.size > context.singleUploadLimit) return uploadInParts(context, chatPath, blob, options);
  const request = uploadBody(blob, options.contentType);
  if (options.signal) request.signal = options.signal;
  const progress = options.onProgress ? new Progress(blob.size, options.onProgress) : null;
  if (progress) Object.assign(request, progressBody(blob, progress, context.customFetch, request.headers!));
  const query = options.name === undefined ? "" : `?name=${encodeURIComponent(options.name)}`;
  const result = await context.call("POST", `${chatPath}/media${query}`, UploadResult, request);
  progress?.report(blob.size);
  return result;
}

/** Reports progress only forward (a request sent again after a token refresh starts its count over). */
class Progress {
  #reported = -1;
  readonly total: number;
  readonly onProgress: (sent: number, total: number) => void;
  constructor(total: number, onProgress: (sent: number, total: number) => void) {
    this.total = total;
    this.onProgress = onProgress;
  }
  report(sent: number): void {
    if (sent <= this.#reported) return;
    this.#reported = sent;
    this.onProgress(sent, this.total);
  }
}

/**
 * How to send `blob` so its progress can be told. Outside browsers: a body stream,
 * counted as the request pulls it, with the length given (else fetch would send it
 * chunked, which the server refuses: 411). Browsers cannot give a stream body a
 * length, so there the request goes through XMLHttpRequest, whose upload events count
 * the bytes; without either, the progress is told at the end.
 */
function progressBody(blob: Blob, progress: Progress, customFetch: boolean, headers: Record<string, string>): Partial<ApiRequestOptions> {
  const Xhr = (globalThis as { XMLHttpRequest?: XhrConstructor }).XMLHttpRequest;
  const inBrowser = typeof (globalThis as { document?: unknown }).document !== "undefined";
  if (inBrowser) return Xhr && !customFetch ? { fetch: xhrFetch(Xhr, (sent) => progress.report(sent)) } : {};
  if (!requestStreamsWork()) return {};
  return {
    bytes: () => countedStream(blob, (sent) => progress.report(sent)),
    headers: { ...headers, "content-length": String(blob.size) },
  };
}

/** A stream of `blob`'s bytes that reads a chunk only when the request asks for one, and counts them. */
function countedStream(blob: Blob, onPulled: (sent: number) => void): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        if (offset >= blob.size) return controller.close();
        const end = Math.min(blob.size, offset + CHUNK_BYTES);
        const chunk = new Uint8Array(await blob.slice(offset, end).arrayBuffer());
        offset = end;
        controller.enqueue(chunk);
        onPulled(end);
      },
    },
    { highWaterMark: 0 }, // nothing read ahead: the count is what the request took
  );
}

/** Whether fetch sends a ReadableStream as the body (Node, Deno, workerd), by the standard feature test. */
function requestStreamsWork(): boolean {
  try {
    let duplexAsked = false;
    const request = new Request("http://x/", {
      method: "POST",
      body: new ReadableStream(),
      get duplex() {
        duplexAsked = true;
        return "half";
      },
    } as RequestInit);
    return duplexAsked && !request.headers.has("content-type");
  } catch {
    return false;
  }
}

// ---- Large files: in parts ----

async function uploadInParts(context: UploadContext, chatPath: string, blob: Blob, options: UploadOptions): Promise<UploadResult> {
  const start: StartMultipartRequest = { size: blob.size };
  if (options.name !== undefined) start.name = options.name;
  const signal = options.signal;
  const upload = await context.call("POST", `${chatPath}/media/multipart`, MultipartUpload, withSignal({ body: start }, signal));
  const uploadPath = `${chatPath}/media/multipart/${encodeURIComponent(upload.mediaId)}`;
  const progress = options.onProgress ? new Progress(blob.size, options.onProgress) : null;
  try {
    if (Math.ceil(blob.size / upload.partSize) !== upload.partCount) {
      throw new Error(`the server asked for ${upload.partCount} parts of ${upload.partSize} bytes for ${blob.size} bytes`);
    }
    for (let partNumber = 1; partNumber <= upload.partCount; partNumber++) {
      const from = (partNumber - 1) * upload.partSize;
      const part = blob.slice(from, Math.min(blob.size, from + upload.partSize));
      const uploaded = await putPart(context, `${uploadPath}/parts/${partNumber}`, part, signal);
      if (uploaded.partNumber !== partNumber || uploaded.size !== part.size) {
        throw new Error(`part ${partNumber} (${part.size} bytes) was stored as part ${uploaded.partNumber} of ${uploaded.size} bytes`);
      }
      progress?.report(from + part.size);
    }
    signal?.throwIfAborted();
    return await context.call("POST", `${uploadPath}/complete`, UploadResult, withSignal({}, signal));
  } catch (error) {
    // Nothing is left half-uploaded on the server; the abort itself may fail (the upload then expires).
    await context.call("DELETE", uploadPath, null).catch(() => undefined);
    throw error;
  }
}

/** One part, tried again after failures that may pass (the network, a 5xx, a retryable refusal). */
async function putPart(context: UploadContext, path: string, part: Blob, signal: AbortSignal | undefined): Promise<UploadedPart> {
  for (let failures = 1; ; failures++) {
    try {
      return await context.call("PUT", path, UploadedPart, withSignal(uploadBody(part), signal));
    } catch (error) {
      signal?.throwIfAborted();
      // An ApiError is the server's answer; anything else is the network (a TypeError in fetch).
      const retryable = error instanceof ApiError ? error.body.retryable : error instanceof TypeError;
      if (!retryable || failures >= PART_ATTEMPTS) throw error;
      const delayMs = (error instanceof ApiError ? error.body.retryAfterMs : undefined) ?? backoffMs(failures);
      await sleep(delayMs, signal);
    }
  }
}

function withSignal(options: ApiRequestOptions, signal: AbortSignal | undefined): ApiRequestOptions {
  if (signal) options.signal = signal;
  return options;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", aborted);
      resolve();
    }, ms);
    const aborted = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", aborted, { once: true });
  });
}

// ---- Browsers: XMLHttpRequest, for its upload progress ----

type XhrConstructor = new () => {
  open(method: string, url: string): void;
  setRequestHeader(name: string, value: string): void;
  getAllResponseHeaders(): string;
  send(body: unknown): void;
  abort(): void;
  responseType: string;
  readonly response: unknown;
  readonly status: number;
  readonly upload: { onprogress: ((event: { loaded: number }) => void) | null };
  onload: (() => void) | null;
  onerror: (() => void) | null;
  onabort: (() => void) | null;
};

/** A fetch over XMLHttpRequest that reports the bytes sent (browsers count them; fetch cannot). */
function xhrFetch(Xhr: XhrConstructor, onSent: (sent: number) => void): typeof fetch {
  return ((input: string, init: RequestInit = {}) =>
    new Promise<Response>((resolve, reject) => {
      if (init.signal?.aborted) return reject(init.signal.reason);
      const xhr = new Xhr();
      xhr.open(init.method ?? "GET", input);
      // The browser sets the length itself (and refuses a script that sets it).
      new Headers(init.headers).forEach((value, name) => name !== "content-length" && xhr.setRequestHeader(name, value));
      xhr.responseType = "blob";
      xhr.upload.onprogress = (event) => onSent(event.loaded);
      xhr.onload = () => {
        const headers = new Headers();
        for (const line of xhr.getAllResponseHeaders().trim().split(/\r?\n/)) {
          const colon = line.indexOf(":");
          if (colon > 0) headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
        }
        const empty = [101, 204, 205, 304].includes(xhr.status);
        resolve(new Response(empty ? null : (xhr.response as Blob), { status: xhr.status, headers }));
      };
      xhr.onerror = () => reject(new TypeError("the upload failed (network)"));
      xhr.onabort = () => reject(init.signal?.reason ?? new DOMException("the upload was aborted", "AbortError"));
      init.signal?.addEventListener("abort", () => xhr.abort(), { once: true });
      xhr.send(init.body);
    })) as unknown as typeof fetch;
}
