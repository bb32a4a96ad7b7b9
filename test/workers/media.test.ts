import { abortAllDurableObjects, env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { drizzle } from "drizzle-orm/durable-sqlite";
import { MediaRegistry, UPLOADING_TTL_MS } from "../../src/chat-room/media-registry.ts";
import { configFrom, MAX_MULTIPART_UPLOAD_BYTES } from "../../src/lib/config.ts";
import { randomId } from "../../src/lib/crypto.ts";
import { partSizeFor } from "../../src/routes/media.ts";
import * as schema from "../../src/db/chat-room-schema.ts";
import { Scheduler } from "../../src/lib/scheduler.ts";
import { describe, expect, it } from "vitest";
import { Limits, MultipartUpload, SendResult, SignedMediaUrl, UploadedPart, UploadResult, type HistoryPage } from "../../src/protocol/index.ts";
import { api, connect, createDirect, createGroup, expectError, history, login, resumeStream, type Session } from "./helpers.ts";
import { bytesOf, call, chatObject, fileOf, pdf, png, sameBytes, storedKeys, upload, uploadTo } from "./media-support.ts";

const uid = (session: Session) => session.user.userId;

/** Sends a message carrying `attachments` over REST. */
function sendWith(session: Session, chatId: string, clientId: string, attachments: unknown[], body?: string) {
  return api(`/api/chats/${chatId}/messages`, { token: session.credentials, body: { clientId, attachments, ...(body === undefined ? {} : { body }) } });
}

async function sent(response: Response): Promise<SendResult> {
  expect(response.status, await response.clone().text()).toBe(201);
  return SendResult.parse(await response.json());
}

function download(session: Session, chatId: string, mediaId: string, headers: Record<string, string> = {}) {
  return call(`/api/chats/${chatId}/media/${mediaId}`, { token: session.credentials, headers });
}

async function signedUrl(session: Session, chatId: string, mediaId: string): Promise<SignedMediaUrl> {
  const response = await call(`/api/chats/${chatId}/media/${mediaId}/url`, { method: "POST", token: session.credentials });
  expect(response.status, await response.clone().text()).toBe(200);
  return SignedMediaUrl.parse(await response.json());
}

/** Media rows of a chat by state. */
function mediaRows(chatId: string) {
  return runInDurableObject(chatObject(chatId), (_instance, state) =>
    state.storage.sql.exec<{ media_id: string; state: string }>("SELECT media_id, state FROM media").toArray(),
  );
}

describe("uploads and downloads", () => {
  it("a file comes back byte for byte, with a bearer token and through a signed link", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    // Over the JSON body limit of /api (Limits.maxFrameBytes): uploads are not held to it.
    const file = png(Limits.maxFrameBytes * 3);
    const uploaded = await upload(alice, chatId, file, "beach.png");
    expect(uploaded).toMatchObject({ kind: "image", contentType: "image/png", size: file.length });
    const ack = await sent(await sendWith(alice, chatId, "c1", [{ mediaId: uploaded.mediaId, width: 640, height: 480 }], "look"));

    const page = (await history(bob, chatId)) as HistoryPage;
    const message = page.events.find((event) => event.seq === ack.seq);
    expect(message).toMatchObject({
      type: "message",
      body: "look",
      attachments: [{ mediaId: uploaded.mediaId, name: "beach.png", width: 640, height: 480, kind: "image", contentType: "image/png", size: file.length }],
    });

    const response = await download(bob, chatId, uploaded.mediaId);
    expect(response.status).toBe(200);
    expect(sameBytes(await bytesOf(response), file)).toBe(true);

    const link = await signedUrl(bob, chatId, uploaded.mediaId);
    expect(link.url).toMatch(new RegExp(`^/media/${chatId}/${uploaded.mediaId}\\?expires=\\d+&sig=[A-Za-z0-9_-]+$`));
    expect(link.expiresAt - Date.now()).toBeLessThanOrEqual(Limits.maxSignedUrlTtlMs);
    const viaLink = await call(link.url); // no bearer token
    expect(viaLink.status).toBe(200);
    const maxAge = Number(/^private, max-age=(\d+)$/.exec(viaLink.headers.get("cache-control") ?? "")?.[1]);
    expect(maxAge).toBeGreaterThan(0);
    expect(maxAge).toBeLessThanOrEqual(Limits.maxSignedUrlTtlMs / 1000);
    expect(sameBytes(await bytesOf(viaLink), file)).toBe(true);
  });

  it("downloads carry nosniff, a Content-Disposition, private caching, the detected type and an ETag", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const image = await upload(alice, chatId, png(), "été.png");
    const document = await upload(alice, chatId, pdf(), "report \"final\".pdf");
    await sent(await sendWith(alice, chatId, "c1", [{ mediaId: image.mediaId }, { mediaId: document.mediaId }]));

    const shown = await download(bob, chatId, image.mediaId);
    expect(Object.fromEntries(["content-type", "x-content-type-options", "content-disposition", "cache-control", "accept-ranges"].map((h) => [h, shown.headers.get(h)]))).toEqual({
      "content-type": "image/png",
      "x-content-type-options": "nosniff",
      "content-disposition": "inline; filename=\"_t_.png\"; filename*=UTF-8''%C3%A9t%C3%A9.png",
      "cache-control": "private",
      "accept-ranges": "bytes",
    });
    const etag = shown.headers.get("etag")!;
    expect(etag).toMatch(/^".+"$/);
    await shown.arrayBuffer();
    // a copy the client holds is not sent again
    const cached = await download(bob, chatId, image.mediaId, { "if-none-match": etag });
    expect(cached.status).toBe(304);
    expect(cached.headers.get("etag")).toBe(etag);

    const saved = await download(bob, chatId, document.mediaId);
    expect(saved.headers.get("content-type")).toBe("application/pdf");
    expect(saved.headers.get("content-disposition")).toBe("attachment; filename=\"report _final_.pdf\"; filename*=UTF-8''report%20%22final%22.pdf");
    expect(saved.headers.get("x-content-type-options")).toBe("nosniff");
    await saved.arrayBuffer();
  });

  it("a Range read answers 206 with exactly those bytes; a range past the end is 416", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const file = png(10_000);
    const { mediaId } = await upload(alice, chatId, file);
    await sent(await sendWith(alice, chatId, "c1", [{ mediaId }]));

    const part = await download(bob, chatId, mediaId, { range: "bytes=100-1099" });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe("bytes 100-1099/10000");
    expect(sameBytes(await bytesOf(part), file.subarray(100, 1100))).toBe(true);

    const tail = await download(bob, chatId, mediaId, { range: "bytes=-10" });
    expect(tail.status).toBe(206);
    expect(tail.headers.get("content-range")).toBe("bytes 9990-9999/10000");
    expect(sameBytes(await bytesOf(tail), file.subarray(9990))).toBe(true);

    const outside = await download(bob, chatId, mediaId, { range: "bytes=10000-" });
    expect(outside.headers.get("content-range")).toBe("bytes */10000");
    await expectError(outside, 416, "range_not_satisfiable");
  });

  it("an upload without Content-Length is 411", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const chunked = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(png(1000));
        controller.close();
      },
    });
    const response = await uploadTo(alice, chatId, chunked);
    await expectError(response, 411, "length_required");
    expect(await mediaRows(chatId)).toEqual([]);
  });

  it("a body shorter than its Content-Length is always 400, not retryable, and nothing is kept", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const shortBody = (bytes: number) =>
      new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(png(bytes));
          controller.close();
        },
      });
    for (let i = 0; i < 8; i++) {
      const response = await uploadTo(alice, chatId, shortBody(1000 + i * 500), "short.png", { "content-length": String(1000 + i * 500 + 1) });
      expect(response.status, await response.clone().text()).toBe(400);
      const body = (await response.json()) as { error: { code: string; retryable: boolean } };
      expect(body.error).toMatchObject({ code: "validation_failed", retryable: false });
    }
    expect(await mediaRows(chatId)).toEqual([]);
    expect(await storedKeys(`chats/${chatId}/`)).toEqual([]);
  });

  it("a declared size over the limit is 413 before a byte of the body is read", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    // A body of 64 KiB chunks, counted as they are pulled: the server reading it would
    // pull hundreds. The runtime forwarding the request may pull one to start.
    let pulled = 0;
    const body = new ReadableStream<Uint8Array>(
      {
        pull(controller) {
          pulled += 1;
          controller.enqueue(new Uint8Array(64 * 1024));
        },
      },
      { highWaterMark: 0 },
    );
    const response = await uploadTo(alice, chatId, body, "huge.png", { "content-length": String(25 * 1024 * 1024 + 1) });
    await expectError(response, 413, "too_large");
    expect(pulled).toBeLessThanOrEqual(1);
    expect(await mediaRows(chatId)).toEqual([]);
  });

  it("an executable named .png and labelled image/png is 415, and nothing is kept", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    for (const magic of [[0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01], [0x4d, 0x5a, 0x90, 0x00]]) {
      await expectError(await uploadTo(alice, chatId, fileOf(magic, 5000), "cat.png", { "content-type": "image/png" }), 415, "unsupported_media_type");
    }
    expect(await mediaRows(chatId)).toEqual([]);
    expect(await storedKeys(`chats/${chatId}/`)).toEqual([]);
  });

  it("an upload by a non-member is refused and stores nothing", async () => {
    const [alice, bob, mallory] = await Promise.all([login(), login(), login()]);
    const chatId = await createDirect(alice, bob);
    await expectError(await uploadTo(mallory, chatId, png()), 403, "not_a_member");
    expect(await mediaRows(chatId)).toEqual([]);
    expect(await storedKeys(`chats/${chatId}/`)).toEqual([]);
    // in a broadcast chat, only admins post, files included
    const broadcast = await createGroup(alice, [bob], "broadcast");
    await expectError(await uploadTo(bob, broadcast, png()), 403, "admins_only");
    expect(await mediaRows(broadcast)).toEqual([]);
  });
});

