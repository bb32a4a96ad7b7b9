import { env, evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { configFrom } from "../../src/lib/config.ts";
import { instanceStarts } from "../../src/lib/instance-starts.ts";
import { mintId } from "../../src/lib/minted-id.ts";
import { Limits, type Presence, type PresenceWatch } from "../../src/protocol/index.ts";
import { api, apiClient, awayFromRateWindowEdge, createDirect, createGroup, expectError, login, resumeStream, type Session, type TestSocket } from "./helpers.ts";

/**
 * Presence (docs/protocol.md §8.6): online while a foreground stream's heartbeat is
 * younger than 2 x HEARTBEAT_MS (500 ms here, vitest.config.ts), last seen when it was,
 * pushed to streams that subscribed, shown only to people who share a chat.
 */

const userObject = (userId: string) => env.USER.get(env.USER.idFromName(userId));
const madeUp = () => `u_${"A".repeat(8)}${crypto.randomUUID().replace(/-/g, "").slice(0, 24)}`;

let ids = 0;
async function subscribe(socket: TestSocket, watch: PresenceWatch[]) {
  const id = `p${++ids}`;
  socket.send({ type: "presence.subscribe", id, watch });
  return socket.reply(id);
}

async function setAppState(socket: TestSocket, state: "foreground" | "background") {
  const id = `st${++ids}`;
  socket.send({ type: "presence.state", id, state });
  return socket.reply(id);
}

/** Presence frames a socket received about `userId`, in order. */
const presenceOf = (socket: TestSocket, userId: string): Presence[] =>
  socket.frames.flatMap((frame) => (frame.type === "presence" && frame.presence.userId === userId ? [frame.presence] : []));

/** Waits for a presence frame about `userId` that matches `match`, and answers it. */
function presenceFrame(socket: TestSocket, userId: string, match: (presence: Presence) => boolean, what: string, timeoutMs = 10_000) {
  return socket.until(() => presenceOf(socket, userId).find(match), what, timeoutMs);
}

/** Sends the heartbeat every 100 ms, as a device in the foreground does; returns a stop function. */
function keepAlive(socket: TestSocket): () => void {
  const timer = setInterval(() => {
    if (!socket.closed) socket.send("ping");
  }, 100);
  return () => clearInterval(timer);
}

async function restPresence(caller: Session, userId: string, chatId: string) {
  return api(`/api/users/${userId}/presence?chatId=${chatId}`, { token: caller.credentials });
}

/** A round trip on the socket: every frame sent to it before this is in. */
async function roundTrip(socket: TestSocket) {
  expect(await setAppState(socket, "foreground")).toMatchObject({ ok: true });
}

/** The presence keys an account's object stores, and its alarm. */
async function presenceStorage(userId: string) {
  return runInDurableObject(userObject(userId), async (_instance, state) => ({
    keys: [...state.storage.kv.list({ prefix: "presence:" })].map(([key]) => key),
    alarm: await state.storage.getAlarm(),
  }));
}

describe("presence", () => {
  it("shows a user online while their stream is up, then offline with last seen after a clean close", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const { socket: watcher } = await resumeStream(alice.credentials);
    const first = await subscribe(watcher, [{ userId: bob.user.userId, chatId }]);
    // Never online yet: no last seen.
    expect(first).toMatchObject({ ok: true, result: { presence: [{ userId: bob.user.userId, online: false }], refused: [], leaseMs: Limits.presenceLeaseMs } });
    expect(first.ok && (first.result as { presence: Presence[] }).presence[0]!.lastSeenAt).toBeUndefined();

    const { socket: bobStream } = await resumeStream(bob.credentials);
    const stop = keepAlive(bobStream);
    await presenceFrame(watcher, bob.user.userId, (p) => p.online, "bob online");
    const online = await restPresence(alice, bob.user.userId, chatId);
    expect(online.status).toBe(200);
    expect(await online.json()).toEqual({ userId: bob.user.userId, online: true });

    stop();
    const closedAt = Date.now();
    bobStream.ws.close(1000);
    const offline = await presenceFrame(watcher, bob.user.userId, (p) => !p.online, "bob offline");
    expect(offline.lastSeenAt).toBeGreaterThanOrEqual(closedAt);
    expect(offline.lastSeenAt).toBeLessThanOrEqual(Date.now());
    expect(await (await restPresence(alice, bob.user.userId, chatId)).json()).toEqual({ userId: bob.user.userId, online: false, lastSeenAt: offline.lastSeenAt });
    // Each change was pushed once: online, then offline.
    expect(presenceOf(watcher, bob.user.userId).map((p) => p.online)).toEqual([true, false]);
  });

  it("turns a device that stops sending heartbeats (and never closes) offline through the sweep, last seen at its last heartbeat", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const { socket: watcher } = await resumeStream(alice.credentials);
    const { socket: bobStream } = await resumeStream(bob.credentials);
    const stop = keepAlive(bobStream);
    expect(await subscribe(watcher, [{ userId: bob.user.userId, chatId }])).toMatchObject({ ok: true, result: { presence: [{ online: true }] } });

    // The last heartbeat, answered by the runtime; then the device goes silent without a close.
    stop();
    const pongs = bobStream.raw.filter((text) => text === "pong").length;
    const pingedAt = Date.now();
    bobStream.send("ping");
    await bobStream.until(() => bobStream.raw.filter((text) => text === "pong").length > pongs, "the last pong");
    const pongedAt = Date.now();

    const offline = await presenceFrame(watcher, bob.user.userId, (p) => !p.online, "bob offline through the sweep");
    expect(offline.lastSeenAt).toBeGreaterThanOrEqual(pingedAt);
    expect(offline.lastSeenAt).toBeLessThanOrEqual(pongedAt);
    expect(bobStream.closed).toBeNull();
    // Kept by bob's object: the same last seen over REST.
    expect(await (await restPresence(alice, bob.user.userId, chatId)).json()).toEqual({ userId: bob.user.userId, online: false, lastSeenAt: offline.lastSeenAt });
    // Offline, no sweep looks any more (heartbeats never wake the object); a frame on the
    // stream (the app is back) turns it online again.
    const again = keepAlive(bobStream);
    await roundTrip(bobStream);
    await presenceFrame(watcher, bob.user.userId, (p) => p.online && presenceOf(watcher, bob.user.userId).indexOf(p) > presenceOf(watcher, bob.user.userId).indexOf(offline), "bob online again");
    again();
    bobStream.ws.close(1000);
  });

  it("counts a stream in the background as offline, and online again in the foreground", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const group = await createGroup(alice, [bob]);
    const { socket: watcher } = await resumeStream(alice.credentials);
    const { socket: bobStream } = await resumeStream(bob.credentials);
    const stop = keepAlive(bobStream);
    expect(await subscribe(watcher, [{ userId: bob.user.userId, chatId: group }])).toMatchObject({ ok: true, result: { presence: [{ online: true }] } });

    const before = Date.now();
    expect(await setAppState(bobStream, "background")).toMatchObject({ ok: true, result: { state: "background" } });
    const offline = await presenceFrame(watcher, bob.user.userId, (p) => !p.online, "bob in the background");
    expect(offline.lastSeenAt).toBeGreaterThanOrEqual(before);
    expect(await setAppState(bobStream, "foreground")).toMatchObject({ ok: true, result: { state: "foreground" } });
    await presenceFrame(watcher, bob.user.userId, (p) => p.online && presenceOf(watcher, bob.user.userId).indexOf(p) > 0, "bob back");
    stop();
    bobStream.ws.close(1000);
  });

  it("hides last seen both ways: a user who hides it shows none and sees none; online stays visible", async () => {
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    const group = await createGroup(carol, [alice, bob]);
    expect(await apiClient(bob).updateProfile({ hideLastSeen: true })).toMatchObject({ hideLastSeen: true });
    expect(await apiClient(alice).me()).toMatchObject({ hideLastSeen: false });

    // Bob hides: alice sees him online, then offline without a time.
    const { socket: aliceWatch } = await resumeStream(alice.credentials);
    const { socket: bobStream } = await resumeStream(bob.credentials);
    const stopBob = keepAlive(bobStream);
    expect(await subscribe(aliceWatch, [{ userId: bob.user.userId, chatId: group }])).toMatchObject({ ok: true, result: { presence: [{ online: true }] } });
    stopBob();
    const bobClosedAt = Date.now();
    bobStream.ws.close(1000);
    const bobOffline = await presenceFrame(aliceWatch, bob.user.userId, (p) => !p.online, "bob offline");
    expect(bobOffline).toEqual({ userId: bob.user.userId, online: false });
    expect(await (await restPresence(alice, bob.user.userId, group)).json()).toEqual({ userId: bob.user.userId, online: false });

    // Carol does not hide: alice sees her last seen; bob, who hides his, sees none.
    const { socket: bobWatch } = await resumeStream(bob.credentials);
    const { socket: carolStream } = await resumeStream(carol.credentials);
    const stopCarol = keepAlive(carolStream);
    expect(await subscribe(bobWatch, [{ userId: carol.user.userId, chatId: group }])).toMatchObject({ ok: true, result: { presence: [{ online: true }] } });
    expect(await subscribe(aliceWatch, [{ userId: bob.user.userId, chatId: group }, { userId: carol.user.userId, chatId: group }])).toMatchObject({ ok: true });
    stopCarol();
    carolStream.ws.close(1000);
    const seenByAlice = await presenceFrame(aliceWatch, carol.user.userId, (p) => !p.online, "carol offline, for alice");
    expect(seenByAlice.lastSeenAt).toBeTypeOf("number");
    const seenByBob = await presenceFrame(bobWatch, carol.user.userId, (p) => !p.online, "carol offline, for bob");
    expect(seenByBob).toEqual({ userId: carol.user.userId, online: false });
    expect(await (await restPresence(bob, carol.user.userId, group)).json()).toEqual({ userId: carol.user.userId, online: false });
    expect(await subscribe(bobWatch, [{ userId: carol.user.userId, chatId: group }])).toMatchObject({ ok: true, result: { presence: [{ userId: carol.user.userId, online: false }] } });
    expect(JSON.stringify(bobWatch.frames)).not.toContain("lastSeenAt");

    // Showing it again: alice sees bob's last seen from then on.
    await apiClient(bob).updateProfile({ hideLastSeen: false });
    const shown = await presenceFrame(aliceWatch, bob.user.userId, (p) => p.lastSeenAt !== undefined, "bob's last seen, shown again");
    expect(shown).toMatchObject({ userId: bob.user.userId, online: false });
    expect(shown.lastSeenAt).toBeGreaterThanOrEqual(bobClosedAt);
  });

  it("pushes a flood of state flips at most once a second, the latest state each time", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const { socket: watcher } = await resumeStream(alice.credentials);
    const { socket: bobStream } = await resumeStream(bob.credentials);
    const stop = keepAlive(bobStream);
    expect(await subscribe(watcher, [{ userId: bob.user.userId, chatId }])).toMatchObject({ ok: true, result: { presence: [{ online: true }] } });
    const pushes = () => presenceOf(watcher, bob.user.userId);

    const startedAt = Date.now();
    // 60 flips as fast as the frame budget lets them through (its burst is 200), ending in the foreground.
    const flips = 60;
    for (let i = 1; i <= flips; i++) bobStream.send({ type: "presence.state", id: `flip${i}`, state: i % 2 === 1 ? "background" : "foreground" });
    expect(await bobStream.reply(`flip${flips}`)).toMatchObject({ ok: true, result: { state: "foreground" } });
    // The last round carries the latest state: online.
    await watcher.until(() => pushes().at(-1)?.online === true, "the flood's last state, online");
    // Then a change after the flood, pushed in a round of its own.
    stop();
    const closedAt = Date.now();
    bobStream.ws.close(1000);
    await presenceFrame(watcher, bob.user.userId, (p) => !p.online && p.lastSeenAt! >= closedAt, "bob offline after the flood");
    const elapsed = Date.now() - startedAt;
    expect(pushes().at(-1)).toMatchObject({ online: false });
    // Rounds start at least a second apart: no more of them than seconds, plus the first.
    expect(pushes().length).toBeLessThanOrEqual(Math.floor(elapsed / Limits.presencePushIntervalMs) + 1);
  });

  it("pushes only to the streams that subscribed", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const tablet = await login(alice.phone, "alice's tablet");
    const chatId = await createDirect(alice, bob);
    const { socket: phone } = await resumeStream(alice.credentials);
    const { socket: other } = await resumeStream(tablet.credentials);
    expect(await subscribe(phone, [{ userId: bob.user.userId, chatId }])).toMatchObject({ ok: true });

    const { socket: bobStream } = await resumeStream(bob.credentials);
    const stop = keepAlive(bobStream);
    await presenceFrame(phone, bob.user.userId, (p) => p.online, "bob online, on the subscribed stream");
    await roundTrip(other);
    expect(other.frames.filter((f) => f.type === "presence")).toEqual([]);

    // An empty list unsubscribes the phone; the tablet subscribes now.
    expect(await subscribe(other, [{ userId: bob.user.userId, chatId }])).toMatchObject({ ok: true, result: { presence: [{ online: true }] } });
    expect(await subscribe(phone, [])).toMatchObject({ ok: true, result: { presence: [], refused: [] } });
    stop();
    bobStream.ws.close(1000);
    // The push that reached the tablet was the one call to alice's account that would
    // also have reached the phone: anything sent to the phone came before this round trip.
    await presenceFrame(other, bob.user.userId, (p) => !p.online, "bob offline, on the tablet");
    await roundTrip(phone);
    expect(presenceOf(phone, bob.user.userId).map((p) => p.online)).toEqual([true]);
  });
});

