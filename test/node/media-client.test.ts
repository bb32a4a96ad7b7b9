import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { ApiClient, ApiError, type TokenResponse } from "../../src/client/index.ts";

/**
 * The SDK's media calls against a real HTTP server on loopback (node:http), which
 * plays the API's media routes and records every request as it arrived on the wire:
 * headers, and the body's bytes.
 */

const CHAT = "g_CCCCCCCCCCCCCCCCCCCCCC";
const MEDIA = "m_MMMMMMMMMMMMMMMMMMMMMM";
const USER = "u_UUUUUUUUUUUUUUUUUUUUUU";

type Recorded = { method: string; url: string; headers: IncomingMessage["headers"]; body: Buffer };
type Route = (request: Recorded, response: ServerResponse) => void;

let server: Server;
let baseUrl: string;
const recorded: Recorded[] = [];
/** The test's answer to the next requests; the default answers 404. */
let route: Route = (_request, response) => json(response, 404, { error: { code: "not_found", message: "no route", retryable: false } });

beforeAll(async () => {
  server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const entry = { method: request.method!, url: request.url!, headers: request.headers, body: Buffer.concat(chunks) };
      recorded.push(entry);
      route(entry, response);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));
afterEach(() => {
  recorded.length = 0;
  vi.useRealTimers();
});

function json(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { "content-type": "application/json" });
  response.end(JSON.stringify(body));
}

/** A session whose access token does not expire during the test (no refresh request). */
function session(): TokenResponse {
  const payload = Buffer.from(JSON.stringify({ exp: Math.floor(Date.now() / 1000) + 3600 })).toString("base64url");
  return { credentials: `eyJhbGciOiJIUzI1NiJ9.${payload}.sig`, refreshToken: "rt", expiresIn: 3600 } as unknown as TokenResponse;
}

const client = (singleUploadLimit?: number) => new ApiClient({ baseUrl, session: session(), ...(singleUploadLimit === undefined ? {} : { singleUploadLimit }) });

/** Bytes that differ from one position to the next, so a misplaced chunk shows. */
function bytes(size: number): Uint8Array {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (i * 7 + (i >> 8)) & 0xff;
  return data;
}

const uploaded = (size: number) => ({ mediaId: MEDIA, kind: "image", contentType: "image/png", size, expiresAt: Date.now() + 86_400_000 });
const pathOf = (request: Recorded) => new URL(request.url, baseUrl).pathname;