describe("who may download", () => {
  it("a non-member and a former member whose periods miss the message get 404; the uploader alone reads a pending upload", async () => {
    const [alice, bob, carol, mallory] = await Promise.all([login(), login(), login(), login()]);
    const chatId = await createGroup(alice, [bob, carol]);
    expect((await api(`/api/chats/${chatId}/members/${uid(carol)}`, { token: alice.credentials, method: "DELETE" })).status).toBe(200);
    const pending = await upload(alice, chatId, png());
    // pending: its uploader only
    expect((await download(alice, chatId, pending.mediaId)).status).toBe(200);
    await expectError(await download(bob, chatId, pending.mediaId), 404, "not_found");

    await sent(await sendWith(alice, chatId, "c1", [{ mediaId: pending.mediaId }]));
    expect((await download(bob, chatId, pending.mediaId)).status).toBe(200);
    await expectError(await download(carol, chatId, pending.mediaId), 404, "not_found"); // left before it was sent
    await expectError(await download(mallory, chatId, pending.mediaId), 404, "not_found");
    await expectError(await call(`/api/chats/${chatId}/media/${pending.mediaId}/url`, { method: "POST", token: mallory.credentials }), 404, "not_found");
    // an id that was never uploaded looks the same
    await expectError(await download(bob, chatId, "m_AAAAAAAAAAAAAAAAAAAAAA"), 404, "not_found");

    // a member removed after the message still reads what they saw
    expect((await api(`/api/chats/${chatId}/members/${uid(bob)}`, { token: alice.credentials, method: "DELETE" })).status).toBe(200);
    expect((await download(bob, chatId, pending.mediaId)).status).toBe(200);
  });

  it("forged, expired, too-long and other-chat signed links are 403", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const otherChat = await createGroup(alice, [bob]);
    const { mediaId } = await upload(alice, chatId, png());
    await sent(await sendWith(alice, chatId, "c1", [{ mediaId }]));
    const link = await signedUrl(bob, chatId, mediaId);
    const url = new URL(link.url, "http://chat.test");
    const sig = url.searchParams.get("sig")!;
    const forged = `${sig.slice(0, -2)}${sig.endsWith("AA") ? "BB" : "AA"}`;

    await expectError(await call(`/media/${chatId}/${mediaId}?expires=${link.expiresAt}&sig=${forged}`), 403, "invalid_signature");
    await expectError(await call(`/media/${otherChat}/${mediaId}?expires=${link.expiresAt}&sig=${sig}`), 403, "invalid_signature");
    await expectError(await call(`/media/${chatId}/${mediaId}?expires=${link.expiresAt + 1}&sig=${sig}`), 403, "invalid_signature");
    await expectError(await call(`/media/${chatId}/${mediaId}`), 403, "invalid_signature");

    // Signed correctly by the server's key, but expired or lasting longer than a link may.
    const { signMediaUrl } = await import("../../src/media/signed-urls.ts");
    const secret = "test-media-secret-0123456789abcdef01234567"; // vitest.config.ts
    const expired = await signMediaUrl(secret, chatId, mediaId, Date.now() - Limits.maxSignedUrlTtlMs - 1000);
    await expectError(await call(expired.url), 403, "invalid_signature");
    const tooLong = await signMediaUrl(secret, chatId, mediaId, Date.now() + 60 * 60_000);
    await expectError(await call(tooLong.url), 403, "invalid_signature");
    expect((await call(link.url)).status).toBe(200);
  });
});