describe("presence across eviction", () => {
  it("keeps leases, watch lists and last seen when both accounts' objects are evicted", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const { socket: watcher } = await resumeStream(alice.credentials);
    const { socket: bobStream } = await resumeStream(bob.credentials);
    const stop = keepAlive(bobStream);
    expect(await subscribe(watcher, [{ userId: bob.user.userId, chatId }])).toMatchObject({ ok: true, result: { presence: [{ online: true }] } });
    // Longer than 2 x HEARTBEAT_MS since the stream opened: from now on only its heartbeats keep it online.
    await new Promise((resolve) => setTimeout(resolve, 2 * configFrom(env).heartbeatMs + 200));

    await evictDurableObject(userObject(alice.user.userId));
    await evictDurableObject(userObject(bob.user.userId));
    // Still online after the eviction: the heartbeats' time is the runtime's, not the object's memory.
    expect(await (await restPresence(alice, bob.user.userId, chatId)).json()).toEqual({ userId: bob.user.userId, online: true });

    stop();
    const closedAt = Date.now();
    bobStream.ws.close(1000);
    const offline = await presenceFrame(watcher, bob.user.userId, (p) => !p.online, "bob offline, after both evictions");
    expect(offline.lastSeenAt).toBeGreaterThanOrEqual(closedAt);
    await evictDurableObject(userObject(bob.user.userId));
    expect(await (await restPresence(alice, bob.user.userId, chatId)).json()).toEqual({ userId: bob.user.userId, online: false, lastSeenAt: offline.lastSeenAt });
  });
});