describe("uploading a file in one request", () => {
  it("sends the bytes exactly, with their Content-Length (not chunked), the name and the token, and counts progress up to the total", async () => {
    route = (request, response) => json(response, 201, uploaded(request.body.length));
    const data = bytes(300 * 1024 + 17); // several 64 KiB chunks and a short one
    const progress: [number, number][] = [];
    const result = await client().uploadMedia(CHAT, data, { name: "plan é.png", contentType: "image/png", onProgress: (sent, total) => progress.push([sent, total]) });

    expect(result).toMatchObject({ mediaId: MEDIA, size: data.length });
    expect(recorded).toHaveLength(1);
    const [request] = recorded;
    expect(request!.method).toBe("POST");
    expect(pathOf(request!)).toBe(`/api/chats/${CHAT}/media`);
    expect(new URL(request!.url, baseUrl).searchParams.get("name")).toBe("plan é.png");
    expect(request!.headers["content-length"]).toBe(String(data.length));
    expect(request!.headers["transfer-encoding"]).toBeUndefined();
    expect(request!.headers["content-type"]).toBe("image/png");
    expect(request!.headers.authorization).toMatch(/^Bearer eyJ/);
    expect(Buffer.compare(request!.body, Buffer.from(data))).toBe(0);
    // Progress as the body was read: more than one step, each further, ending at the total.
    expect(progress.length).toBeGreaterThan(2);
    expect(progress.every(([, total]) => total === data.length)).toBe(true);
    const sent = progress.map(([value]) => value);
    expect(sent).toEqual([...sent].sort((a, b) => a - b));
    expect(new Set(sent).size).toBe(sent.length);
    expect(sent.at(-1)).toBe(data.length);
  });

  it("sends a Blob or an ArrayBuffer without progress as one sized body", async () => {
    route = (request, response) => json(response, 201, uploaded(request.body.length));
    const data = bytes(5000);
    await client().uploadMedia(CHAT, new Blob([data], { type: "application/pdf" }));
    await client().uploadMedia(CHAT, data.buffer as ArrayBuffer);
    expect(recorded.map((r) => [r.headers["content-length"], r.headers["content-type"]])).toEqual([
      ["5000", "application/pdf"],
      ["5000", "application/octet-stream"],
    ]);
    for (const request of recorded) expect(Buffer.compare(request.body, Buffer.from(data))).toBe(0);
  });

  it("rejects with the server's refusal", async () => {
    route = (_request, response) => json(response, 413, { error: { code: "too_large", message: "at most 25 MiB", retryable: false } });
    const refused = await client().uploadMedia(CHAT, bytes(10), { onProgress: () => {} }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(ApiError);
    expect(refused).toMatchObject({ status: 413, code: "too_large" });
  });
});

describe("uploading from a browser", () => {
  /**
   * The part of XMLHttpRequest a browser upload uses, over node:http: like a browser, it
   * sets Content-Length itself, refuses a script that sets it, and counts upload progress.
   */
  class NodeXhr {
    static made = 0;
    responseType = "";
    response: unknown = null;
    status = 0;
    readonly upload: { onprogress: ((event: { loaded: number }) => void) | null } = { onprogress: null };
    onload: (() => void) | null = null;
    onerror: (() => void) | null = null;
    onabort: (() => void) | null = null;
    #method = "GET";
    #url = "";
    readonly #headers: Record<string, string> = {};
    #responseHeaders = "";
    constructor() {
      NodeXhr.made++;
    }
    open(method: string, url: string) {
      this.#method = method;
      this.#url = url;
    }
    setRequestHeader(name: string, value: string) {
      if (name.toLowerCase() === "content-length") throw new Error("Refused to set unsafe header \"Content-Length\"");
      this.#headers[name] = value;
    }
    getAllResponseHeaders() {
      return this.#responseHeaders;
    }
    abort() {
      this.onabort?.();
    }
    async send(body: Blob) {
      const data = Buffer.from(await body.arrayBuffer());
      const outgoing = request(this.#url, { method: this.#method, headers: { ...this.#headers, "content-length": String(data.length) } }, (incoming) => {
        const chunks: Buffer[] = [];
        incoming.on("data", (chunk: Buffer) => chunks.push(chunk));
        incoming.on("end", () => {
          this.status = incoming.statusCode!;
          this.#responseHeaders = Object.entries(incoming.headers).map(([name, value]) => `${name}: ${String(value)}`).join("\r\n");
          this.response = new Blob([Buffer.concat(chunks)]);
          this.onload?.();
        });
      });
      outgoing.on("error", () => this.onerror?.());
      for (let sent = 0; sent < data.length; ) {
        const end = Math.min(data.length, sent + 100_000);
        outgoing.write(data.subarray(sent, end));
        sent = end;
        this.upload.onprogress?.({ loaded: sent });
      }
      outgoing.end();
    }
  }

  afterEach(() => {
    delete (globalThis as { document?: unknown }).document;
    delete (globalThis as { XMLHttpRequest?: unknown }).XMLHttpRequest;
  });

  it("uploads through XMLHttpRequest to count progress, with the token and type, and reads the answer", async () => {
    Object.assign(globalThis, { document: {}, XMLHttpRequest: NodeXhr });
    route = (request, response) => json(response, 201, uploaded(request.body.length));
    const data = bytes(250_000);
    const progress: number[] = [];
    const result = await client().uploadMedia(CHAT, data, { name: "photo.jpg", contentType: "image/jpeg", onProgress: (sent) => progress.push(sent) });

    expect(NodeXhr.made).toBe(1);
    expect(result).toMatchObject({ mediaId: MEDIA, size: data.length });
    expect(recorded[0]!.headers).toMatchObject({ "content-length": String(data.length), "content-type": "image/jpeg" });
    expect(recorded[0]!.headers.authorization).toMatch(/^Bearer /);
    expect(Buffer.compare(recorded[0]!.body, Buffer.from(data))).toBe(0);
    expect(progress).toEqual([100_000, 200_000, 250_000]);

    route = (_request, response) => json(response, 415, { error: { code: "unsupported_media_type", message: "not an allowed type", retryable: false } });
    await expect(client().uploadMedia(CHAT, data, { onProgress: () => {} })).rejects.toMatchObject({ status: 415, code: "unsupported_media_type" });
  });
});

