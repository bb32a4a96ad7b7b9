import { describe, expect, it } from "vitest";
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
});
