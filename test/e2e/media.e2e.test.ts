import { createHmac } from "node:crypto";
import { request as httpRequest } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiError, type ApiClient, type ChatEvent, type MessageEvent } from "../../src/client/index.ts";
import { clientOptions, logIn, uniquePhone } from "./support/clients.ts";
import { OpenConnections } from "./support/connections.ts";
import { startDevServer, type DevServer } from "./support/dev-server.ts";
import { waitFor } from "./support/waiting.ts";

const MiB = 1024 * 1024;
/**
 * The server's single-upload limit here (MEDIA_MAX_BYTES): 6 MiB, so a 9 MiB file goes
 * in parts, which are 8 MiB each (section 17.3): exactly two, the second 1 MiB.
 */
const SINGLE_UPLOAD_LIMIT = 6 * MiB;
/** Known to the test, so it can sign links of its own (expired, or too long-lived). */
const MEDIA_URL_SECRET = "e2e-media-url-secret-0123456789abcdef0123456789";

/** `length` bytes starting with `magic`, the rest random. */
function fileOf(magic: number[] | string, length: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(length);
  for (let offset = 0; offset < length; offset += 65536) crypto.getRandomValues(bytes.subarray(offset, Math.min(length, offset + 65536)));
  bytes.set(typeof magic === "string" ? [...magic].map((c) => c.charCodeAt(0)) : magic);
  return bytes;
}
const png = (length: number) => fileOf([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], length);
/** An MP4 (an `ftyp` box of brand `isom`). */
const mp4 = (length: number) => fileOf([0, 0, 0, 0x18, ..."ftypisom".split("").map((c) => c.charCodeAt(0))], length);

async function bytesOf(response: Response): Promise<Uint8Array> {
  return new Uint8Array(await response.arrayBuffer());
}

/** Byte equality without a diff of megabytes when it fails. */
function expectSameBytes(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length);
  expect(Buffer.compare(Buffer.from(actual), Buffer.from(expected))).toBe(0);
}

/** The ApiError a call rejects with. */
async function refusal(call: Promise<unknown>): Promise<ApiError> {
  const error = await call.then(
    () => null,
    (error: unknown) => error,
  );
  expect(error).toBeInstanceOf(ApiError);
  return error as ApiError;
}

/** A signed link made here with the server's key, for `expires`. */
function signedPath(chatId: string, mediaId: string, expires: number): string {
  const sig = createHmac("sha256", MEDIA_URL_SECRET).update(`media-url\n${chatId}\n${mediaId}\n${expires}`).digest("base64url");
  return `/media/${chatId}/${mediaId}?expires=${expires}&sig=${sig}`;
}

/**
 * A raw HTTP/1.1 POST from node:http, for what fetch cannot send: a body without
 * Content-Length (node:http sends it chunked; fetch always gives the length).
 */
function rawPost(baseUrl: string, path: string, headers: Record<string, string>, body: Uint8Array): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(new URL(path, baseUrl), { method: "POST", headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    request.on("error", reject);
    request.end(body);
  });
}

/**
 * Files through wrangler dev with the SDK: uploads (one request, and in parts), the
 * bytes read back with the token, through signed links and by range, the headers that
 * keep a file from running as a page, and the refusals a client meets on the wire.
 */