describe("uploading a large file in parts", () => {
  const PART = 64 * 1024;

  /** The multipart routes; `failPart` answers a part's attempt instead of storing it when it returns true. */
  function multipartServer(failPart: (partNumber: number, attempt: number, response: ServerResponse) => boolean = () => false) {
    const parts = new Map<number, Buffer>();
    const attempts = new Map<number, number>();
    route = (request, response) => {
      const path = pathOf(request);
      const base = `/api/chats/${CHAT}/media/multipart`;
      if (request.method === "POST" && path === base) {
        const { size } = JSON.parse(request.body.toString()) as { size: number };
        return json(response, 201, { mediaId: MEDIA, partSize: PART, partCount: Math.ceil(size / PART), expiresAt: Date.now() + 86_400_000 });
      }
      const part = new RegExp(`^${base}/${MEDIA}/parts/(\\d+)$`).exec(path);
      if (request.method === "PUT" && part) {
        const partNumber = Number(part[1]);
        const attempt = (attempts.get(partNumber) ?? 0) + 1;
        attempts.set(partNumber, attempt);
        if (failPart(partNumber, attempt, response)) return;
        parts.set(partNumber, request.body);
        return json(response, 200, { partNumber, size: request.body.length });
      }
      if (request.method === "POST" && path === `${base}/${MEDIA}/complete`) {
        const whole = Buffer.concat([...parts.entries()].sort(([a], [b]) => a - b).map(([, body]) => body));
        return json(response, 201, uploaded(whole.length));
      }
      if (request.method === "DELETE" && path === `${base}/${MEDIA}`) {
        response.writeHead(204).end();
        return;
      }
      json(response, 404, { error: { code: "not_found", message: path, retryable: false } });
    };
    return { parts, attempts };
  }

  const summary = () => recorded.map((r) => `${r.method} ${pathOf(r).replace(`/api/chats/${CHAT}/media`, "")}`);

  it("starts, sends each part of the server's size in order, and completes; progress per part", async () => {
    const { parts } = multipartServer();
    const data = bytes(3 * PART + 1000);
    const progress: number[] = [];
    const result = await client(100 * 1024).uploadMedia(CHAT, data, { name: "big.mp4", onProgress: (sent, total) => (expect(total).toBe(data.length), progress.push(sent)) });

    expect(summary()).toEqual([
      "POST /multipart",
      `PUT /multipart/${MEDIA}/parts/1`,
      `PUT /multipart/${MEDIA}/parts/2`,
      `PUT /multipart/${MEDIA}/parts/3`,
      `PUT /multipart/${MEDIA}/parts/4`,
      `POST /multipart/${MEDIA}/complete`,
    ]);
    expect(JSON.parse(recorded[0]!.body.toString())).toEqual({ size: data.length, name: "big.mp4" });
    expect(recorded.slice(1, 5).map((r) => Number(r.headers["content-length"]))).toEqual([PART, PART, PART, 1000]);
    expect(Buffer.compare(Buffer.concat([1, 2, 3, 4].map((n) => parts.get(n)!)), Buffer.from(data))).toBe(0);
    expect(progress).toEqual([PART, 2 * PART, 3 * PART, data.length]);
    expect(result).toMatchObject({ mediaId: MEDIA, size: data.length });
  });

  it("sends a part again after a retryable refusal and after a dropped connection, and the file arrives whole", async () => {
    const { parts, attempts } = multipartServer((partNumber, attempt, response) => {
      if (partNumber === 2 && attempt === 1) {
        json(response, 503, { error: { code: "unavailable", message: "restarting", retryable: true, retryAfterMs: 10 } });
        return true;
      }
      if (partNumber === 3 && attempt === 1) {
        response.socket!.destroy(); // the network: no answer at all
        return true;
      }
      return false;
    });
    const data = bytes(3 * PART + 5);
    const result = await client(PART).uploadMedia(CHAT, data);

    expect(Object.fromEntries(attempts)).toEqual({ 1: 1, 2: 2, 3: 2, 4: 1 });
    expect(Buffer.compare(Buffer.concat([1, 2, 3, 4].map((n) => parts.get(n)!)), Buffer.from(data))).toBe(0);
    expect(summary().at(-1)).toBe(`POST /multipart/${MEDIA}/complete`);
    expect(result.size).toBe(data.length);
  });

  it("aborts the upload on the server when a part is refused for good", async () => {
    multipartServer((partNumber, _attempt, response) => {
      if (partNumber !== 2) return false;
      json(response, 403, { error: { code: "forbidden", message: "no longer a member", retryable: false } });
      return true;
    });
    const refused = await client(PART).uploadMedia(CHAT, bytes(3 * PART)).catch((error: unknown) => error);

    expect(refused).toMatchObject({ status: 403, code: "forbidden" });
    expect(summary()).toEqual(["POST /multipart", `PUT /multipart/${MEDIA}/parts/1`, `PUT /multipart/${MEDIA}/parts/2`, `DELETE /multipart/${MEDIA}`]);
  });

  it("gives up a part after five tries and aborts the upload", async () => {
    const { attempts } = multipartServer((partNumber, _attempt, response) => {
      if (partNumber !== 1) return false;
      json(response, 503, { error: { code: "unavailable", message: "down", retryable: true, retryAfterMs: 1 } });
      return true;
    });
    const refused = await client(PART).uploadMedia(CHAT, bytes(2 * PART)).catch((error: unknown) => error);

    expect(refused).toMatchObject({ status: 503, code: "unavailable" });
    expect(attempts.get(1)).toBe(5);
    expect(summary().at(-1)).toBe(`DELETE /multipart/${MEDIA}`);
    expect(summary().filter((line) => line.includes("complete"))).toEqual([]);
  });

  it("stops and aborts the upload on the server when the app cancels", async () => {
    multipartServer();
    const cancel = new AbortController();
    const upload = client(PART).uploadMedia(CHAT, bytes(4 * PART), {
      signal: cancel.signal,
      onProgress: (sent) => {
        if (sent >= PART) cancel.abort(); // the user pressed cancel after the first part
      },
    });
    const cancelled = await upload.catch((error: unknown) => error);

    expect(cancelled).toMatchObject({ name: "AbortError" });
    expect(summary()).toEqual(["POST /multipart", `PUT /multipart/${MEDIA}/parts/1`, `DELETE /multipart/${MEDIA}`]);
  });
});

