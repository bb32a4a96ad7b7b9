import { describe, expect, it } from "vitest";
import { detectContentType } from "../../src/media/content-types.ts";

const bytes = (...parts: (string | number[])[]) =>
  new Uint8Array(parts.flatMap((part) => (typeof part === "string" ? [...part].map((c) => c.charCodeAt(0)) : part)).concat(Array(16).fill(0)));
const ftyp = (brand: string) => bytes([0, 0, 0, 0x20], "ftyp", brand);

describe("types are decided by magic bytes against an allow-list", () => {
  it.each([
    ["JPEG", bytes([0xff, 0xd8, 0xff, 0xe0]), undefined, "image", "image/jpeg"],
    ["PNG", bytes([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), undefined, "image", "image/png"],
    ["GIF", bytes("GIF89a"), undefined, "image", "image/gif"],
    ["WebP", bytes("RIFF", [1, 2, 3, 4], "WEBPVP8 "), undefined, "image", "image/webp"],
    ["HEIC", ftyp("heic"), undefined, "image", "image/heic"],
    ["AVIF", ftyp("avif"), undefined, "image", "image/avif"],
    ["MP4", ftyp("isom"), undefined, "video", "video/mp4"],
    ["MP4 (mp42)", ftyp("mp42"), undefined, "video", "video/mp4"],
    ["3GP", ftyp("3gp5"), undefined, "video", "video/3gpp"],
    ["QuickTime", ftyp("qt  "), undefined, "video", "video/quicktime"],
    // A camera's own major brand, with the usual ones listed as compatible (a 24-byte box).
    ["MP4 by a compatible brand (Sony XAVC)", bytes([0, 0, 0, 0x18], "ftyp", "XAVC", "\u0000\u0000\u0000\u0000", "mp42", "iso2"), undefined, "video", "video/mp4"],
    ["WebM", bytes([0x1a, 0x45, 0xdf, 0xa3]), undefined, "video", "video/webm"],
    ["MP3 with ID3", bytes("ID3", [4, 0]), undefined, "audio", "audio/mpeg"],
    ["MP3 frame", bytes([0xff, 0xfb, 0x90, 0x64]), undefined, "audio", "audio/mpeg"],
    ["MPEG-2 layer III frame", bytes([0xff, 0xf3, 0x48, 0xc4]), undefined, "audio", "audio/mpeg"],
    ["Ogg/Opus", bytes("OggS", [0]), undefined, "audio", "audio/ogg"],
    ["M4A", ftyp("M4A "), undefined, "audio", "audio/mp4"],
    ["WAV", bytes("RIFF", [1, 2, 3, 4], "WAVEfmt "), undefined, "audio", "audio/wav"],
    ["AAC ADTS", bytes([0xff, 0xf1, 0x50, 0x80]), undefined, "audio", "audio/aac"],
    ["PDF", bytes("%PDF-1.4"), undefined, "document", "application/pdf"],
    ["DOCX", bytes("PK", [3, 4]), "report.docx", "document", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"],
    ["XLSX", bytes("PK", [3, 4]), "Sheet.XLSX", "document", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"],
    ["PPTX", bytes("PK", [3, 4]), "deck.pptx", "document", "application/vnd.openxmlformats-officedocument.presentationml.presentation"],
    ["ZIP", bytes("PK", [3, 4]), "photos.zip", "document", "application/zip"],
    ["ZIP named .exe", bytes("PK", [3, 4]), "setup.exe", "document", "application/zip"],
    ["DOC", bytes([0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]), "old.doc", "document", "application/msword"],
    ["XLS", bytes([0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]), "old.xls", "document", "application/vnd.ms-excel"],
  ])("%s", (_label, head, name, kind, contentType) => {
    expect(detectContentType(head, name)).toEqual({ kind, contentType });
  });

  it.each([
    ["ELF executable", bytes([0x7f], "ELF", [2, 1, 1])],
    ["PE executable", bytes("MZ", [0x90, 0])],
    ["HTML", bytes("<!DOCTYPE html><script>")],
    ["SVG", bytes("<svg xmlns=")],
    ["plain text", bytes("hello world")],
    ["shell script", bytes("#!/bin/sh\n")],
    ["empty", new Uint8Array(0)],
    ["HTML in UTF-16LE (FF FE byte order mark)", new Uint8Array([0xff, 0xfe, ...[..."<html><script>"].flatMap((c) => [c.charCodeAt(0), 0])])],
    ["FF FF padding", bytes([0xff, 0xff, 0x90, 0x64])],
    ["an MPEG sync with a reserved sample rate (FF FB 4D 5A)", bytes([0xff, 0xfb, 0x4d, 0x5a])],
    ["an MPEG sync with a bad bitrate index", bytes([0xff, 0xfb, 0xf0, 0x00])],
    ["an MPEG sync with a free bitrate index", bytes([0xff, 0xfb, 0x00, 0x00])],
    ["ftyp with an unknown brand", ftyp("evil")],
    ["ftyp whose compatible brands are all unknown", bytes([0, 0, 0, 0x18], "ftyp", "evil", "\u0000\u0000\u0000\u0000", "bad1", "bad2")],
    // A known brand past the end of the box is not one of its compatible brands.
    ["ftyp with a known brand after its box", bytes([0, 0, 0, 0x10], "ftyp", "evil", "\u0000\u0000\u0000\u0000", "mp42")],
    ["ftyp with a brand named like an Object property", ftyp("__pr")],
  ])("%s is refused", (_label, head) => {
    expect(detectContentType(head, "innocent.png")).toBe(null);
  });
});