describe("attachments", () => {
  it("another chat's media is refused as invalid_attachment", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const otherChat = await createGroup(alice, [bob]);
    const elsewhere = await upload(alice, otherChat, png());
    await expectError(await sendWith(alice, chatId, "c1", [{ mediaId: elsewhere.mediaId }]), 400, "invalid_attachment");
    // someone else's upload in the same chat, likewise
    const bobs = await upload(bob, chatId, png());
    await expectError(await sendWith(alice, chatId, "c2", [{ mediaId: bobs.mediaId }]), 400, "invalid_attachment");
  });

  it("a media id attaches once; a retry of the original send still gets its original ack", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const { mediaId } = await upload(alice, chatId, png());
    const original = await sent(await sendWith(alice, chatId, "c1", [{ mediaId }], "first"));
    await expectError(await sendWith(alice, chatId, "c2", [{ mediaId }], "again"), 400, "invalid_attachment");
    await expectError(await sendWith(alice, chatId, "c3", [{ mediaId }, { mediaId }]), 400, "invalid_attachment");

    const retry = await sendWith(alice, chatId, "c1", [{ mediaId }], "first");
    expect(retry.status).toBe(200);
    expect(SendResult.parse(await retry.json())).toEqual({ ...original, duplicate: true });
  });

  it("the chat socket's send carries attachments", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const { mediaId } = await upload(alice, chatId, pdf(), "notes.pdf");
    const socket = await connect(chatId, alice.credentials);
    socket.send({ type: "send", id: "s1", clientId: "c1", attachments: [{ mediaId }], body: "the notes" });
    const reply = await socket.reply("s1");
    expect(reply).toMatchObject({ ok: true });
    const event = await socket.until(() => socket.events().find((e) => e.type === "message"));
    expect(event).toMatchObject({ body: "the notes", attachments: [{ mediaId, name: "notes.pdf", kind: "document", contentType: "application/pdf" }] });
    socket.ws.close(1000);
  });
  it("the device stream's send carries attachments", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const { mediaId } = await upload(alice, chatId, png(), "map.png");
    const { socket } = await resumeStream(alice.credentials);
    socket.send({ type: "send", id: "s1", chatId, clientId: "c1", attachments: [{ mediaId, width: 10, height: 20 }] });
    expect(await socket.reply("s1")).toMatchObject({ ok: true });
    const page = (await history(bob, chatId)) as HistoryPage;
    expect(page.events.at(-1)).toMatchObject({ type: "message", attachments: [{ mediaId, name: "map.png", width: 10, height: 20, kind: "image" }] });
    socket.ws.close(1000);
  });
});