describe("media links, downloads and avatars", () => {
  it("gives an absolute signed URL and asks again only shortly before it expires", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    const start = Date.UTC(2026, 0, 1);
    vi.setSystemTime(start);
    let issued = 0;
    route = (request, response) => {
      issued++;
      expect(request.method).toBe("POST");
      expect(pathOf(request)).toBe(`/api/chats/${CHAT}/media/${MEDIA}/url`);
      json(response, 200, { url: `/media/${CHAT}/${MEDIA}?expires=${start + 600_000}&sig=s${issued}`, expiresAt: start + 600_000 });
    };
    const api = client();
    const [first, same] = await Promise.all([api.mediaUrl(CHAT, MEDIA), api.mediaUrl(CHAT, MEDIA)]);
    expect(first.url).toBe(`${baseUrl}/media/${CHAT}/${MEDIA}?expires=${start + 600_000}&sig=s1`);
    expect(same).toEqual(first);

    vi.setSystemTime(start + 500_000); // well before it expires
    expect(await api.mediaUrl(CHAT, MEDIA)).toEqual(first);
    expect(issued).toBe(1);

    vi.setSystemTime(start + 550_000); // within the last minute: a new one
    const renewed = await api.mediaUrl(CHAT, MEDIA);
    expect(renewed.url).toMatch(/sig=s2$/);
    expect(issued).toBe(2);
  });

  it("downloads a file with the token, or a range of it", async () => {
    const file = Buffer.from(bytes(100));
    route = (request, response) => {
      const range = /^bytes=(\d+)-(\d*)$/.exec(request.headers.range ?? "");
      if (!range) return void response.writeHead(200, { "content-type": "image/png" }).end(file);
      const end = range[2] ? Number(range[2]) : file.length - 1;
      response.writeHead(206, { "content-range": `bytes ${range[1]}-${end}/${file.length}` }).end(file.subarray(Number(range[1]), end + 1));
    };
    const api = client();
    const whole = await api.downloadMedia(CHAT, MEDIA);
    expect(Buffer.compare(Buffer.from(await whole.arrayBuffer()), file)).toBe(0);
    const part = await api.downloadMedia(CHAT, MEDIA, { range: { start: 10, end: 19 } });
    expect(part.status).toBe(206);
    expect([...new Uint8Array(await part.arrayBuffer())]).toEqual([...file.subarray(10, 20)]);
    expect(recorded.map((r) => [r.headers.range, r.headers.authorization?.startsWith("Bearer ")])).toEqual([
      [undefined, true],
      ["bytes=10-19", true],
    ]);

    route = (_request, response) => json(response, 416, { error: { code: "range_not_satisfiable", message: "past the end", retryable: false } });
    await expect(api.downloadMedia(CHAT, MEDIA, { range: { start: 500 } })).rejects.toMatchObject({ code: "range_not_satisfiable" });
  });

  it("sets, reads and removes the profile picture; another user's is read with a shared chat", async () => {
    const OWN = "u_OOOOOOOOOOOOOOOOOOOOOO";
    let avatar: Buffer | null = null;
    route = (request, response) => {
      const url = new URL(request.url, baseUrl);
      const path = url.pathname;
      if (request.method === "PUT" && path === "/api/me/avatar") {
        avatar = request.body;
        return json(response, 200, { avatarId: "av1" });
      }
      if (request.method === "DELETE" && path === "/api/me/avatar") {
        avatar = null;
        return void response.writeHead(204).end();
      }
      if (request.method === "GET" && (path === `/api/users/${USER}/avatar` || path === `/api/users/${OWN}/avatar`)) {
        // As the server: anyone's picture but one's own needs a chat shared with them.
        const chatId = url.searchParams.get("chatId");
        if (path.includes(USER) && chatId === null) return json(response, 400, { error: { code: "validation_failed", message: "chatId: name a chat you share with this user", retryable: false } });
        if (chatId !== null && chatId !== CHAT) return json(response, 404, { error: { code: "not_found", message: "no picture", retryable: false } });
        if (!avatar) return json(response, 404, { error: { code: "not_found", message: "no avatar", retryable: false } });
        return void response.writeHead(200, { "content-type": "image/png" }).end(avatar);
      }
    };
    const api = client();
    const picture = bytes(2048);
    expect(await api.setAvatar(picture, { contentType: "image/png" })).toEqual({ avatarId: "av1" });
    expect(recorded[0]!.headers["content-length"]).toBe("2048");
    expect(recorded[0]!.headers["content-type"]).toBe("image/png");
    const downloaded = await api.downloadAvatar(USER, CHAT);
    expect(Buffer.compare(Buffer.from(await downloaded!.arrayBuffer()), Buffer.from(picture))).toBe(0);
    expect(recorded.at(-1)!.url).toBe(`/api/users/${USER}/avatar?chatId=${CHAT}`);
    const own = await api.downloadAvatar(OWN);
    expect(Buffer.compare(Buffer.from(await own!.arrayBuffer()), Buffer.from(picture))).toBe(0);
    await expect(api.downloadAvatar(USER)).rejects.toMatchObject({ code: "validation_failed" });
    expect(api.avatarUrl(USER, CHAT)).toBe(`${baseUrl}/api/users/${USER}/avatar?chatId=${CHAT}`);
    expect(api.avatarUrl(OWN)).toBe(`${baseUrl}/api/users/${OWN}/avatar`);
    await api.removeAvatar();
    expect(await api.downloadAvatar(USER, CHAT)).toBeNull();
  });
});
