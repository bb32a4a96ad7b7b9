import type { MediaKind } from "../protocol/index.ts";

/**
 * What an upload is, decided from its first bytes against an allow-list, never from the
 * name or the Content-Type the client sent: R2 stores whatever type it is told, and a
 * browser shown an HTML or script upload under our origin would run it. Anything not
 * recognised here (executables, HTML, SVG, plain text) is refused as 415.
 */
export type DetectedType = { kind: MediaKind; contentType: string };

/** How many leading bytes detection reads (an `ftyp` box's compatible brands follow byte 16). */
export const SNIFF_BYTES = 64;

const ascii = (bytes: Uint8Array, offset: number, text: string): boolean => {
  if (bytes.length < offset + text.length) return false;
  for (let i = 0; i < text.length; i++) if (bytes[offset + i] !== text.charCodeAt(i)) return false;
  return true;
};

const startsWith = (bytes: Uint8Array, prefix: number[]): boolean => bytes.length >= prefix.length && prefix.every((byte, i) => bytes[i] === byte);

/**
 * ISO base media files (`....ftyp<brand>`): the major brand tells image, audio and video
 * apart. Only these brands are accepted: `ftyp` at byte 4 alone says little (any file can
 * start so), and an unknown brand is refused (415) rather than guessed as video.
 */
const MP4: DetectedType = { kind: "video", contentType: "video/mp4" };
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
  isom: MP4,
  iso2: MP4,
  iso3: MP4,
  iso4: MP4,
  iso5: MP4,
  iso6: MP4,
  mp41: MP4,
  mp42: MP4,
  avc1: MP4,
  dash: MP4,
  "M4V ": MP4,
  "3gp4": { kind: "video", contentType: "video/3gpp" },
  "3gp5": { kind: "video", contentType: "video/3gpp" },
  "3gp6": { kind: "video", contentType: "video/3gpp" },
  "3g2a": { kind: "video", contentType: "video/3gpp2" },
};

/**
 * Whether `head` starts with an MPEG audio frame header: 11 sync bits, a version other
 * than reserved (01), a layer other than reserved (00), a bitrate index other than free
 * (0) or bad (15), a sample rate index other than reserved (3). FF FE and FF FF (byte
 * order marks, padding) are refused although their bits would pass.
 */
function isMpegFrame(head: Uint8Array): boolean {
  if (head.length < 3 || head[0] !== 0xff) return false;
  const second = head[1]!;
  const third = head[2]!;
  if (second === 0xfe || second === 0xff) return false;
  if ((second & 0xe0) !== 0xe0) return false;
  if ((second & 0x18) === 0x08 || (second & 0x06) === 0x00) return false;
  const bitrate = third >> 4;
  const sampleRate = (third >> 2) & 0x03;
  return bitrate !== 0 && bitrate !== 15 && sampleRate !== 3;
}

/** Whether `head` starts with an AAC ADTS header: 12 sync bits, layer 00, a sampling frequency index below 13. */
function isAdtsFrame(head: Uint8Array): boolean {
  if (head.length < 3 || head[0] !== 0xff) return false;
  return (head[1]! & 0xf6) === 0xf0 && ((head[2]! >> 2) & 0x0f) < 13;
}

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
 * An ISO base media file's type from its `ftyp` box: the major brand when it is on the
 * list, else the first listed compatible brand (cameras write their own major brand, such
 * as Sony's `XAVC`, and list `mp42` or `iso2` as compatible). Null when none is listed.
 */
function ftypType(head: Uint8Array): DetectedType | null {
  const boxSize = ((head[0]! << 24) | (head[1]! << 16) | (head[2]! << 8) | head[3]!) >>> 0;
  const end = Math.min(head.length, boxSize);
  // Bytes 8-11: the major brand; 12-15: its version; from 16: compatible brands.
  for (let offset = 8; offset + 4 <= end; offset += offset === 8 ? 8 : 4) {
    const brand = String.fromCharCode(...head.subarray(offset, offset + 4));
    if (Object.hasOwn(FTYP_BRANDS, brand)) return FTYP_BRANDS[brand]!;
  }
  return null;
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
    return ftypType(head);
  }
  // video
  if (startsWith(head, [0x1a, 0x45, 0xdf, 0xa3])) return { kind: "video", contentType: "video/webm" };
  // audio
  if (ascii(head, 0, "ID3")) return { kind: "audio", contentType: "audio/mpeg" };
  if (ascii(head, 0, "OggS")) return { kind: "audio", contentType: "audio/ogg" };
  if (ascii(head, 0, "RIFF") && ascii(head, 8, "WAVE")) return { kind: "audio", contentType: "audio/wav" };
  if (isAdtsFrame(head)) return { kind: "audio", contentType: "audio/aac" };
  if (isMpegFrame(head)) return { kind: "audio", contentType: "audio/mpeg" };
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
