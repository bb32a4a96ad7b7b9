import { env } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import { expect } from "vitest";
import { UploadResult } from "../../src/protocol/index.ts";
import { uniqueIp, type Session } from "./helpers.ts";

/** Shared by the media and avatar tests: raw requests (files are not JSON), and sample files. */

export const chatObject = (chatId: string) => env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId));

/** A raw request to the Worker with the session's bearer token (if any). */
export function call(path: string, init: RequestInit & { token?: string } = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("cf-connecting-ip", uniqueIp());
  if (init.token) headers.set("authorization", `Bearer ${init.token}`);
  const { token: _token, ...rest } = init;
  return exports.default.fetch(new Request(`http://chat.test${path}`, { ...rest, headers, ...(init.body instanceof ReadableStream ? { duplex: "half" } : {}) } as RequestInit));
}

/** `length` bytes starting with `magic`, the rest random. */
export function fileOf(magic: number[] | string, length = 4096): Uint8Array {
  const bytes = new Uint8Array(length);
  crypto.getRandomValues(bytes.subarray(0, Math.min(length, 65536)));
  for (let offset = 65536; offset < length; offset += 65536) crypto.getRandomValues(bytes.subarray(offset, Math.min(length, offset + 65536)));
  const head = typeof magic === "string" ? [...magic].map((c) => c.charCodeAt(0)) : magic;
  bytes.set(head);
  return bytes;
}

export const PNG = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
export const png = (length = 4096) => fileOf(PNG, length);
export const pdf = (length = 4096) => fileOf("%PDF-1.7\n", length);

/** Uploads a file to a chat (raw bytes, `?name=`); answers the Response. */
export function uploadTo(session: Session, chatId: string, bytes: Uint8Array | ReadableStream, name = "photo.png", headers: Record<string, string> = {}): Promise<Response> {
  return call(`/api/chats/${chatId}/media?name=${encodeURIComponent(name)}`, { method: "POST", body: bytes, token: session.credentials, headers: { "content-type": "image/png", ...headers } });
}

/** Uploads and expects 201; answers the UploadResult. */
export async function upload(session: Session, chatId: string, bytes: Uint8Array, name = "photo.png"): Promise<UploadResult> {
  const response = await uploadTo(session, chatId, bytes, name);
  expect(response.status, await response.clone().text()).toBe(201);
  return UploadResult.parse(await response.json());
}

export async function bytesOf(response: Response): Promise<Uint8Array> {
  return new Uint8Array(await response.arrayBuffer());
}

/** Whether two byte arrays are equal (expect().toEqual on megabytes is slow to diff). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Objects R2 holds under a prefix. */
export async function storedKeys(prefix: string): Promise<string[]> {
  return (await env.MEDIA.list({ prefix })).objects.map((object) => object.key);
}