describe("media through wrangler dev, with the SDK", () => {
  let server: DevServer;
  const connections = new OpenConnections();
  let addresses = 0;

  beforeAll(async () => {
    server = await startDevServer({
      DEV_MODE: "true",
      OTP_SENDER: "console",
      OTP_RESEND_SECONDS: "0",
      FAN_OUT_INTERVAL_MS: "50",
      MEDIA_MAX_BYTES: String(SINGLE_UPLOAD_LIMIT),
      MEDIA_URL_SECRET,
    });
  });
  afterAll(async () => {
    connections.closeAll();
    await server?.stop();
  });

  /** A new account's device, behind its own client address, recording the requests it makes. */
  async function device(name: string, phone = uniquePhone()) {
    const requests: string[] = [];
    const options = clientOptions(server.url, `10.79.${Math.floor(++addresses / 250)}.${addresses % 250}`);
    const api = await logIn(
      {
        ...options,
        singleUploadLimit: SINGLE_UPLOAD_LIMIT,
        fetch: (input, init) => {
          requests.push(`${init?.method ?? "GET"} ${new URL(String(input)).pathname}`);
          return fetch(input, init);
        },
      },
      phone,
      name,
    );
    return { api, requests, userId: api.session!.user.userId, token: () => api.accessToken() };
  }

  /** Alice and Bob in a direct chat, Bob's device stream live. */
  async function pair() {
    const [alice, bob] = await Promise.all([device("alice"), device("bob")]);
    const chat = await alice.api.createChat({ kind: "direct", peerId: bob.userId });
    const bobSide = connections.stream({ api: bob.api, heartbeatMs: 1000 });
    await waitFor(() => bobSide.stream.status === "live", "bob's stream live");
    return { alice, bob, chatId: chat.chatId, bobSide };
  }

  /** Alice sends the upload in a message; answers the message as Bob's stream received it. */
  async function shareWith(bobSide: { of(chatId: string): ChatEvent[] }, alice: { api: ApiClient }, chatId: string, mediaId: string, name: string): Promise<MessageEvent> {
    const { seq } = await alice.api.sendMessage(chatId, { clientId: `share-${mediaId}`, body: `here: ${name}`, attachments: [{ mediaId, name }] });
    await waitFor(() => bobSide.of(chatId).some((event) => event.seq === seq), "bob receives the message with the file");
    return bobSide.of(chatId).find((event) => event.seq === seq) as MessageEvent;
  }

  it("a 1 MiB photo goes up with its progress reaching the total, reaches the peer's stream described, and comes back byte for byte with the token and through a signed link", async () => {
    const { alice, bob, chatId, bobSide } = await pair();
    const photo = png(1 * MiB);
    const progress: [number, number][] = [];
    const upload = await alice.api.uploadMedia(chatId, photo, { name: "beach day.png", onProgress: (sent, total) => progress.push([sent, total]) });
    expect(upload).toMatchObject({ kind: "image", contentType: "image/png", size: photo.length });
    // One request, larger than the JSON body limit; progress rises to the total.
    expect(alice.requests.filter((line) => line.includes("/media"))).toEqual([`POST /api/chats/${chatId}/media`]);
    expect(progress.at(-1)).toEqual([photo.length, photo.length]);
    expect(progress.every(([sent, total], i) => total === photo.length && (i === 0 || sent > progress[i - 1]![0]))).toBe(true);

    // Pending: only its uploader may read it.
    expect((await refusal(bob.api.downloadMedia(chatId, upload.mediaId))).status).toBe(404);
    expectSameBytes(await bytesOf(await alice.api.downloadMedia(chatId, upload.mediaId)), photo);

    const received = await shareWith(bobSide, alice, chatId, upload.mediaId, "beach day.png");
    expect(received).toMatchObject({ type: "message", senderId: alice.userId, body: "here: beach day.png" });
    expect(received.attachments).toEqual([{ mediaId: upload.mediaId, name: "beach day.png", kind: "image", contentType: "image/png", size: photo.length }]);

    const download = await bob.api.downloadMedia(chatId, upload.mediaId);
    expect(download.status).toBe(200);
    expect(download.headers.get("content-type")).toBe("image/png");
    expect(download.headers.get("x-content-type-options")).toBe("nosniff");
    expect(download.headers.get("content-disposition")).toBe(`inline; filename="beach day.png"; filename*=UTF-8''beach%20day.png`);
    expect(download.headers.get("cache-control")).toBe("private");
    expect(download.headers.get("accept-ranges")).toBe("bytes");
    expect(download.headers.get("content-length")).toBe(String(photo.length));
    expectSameBytes(await bytesOf(download), photo);

    // A signed link needs no token: plain fetch, as an <img> tag would.
    const signed = await bob.api.mediaUrl(chatId, upload.mediaId);
    expect(signed.url.startsWith(`${server.url}/media/${chatId}/${upload.mediaId}?`)).toBe(true);
    const viaLink = await fetch(signed.url);
    expect(viaLink.status).toBe(200);
    expect(viaLink.headers.get("content-type")).toBe("image/png");
    expect(viaLink.headers.get("x-content-type-options")).toBe("nosniff");
    const maxAge = Number(/^private, max-age=(\d+)$/.exec(viaLink.headers.get("cache-control") ?? "")?.[1]);
    expect(maxAge).toBeGreaterThan(0);
    expect(maxAge).toBeLessThanOrEqual(600);
    expectSameBytes(await bytesOf(viaLink), photo);
  });

  it("a 9 MiB video over the single-upload limit goes up in two parts and comes back identical, whole and by range", async () => {
    const { alice, bob, chatId, bobSide } = await pair();
    const video = mp4(9 * MiB);
    const progress: number[] = [];
    const upload = await alice.api.uploadMedia(chatId, video, { name: "hike.mp4", onProgress: (sent) => progress.push(sent) });
    expect(upload).toMatchObject({ kind: "video", contentType: "video/mp4", size: video.length });
    const uploadPath = `/api/chats/${chatId}/media/multipart/${upload.mediaId}`;
    expect(alice.requests.filter((line) => line.includes("/media"))).toEqual([
      `POST /api/chats/${chatId}/media/multipart`,
      `PUT ${uploadPath}/parts/1`,
      `PUT ${uploadPath}/parts/2`,
      `POST ${uploadPath}/complete`,
    ]);
    expect(progress).toEqual([8 * MiB, 9 * MiB]);

    const received = await shareWith(bobSide, alice, chatId, upload.mediaId, "hike.mp4");
    expect(received.attachments).toEqual([{ mediaId: upload.mediaId, name: "hike.mp4", kind: "video", contentType: "video/mp4", size: video.length }]);

    const whole = await bob.api.downloadMedia(chatId, upload.mediaId);
    expect(whole.headers.get("content-type")).toBe("video/mp4");
    expect(whole.headers.get("content-disposition")).toBe(`inline; filename="hike.mp4"; filename*=UTF-8''hike.mp4`);
    expectSameBytes(await bytesOf(whole), video);
    expectSameBytes(await bytesOf(await fetch((await bob.api.mediaUrl(chatId, upload.mediaId)).url)), video);

    // A range across the boundary of the two parts: 206 and exactly those bytes.
    const [start, end] = [8 * MiB - 8, 8 * MiB + 7];
    const slice = await bob.api.downloadMedia(chatId, upload.mediaId, { range: { start, end } });
    expect(slice.status).toBe(206);
    expect(slice.headers.get("content-range")).toBe(`bytes ${start}-${end}/${video.length}`);
    expect(slice.headers.get("content-length")).toBe("16");
    expectSameBytes(await bytesOf(slice), video.subarray(start, end + 1));
    // And the tail, from an offset to the end.
    const tail = await bob.api.downloadMedia(chatId, upload.mediaId, { range: { start: video.length - 100 } });
    expect(tail.status).toBe(206);
    expectSameBytes(await bytesOf(tail), video.subarray(video.length - 100));
  });

  it("a document is sent as an attachment to download, never shown under the API's origin", async () => {
    const { alice, bob, chatId, bobSide } = await pair();
    const document = fileOf("%PDF-1.7\n", 20_000);
    const upload = await alice.api.uploadMedia(chatId, document, { name: "plan.pdf" });
    expect(upload).toMatchObject({ kind: "document", contentType: "application/pdf" });
    await shareWith(bobSide, alice, chatId, upload.mediaId, "plan.pdf");
    const download = await bob.api.downloadMedia(chatId, upload.mediaId);
    expect(download.headers.get("content-type")).toBe("application/pdf");
    expect(download.headers.get("content-disposition")).toBe(`attachment; filename="plan.pdf"; filename*=UTF-8''plan.pdf`);
    expect(download.headers.get("x-content-type-options")).toBe("nosniff");
    expectSameBytes(await bytesOf(download), document);
  });

  it("an upload without a length is refused with 411, and one over the single-upload limit with 413", async () => {
    const { alice, chatId } = await pair();
    const path = `/api/chats/${chatId}/media?name=photo.png`;

    const chunked = await rawPost(server.url, path, { authorization: `Bearer ${await alice.token()}`, "content-type": "image/png", "transfer-encoding": "chunked" }, png(4096));
    expect(chunked.status).toBe(411);
    expect(JSON.parse(chunked.body)).toMatchObject({ error: { code: "length_required", retryable: false } });

    // Sent in one request (the SDK would go in parts): its Content-Length is over the limit.
    // (The Worker answers before reading the body, as the workers tests show; under wrangler
    // dev the answer comes only once the dev proxy has forwarded the whole body.)
    const oversized = png(SINGLE_UPLOAD_LIMIT + 1);
    const response = await alice.api.request("POST", path, { bytes: () => new Blob([oversized]), headers: { "content-type": "image/png" } });
    expect(response.status).toBe(413);
    expect(await response.json()).toMatchObject({ error: { code: "too_large", retryable: false } });

    // Neither refusal disturbs the next upload.
    const upload = await alice.api.uploadMedia(chatId, png(2048), { name: "photo.png" });
    expect(upload.size).toBe(2048);
  });

  it("executables named .png are refused with 415, whatever the type the client claims", async () => {
    const { alice, chatId } = await pair();
    const elf = fileOf([0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01], 8192);
    const windows = fileOf([0x4d, 0x5a, 0x90, 0x00], 8192);
    for (const executable of [elf, windows]) {
      const error = await refusal(alice.api.uploadMedia(chatId, executable, { name: "cute-cat.png", contentType: "image/png" }));
      expect(error.status).toBe(415);
      expect(error.body).toMatchObject({ code: "unsupported_media_type", retryable: false });
    }
    // Nor in parts: the first part's bytes end the whole upload.
    const large = fileOf([0x4d, 0x5a, 0x90, 0x00], SINGLE_UPLOAD_LIMIT + 1);
    const error = await refusal(alice.api.uploadMedia(chatId, large, { name: "big-cat.png" }));
    expect(error.status).toBe(415);
  });

  it("someone outside the chat gets 404 for a file with a token, and a forged, tampered, expired or overlong link is 403", async () => {
    const { alice, bob, chatId, bobSide } = await pair();
    const carol = await device("carol");
    const photo = png(4096);
    const upload = await alice.api.uploadMedia(chatId, photo, { name: "secret.png" });
    await shareWith(bobSide, alice, chatId, upload.mediaId, "secret.png");

    const stranger = await refusal(carol.api.downloadMedia(chatId, upload.mediaId));
    expect(stranger.status).toBe(404);
    expect(stranger.body.code).toBe("not_found");
    expect((await refusal(carol.api.mediaUrl(chatId, upload.mediaId))).status).toBe(404);
    // A file id that never existed answers the same to a member.
    expect((await refusal(bob.api.downloadMedia(chatId, "m_AAAAAAAAAAAAAAAAAAAAAA"))).status).toBe(404);

    const signed = new URL((await bob.api.mediaUrl(chatId, upload.mediaId)).url);
    const expires = Number(signed.searchParams.get("expires"));
    const sig = signed.searchParams.get("sig")!;
    const forgedSig = `${sig[0] === "A" ? "B" : "A"}${sig.slice(1)}`;
    const otherUpload = await alice.api.uploadMedia(chatId, png(2048), { name: "other.png" });
    const refused = [
      `/media/${chatId}/${upload.mediaId}?expires=${expires}&sig=${forgedSig}`,
      // The link's expiry pushed later, with its signature kept.
      `/media/${chatId}/${upload.mediaId}?expires=${expires + 60_000}&sig=${sig}`,
      // The signature of one file on another.
      `/media/${chatId}/${otherUpload.mediaId}?expires=${expires}&sig=${sig}`,
      // Signed with the server's key, but expired, or valid for longer than a link may be.
      signedPath(chatId, upload.mediaId, Date.now() - 1000),
      signedPath(chatId, upload.mediaId, Date.now() + 3_600_000),
    ];
    for (const path of refused) {
      const response = await fetch(`${server.url}${path}`);
      expect(response.status, path).toBe(403);
      expect(await response.json()).toMatchObject({ error: { code: "invalid_signature" } });
    }
    // The same key signs links the server accepts: the refusals above are for what they say.
    const own = await fetch(`${server.url}${signedPath(chatId, upload.mediaId, Date.now() + 60_000)}`);
    expect(own.status).toBe(200);
    expectSameBytes(await bytesOf(own), photo);
  });

  it("a profile picture is shown to a chat peer, and is 404 to a stranger", async () => {
    const { alice, bob, chatId } = await pair();
    const carol = await device("carol");
    const picture = png(30_000);
    const { avatarId } = await alice.api.setAvatar(picture);
    expect((await alice.api.me()).avatarId).toBe(avatarId);

    const own = await alice.api.downloadAvatar(alice.userId);
    expectSameBytes(await bytesOf(own!), picture);

    const path = `/api/users/${alice.userId}/avatar?chatId=${chatId}`;
    const peer = await bob.api.request("GET", path);
    expect(peer.status).toBe(200);
    expect(peer.headers.get("content-type")).toBe("image/png");
    expect(peer.headers.get("x-content-type-options")).toBe("nosniff");
    expect(peer.headers.get("content-disposition")).toBe("inline");
    expect(peer.headers.get("cache-control")).toBe("private");
    expectSameBytes(await bytesOf(peer), picture);

    const stranger = await carol.api.request("GET", path);
    expect(stranger.status).toBe(404);
    expect(await stranger.json()).toMatchObject({ error: { code: "not_found" } });
  });

  it("the SDK's downloadAvatar gives a chat peer's picture, naming the chat they share", async () => {
    const { alice, bob, chatId } = await pair();
    const carol = await device("carol");
    const picture = png(4096);
    await alice.api.setAvatar(picture);
    const response = await bob.api.downloadAvatar(alice.userId, chatId);
    expect(response).not.toBeNull();
    expectSameBytes(await bytesOf(response!), picture);
    // A stranger naming that chat gets nothing.
    expect(await carol.api.downloadAvatar(alice.userId, chatId)).toBeNull();
  });
});