describe("presence of strangers", () => {
  it("refuses users who share no chat with the caller, by frame and by REST, and stores nothing for them", async () => {
    const [alice, bob, mallory] = await Promise.all([login(), login(), login()]);
    const ours = await createDirect(alice, bob);
    const theirs = await createDirect(mallory, bob);
    const { socket } = await resumeStream(alice.credentials);
    const unknown = madeUp();
    const noAccount = await mintId(configFrom(env).hmacSecret, "u");
    // A made-up id is refused without waking any object.
    const starts = instanceStarts("User");
    expect(await subscribe(socket, [{ userId: unknown, chatId: ours }])).toMatchObject({ ok: true, result: { presence: [], refused: [unknown] } });
    expect(instanceStarts("User")).toBe(starts);

    const reply = await subscribe(socket, [
      { userId: mallory.user.userId, chatId: ours }, // a chat mallory is not in
      { userId: mallory.user.userId, chatId: theirs }, // deduplicated: the last entry per user counts
      { userId: noAccount, chatId: ours }, // an issued id without an account
      { userId: alice.user.userId, chatId: ours }, // oneself
    ]);
    expect(reply).toMatchObject({ ok: true, result: { presence: [] } });
    expect(reply.ok && (reply.result as { refused: string[] }).refused.sort()).toEqual([alice.user.userId, mallory.user.userId, noAccount].sort());
    // A chat the caller is not in is refused by the caller's own object.
    expect(await subscribe(socket, [{ userId: mallory.user.userId, chatId: theirs }])).toMatchObject({ ok: true, result: { refused: [mallory.user.userId] } });

    for (const [userId, chatId] of [[mallory.user.userId, ours], [mallory.user.userId, theirs], [unknown, ours], [noAccount, ours], [alice.user.userId, ours]] as const) {
      await expectError(await restPresence(alice, userId, chatId), 404, "not_found");
    }
    await expectError(await api(`/api/users/${mallory.user.userId}/presence`, { token: alice.credentials }), 400, "validation_failed");
    await expectError(await api(`/api/users/${mallory.user.userId}/presence?chatId=nope`, { token: alice.credentials }), 400, "validation_failed");
    await expectError(await api(`/api/users/${mallory.user.userId}/presence?chatId=${ours}&x=1`, { token: alice.credentials }), 400, "validation_failed");

    // Nothing stored on mallory's side for the refusals, and nothing at all for an id with no account.
    expect(await presenceStorage(mallory.user.userId)).toMatchObject({ keys: [] });
    const { count } = await runInDurableObject(userObject(noAccount), (_instance, state) => ({
      count: [...state.storage.kv.list()].length + state.storage.sql.exec("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' AND name NOT LIKE '__miniflare%'").toArray().length,
    }));
    expect(count).toBe(0);
  });

  it("refuses a user who left the chat named, and one who blocked the caller", async () => {
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    const group = await createGroup(alice, [bob, carol]);
    const direct = await createDirect(alice, carol);
    const { socket } = await resumeStream(alice.credentials);
    expect(await subscribe(socket, [{ userId: bob.user.userId, chatId: group }])).toMatchObject({ ok: true, result: { refused: [] } });

    await apiClient(bob).leaveChat(group);
    await expect.poll(async () => (await restPresence(alice, bob.user.userId, group)).status).toBe(404);
    expect(await subscribe(socket, [{ userId: bob.user.userId, chatId: group }])).toMatchObject({ ok: true, result: { presence: [], refused: [bob.user.userId] } });

    expect((await api(`/api/blocks/${alice.user.userId}`, { method: "PUT", token: carol.credentials })).status).toBe(204);
    expect(await subscribe(socket, [{ userId: carol.user.userId, chatId: direct }])).toMatchObject({ ok: true, result: { refused: [carol.user.userId] } });
    await expectError(await restPresence(alice, carol.user.userId, direct), 404, "not_found");
  });

  it("stops pushing to a watcher the watched user blocks", async () => {
    const [alice, carol, dave] = await Promise.all([login(), login(), login()]);
    const group = await createGroup(carol, [alice, dave]);
    const { socket: aliceWatch } = await resumeStream(alice.credentials);
    const { socket: daveWatch } = await resumeStream(dave.credentials);
    for (const socket of [aliceWatch, daveWatch]) {
      expect(await subscribe(socket, [{ userId: carol.user.userId, chatId: group }])).toMatchObject({ ok: true, result: { refused: [] } });
    }
    expect((await api(`/api/blocks/${alice.user.userId}`, { method: "PUT", token: carol.credentials })).status).toBe(204);

    // Two rounds: dave told of the second means the first reached every watcher it was for.
    const { socket: carolStream } = await resumeStream(carol.credentials);
    await presenceFrame(daveWatch, carol.user.userId, (p) => p.online, "carol online, for dave");
    carolStream.ws.close(1000);
    await presenceFrame(daveWatch, carol.user.userId, (p) => !p.online, "carol offline, for dave");
    await roundTrip(aliceWatch);
    expect(presenceOf(aliceWatch, carol.user.userId)).toEqual([]);
    expect((await presenceStorage(carol.user.userId)).keys).not.toContain(`presence:lease:${alice.user.userId}`);
  });

  it("stops pushing to a watcher who left the chat named", async () => {
    const [alice, bob, dave] = await Promise.all([login(), login(), login()]);
    const group = await createGroup(bob, [alice, dave]);
    const { socket: aliceWatch } = await resumeStream(alice.credentials);
    const { socket: daveWatch } = await resumeStream(dave.credentials);
    for (const socket of [aliceWatch, daveWatch]) {
      expect(await subscribe(socket, [{ userId: bob.user.userId, chatId: group }])).toMatchObject({ ok: true, result: { refused: [] } });
    }
    await apiClient(alice).leaveChat(group);
    await expect.poll(async () => (await restPresence(alice, bob.user.userId, group)).status).toBe(404);

    const { socket: bobStream } = await resumeStream(bob.credentials);
    await presenceFrame(daveWatch, bob.user.userId, (p) => p.online, "bob online, for dave");
    bobStream.ws.close(1000);
    await presenceFrame(daveWatch, bob.user.userId, (p) => !p.online, "bob offline, for dave");
    await roundTrip(aliceWatch);
    expect(presenceOf(aliceWatch, bob.user.userId)).toEqual([]);
  });

  it("limits presence reads over REST per account, apart from lookups", async () => {
    await awayFromRateWindowEdge();
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    let limited: Response | null = null;
    let allowed = 0;
    for (let i = 0; i < 130 && !limited; i++) {
      const response = await restPresence(alice, bob.user.userId, chatId);
      if (response.status === 429) limited = response;
      else {
        expect(response.status).toBe(200);
        allowed++;
      }
    }
    expect(allowed).toBe(120);
    await expectError(limited!, 429, "rate_limited");
    expect(Number(limited!.headers.get("retry-after"))).toBeGreaterThan(0);
    // Lookups count apart, and so does another account.
    expect((await api(`/api/users/${bob.user.userId}`, { token: alice.credentials })).status).toBe(200);
    expect((await restPresence(bob, alice.user.userId, chatId)).status).toBe(200);
  });

  it("refuses a list over 64 entries, and too many subscriptions in a row", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const { socket } = await resumeStream(alice.credentials);
    const tooMany = Array.from({ length: Limits.maxPresenceWatches + 1 }, () => ({ userId: bob.user.userId, chatId }));
    expect(await subscribe(socket, tooMany)).toMatchObject({ ok: false, error: { code: "validation_failed" } });
    const replies = [];
    for (let i = 0; i < Limits.presenceSubscribeBurst + 1; i++) replies.push(await subscribe(socket, [{ userId: bob.user.userId, chatId }]));
    expect(replies.slice(0, Limits.presenceSubscribeBurst).every((reply) => reply.ok)).toBe(true);
    expect(replies.at(-1)).toMatchObject({ ok: false, error: { code: "rate_limited", retryable: true } });
  });
});

