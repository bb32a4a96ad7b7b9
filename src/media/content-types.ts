import type { MediaKind } from "../protocol/index.ts";

/**
 * What an upload is, decided from its first bytes against an allow-list, never from the
 * name or the Content-Type the client sent: R2 stores whatever type it is told, and a
 * browser shown an HTML or script upload under our origin would run it. Anything not
 * recognised here (executables, HTML, SVG, plain text) is refused as 415.
 */
export type DetectedType = { kind: MediaKind; contentType: string };

/** How many leading bytes detection needs (the ftyp brand ends at byte 12). */
export const SNIFF_BYTES = 16;

const ascii = (bytes: Uint8Array, offset: number, text: string): boolean => {
  if (bytes.length < offset + text.length) return false;
  for (let i = 0; i < text.length; i++) if (bytes[offset + i] !== text.charCodeAt(i)) return false;
  return true;
};

const startsWith = (bytes: Uint8Array, prefix: number[]): boolean => bytes.length >= prefix.length && prefix.every((byte, i) => bytes[i] === byte);

/** ISO base media files (`....ftyp<brand>`): the major brand tells image, audio and video apart. */
const FTYP_BRANDS: Record<string, DetectedType> = {
  heic: { kind: "image", contentType: "image/heic" },
  heix: { kind: "image", contentType: "image/heic" },
  mif1: { kind: "image", contentType: "image/heif" },
  msf1: { kind: "image", contentType: "image/heif" },
  avif: { kind: "image", contentType: "image/avif" },
  avis: { kind: "image", contentType: "image/avif" },
  "M4A ": { kind: "audio", contentType: "audio/mp4" },
  "M4B ": { kind: "audio", contentType: "audio/mp4" },
  "qt  ": { kind: "video", contentType: "video/quicktime" },
};
/** Any other brand of an ftyp box is an MP4 video (isom, mp41, mp42, avc1, dash, 3gp4…). */
const MP4: DetectedType = { kind: "video", contentType: "video/mp4" };

/** ZIP-based Office documents, told apart by the name's extension only (their first bytes are a plain ZIP). */
const ZIP_BY_EXTENSION: Record<string, string> = {
  docx: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
  xlsx: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
  pptx: "application/vnd.openxmlformats-officedocument.presentationml.presentation",
};
/** Legacy Office (OLE compound files), likewise by extension. */
const OLE_BY_EXTENSION: Record<string, string> = {
  doc: "application/msword",
  xls: "application/vnd.ms-excel",
  ppt: "application/vnd.ms-powerpoint",
};

function extensionOf(name: string | undefined): string {
  const match = name ? /\.([A-Za-z0-9]{1,8})$/.exec(name) : null;
  return match ? match[1]!.toLowerCase() : "";
}

/**
 * The type of a file from its first bytes (`SNIFF_BYTES` of them, fewer for a smaller
 * file); null when it is not on the allow-list. `name` only picks among document types
 * that share their magic bytes.
 */
export function detectContentType(head: Uint8Array, name?: string): DetectedType | null {
  // images
  if (startsWith(head, [0xff, 0xd8, 0xff])) return { kind: "image", contentType: "image/jpeg" };
  if (startsWith(head, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return { kind: "image", contentType: "image/png" };
  if (ascii(head, 0, "GIF87a") || ascii(head, 0, "GIF89a")) return { kind: "image", contentType: "image/gif" };
  if (ascii(head, 0, "RIFF") && ascii(head, 8, "WEBP")) return { kind: "image", contentType: "image/webp" };
  // ISO base media: HEIC/AVIF images, M4A audio, MP4 and QuickTime video
  if (ascii(head, 4, "ftyp") && head.length >= 12) {
    const brand = String.fromCharCode(...head.subarray(8, 12));
    return FTYP_BRANDS[brand] ?? MP4;
  }
  // video
  if (startsWith(head, [0x1a, 0x45, 0xdf, 0xa3])) return { kind: "video", contentType: "video/webm" };
  // audio
  if (ascii(head, 0, "ID3")) return { kind: "audio", contentType: "audio/mpeg" };
  if (ascii(head, 0, "OggS")) return { kind: "audio", contentType: "audio/ogg" };
  if (ascii(head, 0, "RIFF") && ascii(head, 8, "WAVE")) return { kind: "audio", contentType: "audio/wav" };
  if (head.length >= 2 && head[0] === 0xff) {
    const second = head[1]!;
    // AAC ADTS: 12 sync bits, then layer 00.
    if ((second & 0xf6) === 0xf0) return { kind: "audio", contentType: "audio/aac" };
    // An MPEG audio frame: 11 sync bits, a version other than reserved (01), a layer other than reserved (00).
    if ((second & 0xe0) === 0xe0 && (second & 0x18) !== 0x08 && (second & 0x06) !== 0x00) return { kind: "audio", contentType: "audio/mpeg" };
  }
  // documents
  if (ascii(head, 0, "%PDF-")) return { kind: "document", contentType: "application/pdf" };
  if (startsWith(head, [0x50, 0x4b, 0x03, 0x04])) {
    return { kind: "document", contentType: ZIP_BY_EXTENSION[extensionOf(name)] ?? "application/zip" };
  }
  if (startsWith(head, [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1])) {
    return { kind: "document", contentType: OLE_BY_EXTENSION[extensionOf(name)] ?? "application/x-ole-storage" };
  }
  return null;
}
