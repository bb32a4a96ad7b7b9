import { abortAllDurableObjects, env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { drizzle } from "drizzle-orm/durable-sqlite";
import { describe, expect, it } from "vitest";
import * as schema from "../../src/db/user-schema.ts";
import { randomId } from "../../src/lib/crypto.ts";
import { Scheduler } from "../../src/lib/scheduler.ts";
import { AvatarPictures, PENDING_AVATAR_MS } from "../../src/user/avatar-pictures.ts";
import { AccountProfile } from "../../src/user/profile.ts";
import { Limits, Me, UserLookupResponse } from "../../src/protocol/index.ts";
import { api, createDirect, expectError, login, type Session } from "./helpers.ts";
import { bytesOf, call, fileOf, png, sameBytes, storedKeys } from "./media-support.ts";

const uid = (session: Session) => session.user.userId;

function putAvatar(session: Session, bytes: Uint8Array, headers: Record<string, string> = {}) {
  return call("/api/me/avatar", { method: "PUT", token: session.credentials, body: bytes, headers: { "content-type": "image/png", ...headers } });
}

async function avatarIdOf(session: Session): Promise<string | undefined> {
  return Me.parse(await (await api("/api/me", { token: session.credentials })).json()).avatarId;
}

describe("profile pictures", () => {
  it("an upload is visible to a chat peer, 404 to a stranger, and replacing it deletes the old one", async () => {
    const [alice, bob, mallory] = await Promise.all([login(), login(), login()]);
    const chatId = await createDirect(alice, bob);
    const picture = png(Limits.maxFrameBytes + 1); // the JSON body limit does not apply
    const response = await putAvatar(alice, picture);
    expect(response.status, await response.clone().text()).toBe(200);
    const avatarId = Me.parse(await response.json()).avatarId!;
    expect(avatarId).toMatch(/^m_/);
    // the profile others see carries it
    const profile = UserLookupResponse.parse(await (await api(`/api/users/${uid(alice)}`, { token: bob.credentials })).json());
    expect(profile.user.avatarId).toBe(avatarId);

    const seen = await call(`/api/users/${uid(alice)}/avatar?chatId=${chatId}`, { token: bob.credentials });
    expect(seen.status).toBe(200);
    expect(seen.headers.get("content-type")).toBe("image/png");
    expect(seen.headers.get("x-content-type-options")).toBe("nosniff");
    expect(seen.headers.get("cache-control")).toBe("private");
    expect(sameBytes(await bytesOf(seen), picture)).toBe(true);
    expect((await call(`/api/users/${uid(alice)}/avatar`, { token: alice.credentials })).status).toBe(200);

    await expectError(await call(`/api/users/${uid(alice)}/avatar?chatId=${chatId}`, { token: mallory.credentials }), 404, "not_found");
    const malloryChat = await createDirect(mallory, bob);
    await expectError(await call(`/api/users/${uid(alice)}/avatar?chatId=${malloryChat}`, { token: mallory.credentials }), 404, "not_found");

    const replacement = png(1000);
    expect((await putAvatar(alice, replacement)).status).toBe(200);
    const newId = await avatarIdOf(alice);
    expect(newId).not.toBe(avatarId);
    expect(await storedKeys(`avatars/${uid(alice)}/`)).toEqual([`avatars/${uid(alice)}/${newId}`]);
    expect(sameBytes(await bytesOf(await call(`/api/users/${uid(alice)}/avatar?chatId=${chatId}`, { token: bob.credentials })), replacement)).toBe(true);

    expect((await call("/api/me/avatar", { method: "DELETE", token: alice.credentials })).status).toBe(200);
    expect(await avatarIdOf(alice)).toBe(undefined);
    expect(await storedKeys(`avatars/${uid(alice)}/`)).toEqual([]);
    await expectError(await call(`/api/users/${uid(alice)}/avatar?chatId=${chatId}`, { token: bob.credentials }), 404, "not_found");
  });

  it("only images, with a Content-Length, up to 5 MiB", async () => {
    const alice = await login();
    await expectError(await putAvatar(alice, fileOf("%PDF-1.7", 1000)), 415, "unsupported_media_type");
    await expectError(await putAvatar(alice, fileOf([0x7f, 0x45, 0x4c, 0x46], 1000)), 415, "unsupported_media_type");
    await expectError(await putAvatar(alice, png(5 * 1024 * 1024 + 1)), 413, "too_large");
    const chunked = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(png(100));
        controller.close();
      },
    });
    await expectError(await call("/api/me/avatar", { method: "PUT", token: alice.credentials, body: chunked }), 411, "length_required");
    expect(await avatarIdOf(alice)).toBe(undefined);
    expect(await storedKeys(`avatars/${uid(alice)}/`)).toEqual([]);
  });

  it("a replaced picture whose R2 delete fails is deleted later by the account's alarm", async () => {
    const alice = await login();
    expect((await putAvatar(alice, png(1000))).status).toBe(200);
    const old = (await avatarIdOf(alice))!;
    const account = env.USER.get(env.USER.idFromName(uid(alice)));

    // The account's own picture code on its own storage, with R2 failing, its retry stored as the "avatar-cleanup" deadline.
    const failing = { ...env.MEDIA, delete: () => Promise.reject(new Error("R2 is unavailable")) } as unknown as R2Bucket;
    const previous = await runInDurableObject(account, async (_instance, state) => {
      const deadlines = new Scheduler<"avatar-cleanup">(state.storage, { "avatar-cleanup": () => undefined });
      const pictures = new AvatarPictures({
        storage: state.storage,
        profile: new AccountProfile(drizzle(state.storage, { schema })),
        bucket: failing,
        userId: () => uid(alice),
        schedule: (at) => deadlines.noLaterThan("avatar-cleanup", Math.min(at, Date.now())),
      });
      return pictures.set(null, Date.now());
    });
    expect(previous).toBe(old);
    expect(await avatarIdOf(alice)).toBe(undefined);
    expect(await storedKeys(`avatars/${uid(alice)}/`)).toEqual([`avatars/${uid(alice)}/${old}`]);

    // The account's alarm retries, after a restart too.
    await abortAllDurableObjects();
    expect(await runDurableObjectAlarm(env.USER.get(env.USER.idFromName(uid(alice))))).toBe(true);
    expect(await storedKeys(`avatars/${uid(alice)}/`)).toEqual([]);
  });

  it("a picture written but never taken by the profile (the Worker died) is deleted after its deadline; the profile's is kept", async () => {
    const alice = await login();
    expect((await putAvatar(alice, png(1000))).status).toBe(200);
    const current = (await avatarIdOf(alice))!;
    const account = env.USER.get(env.USER.idFromName(uid(alice)));
    const orphan = randomId("m");
    // Reserved and written PENDING_AVATAR_MS ago; the profile never took it.
    await account.reserveAvatar(orphan, Date.now() - PENDING_AVATAR_MS - 1);
    await env.MEDIA.put(`avatars/${uid(alice)}/${orphan}`, png(100));
    // Too late for the profile now: its object may be going.
    const refused = await account.setAvatar(orphan).then(
      () => "taken",
      (error: unknown) => (error as Error).message,
    );
    expect(refused).toMatch(/too long/);
    expect(await avatarIdOf(alice)).toBe(current);

    expect(await runDurableObjectAlarm(account)).toBe(true);
    expect(await storedKeys(`avatars/${uid(alice)}/`)).toEqual([`avatars/${uid(alice)}/${current}`]);
    expect((await call(`/api/users/${uid(alice)}/avatar`, { token: alice.credentials })).status).toBe(200);
  });

  it("a picture still being written when its deadline's cleanup ran is deleted once it arrives and is refused", async () => {
    const alice = await login();
    const account = env.USER.get(env.USER.idFromName(uid(alice)));
    const slow = randomId("m");
    await account.reserveAvatar(slow, Date.now() - PENDING_AVATAR_MS - 1);
    // The cleanup runs while the bytes are still on their way: nothing to delete yet, its record goes.
    await runDurableObjectAlarm(account);
    expect(await storedKeys(`avatars/${uid(alice)}/`)).toEqual([]);
    // The slow upload lands, and the profile refuses it.
    await env.MEDIA.put(`avatars/${uid(alice)}/${slow}`, png(100));
    const refused = await account.setAvatar(slow).then(
      () => "taken",
      (error: unknown) => (error as Error).message,
    );
    expect(refused).toMatch(/too long/);
    // Refusing it recorded it again: the account's alarm deletes the late object.
    expect(await runDurableObjectAlarm(account)).toBe(true);
    expect(await storedKeys(`avatars/${uid(alice)}/`)).toEqual([]);
    expect(await avatarIdOf(alice)).toBeUndefined();
  });

  it("a picture reserved recently is kept until the profile takes it", async () => {
    const alice = await login();
    const account = env.USER.get(env.USER.idFromName(uid(alice)));
    const pending = randomId("m");
    await account.reserveAvatar(pending);
    await env.MEDIA.put(`avatars/${uid(alice)}/${pending}`, png(100));
    await runDurableObjectAlarm(account);
    expect(await storedKeys(`avatars/${uid(alice)}/`)).toEqual([`avatars/${uid(alice)}/${pending}`]);
    expect((await account.setAvatar(pending)).me.avatarId).toBe(pending);
    expect(await storedKeys(`avatars/${uid(alice)}/`)).toEqual([`avatars/${uid(alice)}/${pending}`]);
  });
});
