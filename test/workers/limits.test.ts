import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { issueAccessToken } from "../../src/auth/access-token.ts";
import { configFrom } from "../../src/lib/config.ts";
import { ChatList, HistoryPage, Limits, type ServerFrame } from "../../src/protocol/index.ts";
import { api, connect, createDirect, createGroup, expectError, history, login, openSocket, restSend, socketSend, type Session, type TestSocket, awayFromRateWindowEdge } from "./helpers.ts";

/** 60 KiB of text: about 4 such messages fill a page's byte cap. */
const BIG = "x".repeat(60 * 1024);

async function chatWithBigMessages(count: number): Promise<{ alice: Session; bob: Session; chatId: string }> {
  const [alice, bob] = await Promise.all([login(), login()]);
  const chatId = await createDirect(alice, bob);
  for (let i = 0; i < count; i++) expect((await restSend(alice, chatId, `big-${i}`, `${i}:${BIG}`)).status).toBe(201);
  return { alice, bob, chatId };
}

const eventsFrames = (socket: TestSocket) => socket.raw.filter((text) => text.startsWith('{"type":"events"'));

describe("pages are bounded by bytes as well as by count", () => {
  it("a resuming socket's catch-up pages each hold at most 256 KiB, and together every event once", async () => {
    const { bob, chatId } = await chatWithBigMessages(20);
    const socket = await connect(chatId, bob.credentials, 0);
    let syncs = 0;
    while (!socket.frames.some((f) => f.type === "events" && !f.more)) {
      await socket.until(() => eventsFrames(socket).length > syncs, "a page");
      if (socket.frames.some((f) => f.type === "events" && !f.more)) break;
      socket.send({ type: "sync", id: `s${++syncs}` });
      await socket.reply(`s${syncs}`);
    }
    for (const text of eventsFrames(socket)) expect(new TextEncoder().encode(text).length).toBeLessThanOrEqual(Limits.maxPageBytes + 200);
    expect(eventsFrames(socket).length).toBeGreaterThanOrEqual(5); // 21 events of ~60 KiB: today one frame of 1.2 MB
    expect(socket.events().map((e) => e.seq)).toEqual(Array.from({ length: 21 }, (_, i) => i + 1));
  });

  it("history pages hold at most 256 KiB whichever way they are read, and walking them misses nothing", async () => {
    const { bob, chatId } = await chatWithBigMessages(12);
    for (const direction of ["after", "before"] as const) {
      const seen: number[] = [];
      let query = direction === "after" ? "?after=0&limit=200" : "?limit=200";
      for (let pages = 0; pages < 20; pages++) {
        const response = await api(`/api/chats/${chatId}/messages${query}`, { token: bob.credentials });
        const text = await response.text();
        expect(new TextEncoder().encode(text).length).toBeLessThanOrEqual(Limits.maxPageBytes + 200);
        const page = HistoryPage.parse(JSON.parse(text));
        expect(page.events.length).toBeGreaterThan(0);
        seen.push(...page.events.map((e) => e.seq));
        if (!page.hasMore) break;
        query = direction === "after" ? `?after=${page.events.at(-1)!.seq}&limit=200` : `?before=${page.events[0]!.seq}&limit=200`;
      }
      expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: 13 }, (_, i) => i + 1));
    }
  });

  it("an event bigger than the byte cap travels alone in its page", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    // 64 KiB of control characters: each is 6 bytes of JSON, so one event is ~384 KiB.
    const escaped = "\u0001".repeat(Limits.maxBodyBytes);
    expect((await restSend(alice, chatId, "esc-1", escaped)).status).toBe(201);
    expect((await restSend(alice, chatId, "esc-2", escaped)).status).toBe(201);
    // chat.created fits with room to spare, but not with the big event after it.
    const pages = [await history(bob, chatId, "?after=0"), await history(bob, chatId, "?after=1"), await history(bob, chatId, "?after=2")];
    expect(pages.map((page) => page.events.map((e) => e.seq))).toEqual([[1], [2], [3]]);
    expect(pages.map((page) => page.hasMore)).toEqual([true, true, false]);
    expect(pages[2]!.events[0]).toMatchObject({ body: escaped });
  });

  it("pipelined syncs cannot pull more than the catch-up budget at once: the rest answer rate_limited", async () => {
    const { bob, chatId } = await chatWithBigMessages(60); // ~3.6 MB, beyond the 2 MiB burst
    const socket = await connect(chatId, bob.credentials, 0);
    for (let i = 0; i < 20; i++) socket.send({ type: "sync", id: `p${i}` });
    const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => socket.reply(`p${i}`)));
    const limited = replies.filter((r) => !r.ok);
    expect(limited.length).toBeGreaterThan(0);
    for (const reply of limited) expect(reply).toMatchObject({ ok: false, error: { code: "rate_limited", retryable: true } });
    const received = eventsFrames(socket).reduce((sum, text) => sum + text.length, 0);
    expect(received).toBeLessThanOrEqual(2 * 1024 * 1024 + 2 * Limits.maxPageBytes);
    // Pacing loses nothing: waiting as told and syncing again reaches the head.
    for (let round = 0; round < 40 && !socket.frames.some((f) => f.type === "events" && !f.more); round++) {
      const last = socket.frames.filter((f): f is Extract<ServerFrame, { type: "reply" }> => f.type === "reply").at(-1)!;
      await new Promise((resolve) => setTimeout(resolve, last.ok ? 0 : (last.error.retryAfterMs ?? 100)));
      socket.send({ type: "sync", id: `q${round}` });
      await socket.reply(`q${round}`);
    }
    const seqs = socket.events().map((e) => e.seq);
    expect(seqs).toEqual(Array.from({ length: 61 }, (_, i) => i + 1));
  }, 30_000);
});