/** The chat's expiry purge (its "media" deadline's handler) on its own storage, now. */
function purgeExpired(chatId: string): Promise<void> {
  return runInDurableObject(chatObject(chatId), async (_instance, state) => {
    const registry = new MediaRegistry({ db: drizzle(state.storage, { schema }), bucket: env.MEDIA, schedule: () => undefined });
    await registry.run(Date.now());
  });
}

/** Starts a multipart upload; answers it. */
async function startMultipart(session: Session, chatId: string, size: number, name?: string): Promise<MultipartUpload> {
  const response = await call(`/api/chats/${chatId}/media/multipart`, {
    method: "POST",
    token: session.credentials,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ size, ...(name === undefined ? {} : { name }) }),
  });
  expect(response.status, await response.clone().text()).toBe(201);
  return MultipartUpload.parse(await response.json());
}

function putPart(session: Session, chatId: string, mediaId: string, partNumber: number, body: Uint8Array) {
  return call(`/api/chats/${chatId}/media/multipart/${mediaId}/parts/${partNumber}`, { method: "PUT", token: session.credentials, body });
}

function complete(session: Session, chatId: string, mediaId: string) {
  return call(`/api/chats/${chatId}/media/multipart/${mediaId}/complete`, { method: "POST", token: session.credentials });
}

