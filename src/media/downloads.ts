import { AppError } from "../lib/app-error.ts";
import type { MediaKind } from "../protocol/index.ts";

/** What a download needs to know about a file besides its bytes (from its chat's registry). */
export type MediaDescription = { r2Key: string; kind: MediaKind; contentType: string; size: number; name: string | null };

type ByteRange = { offset: number; length: number };

/**
 * A `Range` header against a file of `size` bytes: the one range asked for, null to
 * send the whole file (no header, or one this server ignores: other units, several
 * ranges, malformed), or 416 when it starts past the end.
 */
export function parseRange(header: string | null, size: number): ByteRange | null {
  if (header === null) return null;
  const match = /^bytes=(\d{0,15})-(\d{0,15})$/.exec(header.trim());
  if (!match || (match[1] === "" && match[2] === "")) return null;
  const unsatisfiable = () =>
    new AppError("range_not_satisfiable", 416, `the range is outside the file (${size} bytes)`, { retryable: false });
  if (match[1] === "") {
    // The last n bytes.
    const suffix = Number(match[2]);
    if (suffix === 0) throw unsatisfiable();
    const length = Math.min(suffix, size);
    return { offset: size - length, length };
  }
  const first = Number(match[1]);
  const last = match[2] === "" ? size - 1 : Number(match[2]);
  if (match[2] !== "" && last < first) return null; // invalid: ignored, as RFC 9110 asks
  if (first >= size) throw unsatisfiable();
  return { offset: first, length: Math.min(last, size - 1) - first + 1 };
}

/** RFC 8187 value characters: what `encodeURIComponent` leaves alone except ' ( ) * and !. */
function encodeExtValue(text: string): string {
  return encodeURIComponent(text).replace(/['()*!]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * Documents are downloaded (`attachment`), never shown under our origin; images, video
 * and audio are shown (`inline`). The name goes in `filename*` exactly, and as an ASCII
 * fallback with anything that could break the header replaced.
 */
export function contentDisposition(kind: MediaKind, name: string | null): string {
  const type = kind === "document" ? "attachment" : "inline";
  if (!name) return type;
  const fallback = name.replace(/[^\x20-\x7e]|["\\%;]/g, "_");
  return `${type}; filename="${fallback}"; filename*=UTF-8''${encodeExtValue(name)}`;
}

/**
 * Streams a file from R2 (or its requested range) with the headers that keep it from
 * running as a page: the detected type, nosniff, a Content-Disposition. `cacheControl`
 * is `private` for bearer downloads and bounded by the link's validity for signed ones.
 * One R2 call: the range is checked against the size the registry recorded.
 */
export async function mediaResponse(bucket: R2Bucket, media: MediaDescription, headers: Headers, cacheControl: string): Promise<Response> {
  let range: ByteRange | null;
  try {
    range = parseRange(headers.get("range"), media.size);
  } catch (error) {
    if (error instanceof AppError && error.code === "range_not_satisfiable") {
      return Response.json({ error: error.toBody() }, { status: 416, headers: { "Content-Range": `bytes */${media.size}`, "X-Content-Type-Options": "nosniff" } });
    }
    throw error;
  }
  const ifNoneMatch = headers.get("if-none-match");
  const object = await bucket.get(media.r2Key, {
    ...(range ? { range } : {}),
    ...(ifNoneMatch ? { onlyIf: { etagDoesNotMatch: ifNoneMatch.replace(/^W\//, "").replace(/"/g, "") } } : {}),
  });
  if (!object) throw new AppError("not_found", 404, "no such media", { retryable: false });
  const responseHeaders = new Headers({
    "Content-Type": media.contentType,
    "X-Content-Type-Options": "nosniff",
    "Content-Disposition": contentDisposition(media.kind, media.name),
    "Cache-Control": cacheControl,
    "Accept-Ranges": "bytes",
    ETag: object.httpEtag,
  });
  // The condition failed: the client has this version already.
  if (!("body" in object)) return new Response(null, { status: 304, headers: responseHeaders });
  if (!range) {
    responseHeaders.set("Content-Length", String(object.size));
    return new Response(object.body, { status: 200, headers: responseHeaders });
  }
  responseHeaders.set("Content-Range", `bytes ${range.offset}-${range.offset + range.length - 1}/${object.size}`);
  responseHeaders.set("Content-Length", String(range.length));
  return new Response(object.body, { status: 206, headers: responseHeaders });
}