describe("sockets per device", () => {
  it("a device's fifth socket on a chat closes its oldest with 4010; the other four stay live", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const sockets: TestSocket[] = [];
    for (let i = 0; i < 5; i++) sockets.push(await connect(chatId, bob.credentials));
    expect(await sockets[0]!.closeEvent()).toMatchObject({ code: 4010, reason: "too_many_sockets" });
    expect((await restSend(alice, chatId, "m1", "still here")).status).toBe(201);
    for (const socket of sockets.slice(1)) {
      await socket.until(() => socket.events().some((e) => e.type === "message"), "the message");
      expect(socket.closed).toBeNull();
    }
    // Another device of the same account is not affected.
    const bobLaptop = await login(bob.phone, "laptop");
    const laptop = await connect(chatId, bobLaptop.credentials);
    expect(laptop.closed).toBeNull();
    for (const socket of sockets.slice(1)) expect(socket.closed).toBeNull();
  });
});

describe("a socket lives as long as its token", () => {
  async function shortLivedToken(session: Session, secondsLeft: number): Promise<string> {
    const config = configFrom(env);
    const issuedAt = Date.now() - (config.accessTokenTtlSeconds - secondsLeft) * 1000;
    return issueAccessToken(config, session.user.userId, session.device.deviceId, issuedAt);
  }

  it("a frame after the token expired closes the socket with 4001 token_expired and is not stored", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const socket = await connect(chatId, await shortLivedToken(alice, 2));
    expect((await socketSend(socket, "before", "in time")).ok).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 2_200));
    socket.send({ type: "send", id: "late", clientId: "after", body: "too late" });
    expect(await socket.closeEvent()).toMatchObject({ code: 4001, reason: "token_expired" });
    const stored = (await history(bob, chatId)).events.filter((e) => e.type === "message");
    expect(stored.map((e) => e.type === "message" && e.body)).toEqual(["in time"]);
  });

  it("a live socket whose token expired is closed instead of being sent the next event", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const listener = await connect(chatId, await shortLivedToken(bob, 2));
    await new Promise((resolve) => setTimeout(resolve, 2_200));
    expect((await restSend(alice, chatId, "m1", "after expiry")).status).toBe(201);
    expect(await listener.closeEvent()).toMatchObject({ code: 4001, reason: "token_expired" });
    expect(listener.events().filter((e) => e.type === "message")).toEqual([]);
    // With a fresh token it resumes and gets the message.
    const resumed = await connect(chatId, bob.credentials, 1);
    await resumed.until(() => resumed.events().some((e) => e.type === "message"), "the message");
  });
});

describe("per-account request limits", () => {
  it("history reads are limited per account (120 a minute), with Retry-After; another account is not affected", async () => {
    await awayFromRateWindowEdge();
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    let limited: Response | null = null;
    for (let i = 0; i < 130 && !limited; i++) {
      const response = await api(`/api/chats/${chatId}/messages`, { token: alice.credentials });
      if (response.status === 429) limited = response;
      else expect(response.status).toBe(200);
    }
    expect(limited).not.toBeNull();
    expect(Number(limited!.headers.get("retry-after"))).toBeGreaterThan(0);
    await expectError(limited!, 429, "rate_limited");
    expect((await api(`/api/chats/${chatId}/messages`, { token: bob.credentials })).status).toBe(200);
  });

  it("chat creation is limited per account (20 a minute)", async () => {
    await awayFromRateWindowEdge();
    const [alice, bob] = await Promise.all([login(), login()]);
    const statuses: number[] = [];
    for (let i = 0; i < 25; i++) {
      statuses.push((await api("/api/chats", { token: alice.credentials, body: { kind: "group", name: `g${i}`, memberIds: [bob.user.userId] } })).status);
    }
    expect(statuses.slice(0, 20).every((s) => s === 201)).toBe(true);
    expect(statuses.slice(20)).toEqual([429, 429, 429, 429, 429]);
    // Bob's own creations are his own budget.
    expect((await api("/api/chats", { token: bob.credentials, body: { kind: "group", name: "mine", memberIds: [] } })).status).toBe(201);
  });
});