describe("lifecycle", () => {
  it("a reservation whose upload never finished (the client went away) frees its slot after 15 minutes, not a day", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    // The Worker reserved, then was cancelled before storing or abandoning: the rows stay `uploading`.
    for (let i = 0; i < Limits.maxPendingUploadsPerMember; i++) {
      const reserved = await chatObject(chatId).reserveUpload(uid(alice), randomId("m"), { size: 1000 });
      if (!reserved.ok) throw new Error("not reserved");
      expect(reserved.value.expiresAt).toBeLessThanOrEqual(Date.now() + UPLOADING_TTL_MS);
    }
    await expectError(await uploadTo(alice, chatId, png(64)), 429, "too_many_uploads");
    // 15 minutes later (the rows' expiry moved back instead of the clock forward): stale rows no longer count…
    await runInDurableObject(chatObject(chatId), (_instance, state) => {
      state.storage.sql.exec("UPDATE media SET expires_at = ? WHERE state = 'uploading'", Date.now() - 1);
    });
    const admitted = await upload(alice, chatId, png(64));
    // …and the expiry purge deletes them.
    await purgeExpired(chatId);
    expect(await mediaRows(chatId)).toEqual([{ media_id: admitted.mediaId, state: "ready" }]);
    // A stored upload waits the full day for a message.
    const stored = await upload(alice, chatId, png(64));
    expect(stored.expiresAt - Date.now()).toBeGreaterThan(Limits.pendingUploadTtlMs - 60_000);
  });


  it("a pending upload expires through the chat's alarm, and its R2 object is deleted", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const pending = await upload(alice, chatId, png());
    const kept = await upload(alice, chatId, png());
    await sent(await sendWith(alice, chatId, "c1", [{ mediaId: kept.mediaId }]));
    expect((await storedKeys(`chats/${chatId}/`)).sort()).toEqual([`chats/${chatId}/${pending.mediaId}`, `chats/${chatId}/${kept.mediaId}`].sort());
    expect(pending.expiresAt - Date.now()).toBeGreaterThan(Limits.pendingUploadTtlMs - 60_000);

    // Running the alarm early keeps a fresh upload.
    await runDurableObjectAlarm(chatObject(chatId));
    expect(await storedKeys(`chats/${chatId}/${pending.mediaId}`)).toHaveLength(1);

    // A day later (the row's expiry moved back instead of the clock forward).
    await runInDurableObject(chatObject(chatId), (_instance, state) => {
      state.storage.sql.exec("UPDATE media SET expires_at = ? WHERE media_id = ?", Date.now() - 1, pending.mediaId);
    });
    expect(await runDurableObjectAlarm(chatObject(chatId))).toBe(true);
    expect(await storedKeys(`chats/${chatId}/`)).toEqual([`chats/${chatId}/${kept.mediaId}`]);
    expect(await mediaRows(chatId)).toEqual([{ media_id: kept.mediaId, state: "attached" }]);
    await expectError(await download(alice, chatId, pending.mediaId), 404, "not_found");
    await expectError(await sendWith(alice, chatId, "c2", [{ mediaId: pending.mediaId }]), 400, "invalid_attachment");
  });

  it("deleting a message for everyone deletes its files from R2: bearer and signed link answer 404, other files stay", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const photo = await upload(alice, chatId, png(), "photo.png");
    const report = await upload(alice, chatId, pdf(), "report.pdf");
    const ack = await sent(await sendWith(alice, chatId, "c1", [{ mediaId: photo.mediaId }, { mediaId: report.mediaId }], "both"));
    const kept = await upload(alice, chatId, png());
    await sent(await sendWith(alice, chatId, "c2", [{ mediaId: kept.mediaId }]));
    const link = await signedUrl(bob, chatId, photo.mediaId);
    expect((await call(link.url)).status).toBe(200);

    const deleted = await call(`/api/chats/${chatId}/messages/${ack.seq}?for=everyone`, { method: "DELETE", token: alice.credentials });
    expect(deleted.status, await deleted.clone().text()).toBe(200);
    // The answer comes once the objects are gone.
    expect(await storedKeys(`chats/${chatId}/`)).toEqual([`chats/${chatId}/${kept.mediaId}`]);
    expect(await mediaRows(chatId)).toEqual([{ media_id: kept.mediaId, state: "attached" }]);
    await expectError(await download(bob, chatId, photo.mediaId), 404, "not_found");
    await expectError(await download(alice, chatId, report.mediaId), 404, "not_found");
    expect((await call(link.url)).status).toBe(404);
    const tombstone = ((await history(bob, chatId)) as HistoryPage).events.find((event) => event.seq === ack.seq);
    expect(tombstone).toEqual({ type: "message", seq: ack.seq, createdAt: ack.createdAt, messageId: ack.messageId, senderId: uid(alice), senderDeviceId: alice.device.deviceId, clientId: "c1", deletedSeq: ack.seq + 2 });
    expect((await download(bob, chatId, kept.mediaId)).status).toBe(200);
  });

  it("releaseMessage deletes a message's files; when R2 fails, the chat's alarm finishes the job", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const first = await upload(alice, chatId, png());
    const second = await upload(alice, chatId, pdf(), "a.pdf");
    const ack = await sent(await sendWith(alice, chatId, "c1", [{ mediaId: first.mediaId }, { mediaId: second.mediaId }]));
    const other = await upload(alice, chatId, png());
    const otherAck = await sent(await sendWith(alice, chatId, "c2", [{ mediaId: other.mediaId }]));

    /**
     * The chat's own registry code on the chat's own storage, as a delete-for-everyone calls
     * it, its retry stored as the chat's "media" deadline.
     */
    const release = (seq: number, bucket: R2Bucket) =>
      runInDurableObject(chatObject(chatId), async (_instance, state) => {
        const scheduled: number[] = [];
        const deadlines = new Scheduler<"media">(state.storage, { media: () => undefined });
        const schedule = (at: number) => {
          scheduled.push(at);
          // Stored as due now, as if the retry's 30 s had passed when the alarm runs.
          deadlines.noLaterThan("media", Math.min(at, Date.now()));
        };
        const registry = new MediaRegistry({ db: drizzle(state.storage, { schema }), bucket, schedule });
        await registry.releaseMessage(seq, Date.now());
        return scheduled;
      });

    // R2 down: the files are unreadable at once, their objects wait for the retry.
    const failing = { ...env.MEDIA, delete: () => Promise.reject(new Error("R2 is unavailable")) } as unknown as R2Bucket;
    expect(await release(ack.seq, failing)).toHaveLength(1); // the retry, set before R2 was called
    await expectError(await download(bob, chatId, first.mediaId), 404, "not_found");
    expect(await storedKeys(`chats/${chatId}/${first.mediaId}`)).toHaveLength(1);
    expect(await mediaRows(chatId)).toEqual(expect.arrayContaining([{ media_id: first.mediaId, state: "deleting" }]));
    // The chat's alarm (its "media" deadline) retries, after a restart too.
    await abortAllDurableObjects();
    expect(await runDurableObjectAlarm(chatObject(chatId))).toBe(true);
    expect(await storedKeys(`chats/${chatId}/`)).toEqual([`chats/${chatId}/${other.mediaId}`]);
    expect(await mediaRows(chatId)).toEqual([{ media_id: other.mediaId, state: "attached" }]);

    // R2 up: deleted at once.
    await release(otherAck.seq, env.MEDIA);
    expect(await storedKeys(`chats/${chatId}/`)).toEqual([]);
    expect(await mediaRows(chatId)).toEqual([]);
    await expectError(await download(bob, chatId, other.mediaId), 404, "not_found");
  });

  it("a multipart upload whose R2 abort fails stays deleting, and the chat's alarm aborts it later", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const started = await startMultipart(alice, chatId, 1000);
    expect((await putPart(alice, chatId, started.mediaId, 1, png(1000))).status).toBe(200);

    const failing = {
      ...env.MEDIA,
      resumeMultipartUpload: () => ({ abort: () => Promise.reject(new Error("R2 is unavailable")) }),
      delete: () => Promise.reject(new Error("nothing is deleted before the parts are aborted")),
    } as unknown as R2Bucket;
    const purged = await runInDurableObject(chatObject(chatId), async (_instance, state) => {
      const deadlines = new Scheduler<"media">(state.storage, { media: () => undefined });
      const schedule = (at: number) => deadlines.noLaterThan("media", Math.min(at, Date.now()));
      const registry = new MediaRegistry({ db: drizzle(state.storage, { schema }), bucket: failing, schedule });
      registry.abandon(uid(alice), started.mediaId, Date.now());
      return registry.run(Date.now()).then(
        () => "purged",
        (error: unknown) => (error as Error).message,
      );
    });
    expect(purged).toBe("R2 is unavailable");
    // Kept for the retry: the parts are still in R2.
    expect(await mediaRows(chatId)).toEqual([{ media_id: started.mediaId, state: "deleting" }]);
    // The chat's alarm (its "media" deadline) retries, after a restart too.
    await abortAllDurableObjects();
    expect(await runDurableObjectAlarm(chatObject(chatId))).toBe(true);
    expect(await mediaRows(chatId)).toEqual([]);
    expect(await storedKeys(`chats/${chatId}/`)).toEqual([]);
  });

  it(`at most ${Limits.maxPendingUploadsPerMember} uploads wait per member: the next is 429 too_many_uploads`, async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    for (let i = 0; i < Limits.maxPendingUploadsPerMember; i++) await upload(alice, chatId, png(64));
    await expectError(await uploadTo(alice, chatId, png(64)), 429, "too_many_uploads");
    // someone else's budget is their own
    await upload(bob, chatId, png(64));
  });
});