describe("presence costs nothing unless someone watches", () => {
  it("sets no alarm for a user nobody watches, whatever their streams do", async () => {
    const bob = await login();
    const { socket } = await resumeStream(bob.credentials);
    socket.send("ping");
    expect(await setAppState(socket, "background")).toMatchObject({ ok: true });
    socket.ws.close(1000);
    await socket.closeEvent();
    await expect.poll(async () => (await presenceStorage(bob.user.userId)).keys).toEqual(["presence:last-seen"]);
    expect((await presenceStorage(bob.user.userId)).alarm).toBeNull();
  });

  it("sweeps a watched user only while online: none after the sweep that found them offline", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const { socket: watcher } = await resumeStream(alice.credentials);
    // Watched while offline (never online): nothing could change unseen, so no alarm.
    expect(await subscribe(watcher, [{ userId: bob.user.userId, chatId }])).toMatchObject({ ok: true, result: { presence: [{ online: false }] } });
    expect(await presenceStorage(bob.user.userId)).toMatchObject({ keys: expect.arrayContaining([`presence:lease:${alice.user.userId}`]), alarm: null });

    // Online: the sweep watches for the stream going silent.
    const { socket: bobStream } = await resumeStream(bob.credentials);
    const stop = keepAlive(bobStream);
    await presenceFrame(watcher, bob.user.userId, (p) => p.online, "bob online");
    expect((await presenceStorage(bob.user.userId)).alarm).not.toBeNull();
    stop();
    bobStream.ws.close(1000);
    await presenceFrame(watcher, bob.user.userId, (p) => !p.online, "bob offline");
    // The sweep runs (its deadline is still ahead), finds bob offline, and sets nothing more.
    await runDurableObjectAlarm(userObject(bob.user.userId));
    const after = await presenceStorage(bob.user.userId);
    expect(after.keys).toContain(`presence:lease:${alice.user.userId}`);
    expect(after.alarm).toBeNull();
  });

  it("stops pushing and sweeping once the last lease has ended", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const { socket: watcher } = await resumeStream(alice.credentials);
    const { socket: bobStream } = await resumeStream(bob.credentials);
    const stop = keepAlive(bobStream);
    expect(await subscribe(watcher, [{ userId: bob.user.userId, chatId }])).toMatchObject({ ok: true, result: { presence: [{ online: true }] } });
    const leased = await presenceStorage(bob.user.userId);
    expect(leased.keys).toContain(`presence:lease:${alice.user.userId}`);
    expect(leased.alarm).not.toBeNull();

    // The lease runs out (the device did not renew it): moved to the past in storage.
    await runInDurableObject(userObject(bob.user.userId), (_instance, state) => {
      const key = `presence:lease:${alice.user.userId}`;
      state.storage.kv.put(key, { ...state.storage.kv.get<{ chatId: string; expiresAt: number }>(key)!, expiresAt: 1 });
    });
    await evictDurableObject(userObject(bob.user.userId));
    await runDurableObjectAlarm(userObject(bob.user.userId));
    expect(await presenceStorage(bob.user.userId)).toEqual({ keys: [], alarm: null });

    // A change now is pushed to no one, and sets no alarm.
    expect(await setAppState(bobStream, "background")).toMatchObject({ ok: true });
    expect(await (await restPresence(alice, bob.user.userId, chatId)).json()).toMatchObject({ online: false });
    await roundTrip(watcher);
    expect(presenceOf(watcher, bob.user.userId)).toEqual([]);
    expect(await presenceStorage(bob.user.userId)).toEqual({ keys: ["presence:last-seen"], alarm: null });
    stop();
    bobStream.ws.close(1000);
  });
});