describe("GET /api/chats is paged", () => {
  it("pages newest first with nextCursor, every chat once, and refuses a bad limit or cursor", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const created: string[] = [];
    for (let i = 0; i < 7; i++) created.push(await createGroup(bob, [alice], "group", `g${i}`));
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let pages = 0; pages < 10; pages++) {
      const response = await api(`/api/chats?limit=3${cursor ? `&cursor=${cursor}` : ""}`, { token: alice.credentials });
      const page = ChatList.parse(await response.json());
      expect(page.chats.length).toBeLessThanOrEqual(3);
      seen.push(...page.chats.map((c) => c.chatId));
      cursor = page.nextCursor;
      if (!cursor) break;
    }
    expect(seen).toHaveLength(7);
    expect(new Set(seen)).toEqual(new Set(created));
    const defaultPage = ChatList.parse(await (await api("/api/chats", { token: alice.credentials })).json());
    expect(defaultPage.chats.map((c) => c.chatId)).toEqual(seen);
    expect(defaultPage.nextCursor).toBeUndefined();
    for (const bad of ["limit=0", "limit=201", "cursor=abc", "limit=x"]) {
      await expectError(await api(`/api/chats?${bad}`, { token: alice.credentials }), 400, "validation_failed");
    }
  });
});

describe("revocation asks only the chats the device had sockets on", () => {
  it("closes the device's sockets on the chats it opened, and remembers no other chat", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const laptop = await login(alice.phone, "laptop");
    const chats: string[] = [];
    for (let i = 0; i < 6; i++) chats.push(await createGroup(bob, [alice], "group", `g${i}`));
    const open = [await connect(chats[1]!, laptop.credentials), await connect(chats[4]!, laptop.credentials)];
    const user = env.USER.get(env.USER.idFromName(alice.user.userId));
    const remembered = await runInDurableObject(user, (_instance, state) => {
      const entry = state.storage.kv.get<{ chats: Record<string, number> }>(`openChatSockets:${laptop.device.deviceId}`);
      return Object.keys(entry?.chats ?? {}).sort();
    });
    expect(remembered).toEqual([chats[1], chats[4]].sort());
    expect((await api(`/api/devices/${laptop.device.deviceId}`, { method: "DELETE", token: alice.credentials })).status).toBe(204);
    for (const socket of open) expect(await socket.closeEvent()).toMatchObject({ code: 4009 });
    const { socket } = await openSocket(chats[2]!, laptop.credentials);
    expect((await socket!.closeEvent()).code).toBe(4009);
  });
});

describe("sends are limited per account across chats", () => {
  it("one account cannot store more than its account burst by spreading sends over chats", async () => {
    // Tests' configuration: 600 per sender per chat, 900 per account (refilled at 1/s).
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    const chats = [await createDirect(alice, bob), await createDirect(alice, carol)];
    const sockets = await Promise.all(chats.map((chatId) => connect(chatId, alice.credentials)));
    const pipeline = async (socket: TestSocket, prefix: string, count: number) => {
      for (let i = 0; i < count; i++) socket.send({ type: "send", id: `${prefix}${i}`, clientId: `${prefix}${i}`, body: "flood" });
      const replies = () => socket.frames.filter((f): f is Extract<ServerFrame, { type: "reply" }> => f.type === "reply" && f.id.startsWith(prefix));
      await socket.until(() => replies().length >= count, `${count} replies`, 20_000);
      return replies();
    };
    const first = await pipeline(sockets[0]!, "a", 600);
    expect(first.filter((r) => r.ok)).toHaveLength(600);
    const second = await pipeline(sockets[1]!, "b", 500);
    const stored = second.filter((r) => r.ok).length;
    expect(stored).toBeGreaterThan(0);
    expect(600 + stored).toBeLessThanOrEqual(900 + 20); // the account burst, plus what refilled meanwhile
    const refused = second.filter((r) => !r.ok);
    expect(refused.length).toBeGreaterThan(0);
    for (const reply of refused) expect(reply).toMatchObject({ ok: false, error: { code: "rate_limited", retryable: true } });
    // A retry of a stored message is still answered with its ack.
    const retry = await socketSend(sockets[0]!, "a0", "flood");
    expect(retry).toMatchObject({ ok: true, result: { duplicate: true } });
    // Another account is not affected.
    expect((await restSend(bob, chats[0]!, "bob-1", "hi")).status).toBe(201);
  }, 30_000);
});