describe("multipart uploads", () => {
  it("MEDIA_MAX_MULTIPART_BYTES is capped so that every part of the largest upload fits in one Workers request", () => {
    const base = { JWT_SECRET: "j".repeat(32), HMAC_SECRET: "h".repeat(32) };
    expect(configFrom({ ...base, MEDIA_MAX_MULTIPART_BYTES: String(MAX_MULTIPART_UPLOAD_BYTES) }).media.maxMultipartBytes).toBe(MAX_MULTIPART_UPLOAD_BYTES);
    expect(() => configFrom({ ...base, MEDIA_MAX_MULTIPART_BYTES: String(MAX_MULTIPART_UPLOAD_BYTES + 1) })).toThrow(/MEDIA_MAX_MULTIPART_BYTES/);
    expect(() => configFrom({ ...base, MEDIA_MAX_MULTIPART_BYTES: String(5 * 1024 ** 4) })).toThrow(/MEDIA_MAX_MULTIPART_BYTES/);
    const partSize = partSizeFor(MAX_MULTIPART_UPLOAD_BYTES);
    expect(partSize).toBe(95 * 1024 * 1024);
    expect(partSize).toBeLessThan(100_000_000); // the Workers request body limit
    expect(Math.ceil(MAX_MULTIPART_UPLOAD_BYTES / partSize)).toBeLessThanOrEqual(10_000);
  });

  it("a completion retried after R2 assembled the file answers 201 with the same result; a finished upload cannot be aborted", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const file = png(1000);
    const started = await startMultipart(alice, chatId, file.length, "pic.png");
    expect((await putPart(alice, chatId, started.mediaId, 1, file)).status).toBe(200);

    // A first completion: R2 assembled the object, then the Worker died before the chat stored the result.
    const first = await chatObject(chatId).multipartCompletion(uid(alice), started.mediaId);
    if (!first.ok || first.value.done) throw new Error("no completion");
    await env.MEDIA.resumeMultipartUpload(first.value.r2Key, first.value.uploadId).complete(first.value.parts);
    // Meanwhile an abort does not purge it.
    await expectError(await call(`/api/chats/${chatId}/media/multipart/${started.mediaId}`, { method: "DELETE", token: alice.credentials }), 404, "not_found");
    expect(await mediaRows(chatId)).toEqual([{ media_id: started.mediaId, state: "completing" }]);

    const retried = await complete(alice, chatId, started.mediaId);
    expect(retried.status, await retried.clone().text()).toBe(201);
    const result = UploadResult.parse(await retried.json());
    expect(result).toMatchObject({ mediaId: started.mediaId, kind: "image", contentType: "image/png", size: file.length });
    // Once more (the answer was lost): the same result.
    const again = await complete(alice, chatId, started.mediaId);
    expect(again.status).toBe(201);
    expect(UploadResult.parse(await again.json())).toEqual(result);

    // A finished upload is a file: DELETE …/multipart/:mediaId is 404 and it stays.
    await expectError(await call(`/api/chats/${chatId}/media/multipart/${started.mediaId}`, { method: "DELETE", token: alice.credentials }), 404, "not_found");
    expect(sameBytes(await bytesOf(await download(alice, chatId, started.mediaId)), file)).toBe(true);

    // Unsent, it expires: its object goes (its upload is gone from R2 already).
    await runInDurableObject(chatObject(chatId), (_instance, state) => {
      state.storage.sql.exec("UPDATE media SET expires_at = ? WHERE media_id = ?", Date.now() - 1, started.mediaId);
    });
    await purgeExpired(chatId);
    expect(await mediaRows(chatId)).toEqual([]);
    expect(await storedKeys(`chats/${chatId}/`)).toEqual([]);
  });

  it("a .docx sent in parts is typed by the name given at start", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const file = fileOf([0x50, 0x4b, 0x03, 0x04], 2000);
    const started = await startMultipart(alice, chatId, file.length, "report.docx");
    expect((await putPart(alice, chatId, started.mediaId, 1, file)).status).toBe(200);
    const completed = await complete(alice, chatId, started.mediaId);
    expect(completed.status, await completed.clone().text()).toBe(201);
    expect(UploadResult.parse(await completed.json())).toMatchObject({
      kind: "document",
      contentType: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    });
    const response = await download(alice, chatId, started.mediaId);
    expect(response.headers.get("content-type")).toBe("application/vnd.openxmlformats-officedocument.wordprocessingml.document");
  });

  it("a part sent again that finishes while the upload is completing keeps its new etag for the next completion", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const size = 8 * 1024 * 1024 + 10;
    const startResponse = await call(`/api/chats/${chatId}/media/multipart`, {
      method: "POST",
      token: alice.credentials,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ size, name: "clip.mp4" }),
    });
    const { mediaId } = MultipartUpload.parse(await startResponse.json());
    const room = chatObject(chatId);
    const video = { kind: "video" as const, contentType: "video/mp4" };
    expect(await room.multipartPartStored(uid(alice), mediaId, 1, "etag-1", video)).toEqual({ ok: true, value: null });
    expect(await room.multipartPartStored(uid(alice), mediaId, 2, "etag-2", null)).toEqual({ ok: true, value: null });
    const first = await room.multipartCompletion(uid(alice), mediaId);
    expect(first.ok && !first.value.done && first.value.parts).toEqual([{ partNumber: 1, etag: "etag-1" }, { partNumber: 2, etag: "etag-2" }]);
    // Part 2 was sent again before the completion began; it lands now, during it.
    expect(await room.multipartPartStored(uid(alice), mediaId, 2, "etag-2-again", null)).toEqual({ ok: true, value: null });
    const retried = await room.multipartCompletion(uid(alice), mediaId);
    expect(retried.ok && !retried.value.done && retried.value.parts).toEqual([{ partNumber: 1, etag: "etag-1" }, { partNumber: 2, etag: "etag-2-again" }]);
    // Someone else's part report is still refused.
    expect(await room.multipartPartStored(uid(bob), mediaId, 2, "etag-x", null)).toMatchObject({ ok: false, status: 404 });
  });

  it("a file of two parts round-trips", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const file = fileOf([0x00, 0x00, 0x00, 0x18, ...[..."ftypmp42"].map((c) => c.charCodeAt(0))], 8 * 1024 * 1024 + 12_345);
    const startResponse = await call(`/api/chats/${chatId}/media/multipart`, {
      method: "POST",
      token: alice.credentials,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ size: file.length, name: "clip.mp4" }),
    });
    expect(startResponse.status, await startResponse.clone().text()).toBe(201);
    const started = MultipartUpload.parse(await startResponse.json());
    expect(started).toMatchObject({ partSize: 8 * 1024 * 1024, partCount: 2 });

    const partPath = (n: number) => `/api/chats/${chatId}/media/multipart/${started.mediaId}/parts/${n}`;
    // a part of the wrong length is refused unread
    await expectError(await call(partPath(2), { method: "PUT", token: alice.credentials, body: file.subarray(0, 10) }), 400, "validation_failed");
    // parts in any order
    for (const n of [2, 1]) {
      const body = file.subarray((n - 1) * started.partSize, n * started.partSize);
      const response = await call(partPath(n), { method: "PUT", token: alice.credentials, body });
      expect(response.status, await response.clone().text()).toBe(200);
      expect(UploadedPart.parse(await response.json())).toEqual({ partNumber: n, size: body.length });
    }
    const completed = await call(`/api/chats/${chatId}/media/multipart/${started.mediaId}/complete`, { method: "POST", token: alice.credentials });
    expect(completed.status, await completed.clone().text()).toBe(201);
    expect(UploadResult.parse(await completed.json())).toMatchObject({ mediaId: started.mediaId, kind: "video", contentType: "video/mp4", size: file.length });

    await sent(await sendWith(alice, chatId, "c1", [{ mediaId: started.mediaId }]));
    const response = await download(bob, chatId, started.mediaId);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-disposition")).toBe("inline; filename=\"clip.mp4\"; filename*=UTF-8''clip.mp4");
    expect(sameBytes(await bytesOf(response), file)).toBe(true);
  });

  it("part 1 that is not an allowed type ends the upload with 415; an abort deletes it", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const start = async () =>
      MultipartUpload.parse(
        await (
          await call(`/api/chats/${chatId}/media/multipart`, {
            method: "POST",
            token: alice.credentials,
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ size: 1000 }),
          })
        ).json(),
      );
    const refused = await start();
    const part = `/api/chats/${chatId}/media/multipart/${refused.mediaId}/parts/1`;
    await expectError(await call(part, { method: "PUT", token: alice.credentials, body: fileOf("MZ", 1000) }), 415, "unsupported_media_type");
    await expectError(await call(part, { method: "PUT", token: alice.credentials, body: png(1000) }), 404, "not_found");

    const aborted = await start();
    expect((await call(`/api/chats/${chatId}/media/multipart/${aborted.mediaId}/parts/1`, { method: "PUT", token: alice.credentials, body: png(1000) })).status).toBe(200);
    expect((await call(`/api/chats/${chatId}/media/multipart/${aborted.mediaId}`, { method: "DELETE", token: alice.credentials })).status).toBe(204);
    await expectError(await call(`/api/chats/${chatId}/media/multipart/${aborted.mediaId}/complete`, { method: "POST", token: alice.credentials }), 404, "not_found");
    expect(await mediaRows(chatId)).toEqual([]);
    expect(await storedKeys(`chats/${chatId}/`)).toEqual([]);
  });
});
