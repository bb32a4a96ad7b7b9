import { describe, expect, it } from "vitest";
import type { Chat, ChatList, ErrorResponse, HistoryPage, Me, SendResult } from "../../src/protocol/index.ts";
import { api, connect, createDirect, createGroup, expectError, history, login, restSend, socketSend, uniquePhone, type Session } from "./helpers.ts";

const encoder = new TextEncoder();
const utf8 = (text: string) => Array.from(encoder.encode(text));
const messages = (page: HistoryPage) => page.events.filter((e) => e.type === "message");

/** A 400 validation_failed whose issues say what is wrong with which field. */
async function expectTextRefused(response: Response, path: string, message: RegExp): Promise<void> {
  const body = (await response.clone().json()) as ErrorResponse;
  expect(body.error.issues, JSON.stringify(body)).toEqual(expect.arrayContaining([{ path, message: expect.stringMatching(message) }]));
  await expectError(response, 400, "validation_failed");
}

/** Well-formed text that UTF-8 storage must keep exactly. */
const TRICKY_BODIES = [
  "astral 𝄞 𝕏 \u{1F600} \u{10FFFF}", // supplementary planes: surrogate pairs in UTF-16
  "combining: e\u0301 a\u0308 \u0915\u094D\u0937", // NFD-style marks stay as sent, never normalised
  "nul \u0000 in the middle",
  "\u0000",
  "emoji 👩🏽‍💻 🏳️‍🌈 ❤️ 🇫🇷",
  "noncharacters \uFFFE \uFFFF \uFDD0 and BOM \uFEFF",
  "  leading and trailing spaces, tab\t and newline\n  ",
  "\u202Ebidi override in a body is the sender's business",
];

async function twoMembers(): Promise<{ alice: Session; bob: Session; chatId: string }> {
  const [alice, bob] = await Promise.all([login(), login()]);
  return { alice, bob, chatId: await createDirect(alice, bob) };
}

describe("message bodies and client ids must be well-formed Unicode", () => {
  it("refuses a REST send with a lone surrogate in the body, and stores nothing", async () => {
    const { alice, bob, chatId } = await twoMembers();
    const before = await history(bob, chatId);
    await expectTextRefused(await restSend(alice, chatId, "c-1", "abc\uD800def"), "body", /well-formed/);
    await expectTextRefused(await restSend(alice, chatId, "c-2", "\uDC00abc"), "body", /well-formed/);
    await expectTextRefused(await restSend(alice, chatId, "c-3", "abc\uDBFF"), "body", /well-formed/);
    // the escape as JSON text too, not only as JSON.stringify writes it
    const raw = '{"clientId":"c-4","body":"abc\\ud800def"}';
    await expectTextRefused(await api(`/api/chats/${chatId}/messages`, { token: alice.credentials, body: raw }), "body", /well-formed/);
    const after = await history(bob, chatId);
    expect(after.headSeq).toBe(before.headSeq);
    expect(after.events).toEqual(before.events);
  });

  it("refuses a socket send with a lone surrogate in the body, delivers and stores nothing", async () => {
    const { alice, bob, chatId } = await twoMembers();
    const before = await history(bob, chatId);
    const aliceSocket = await connect(chatId, alice.credentials);
    const bobSocket = await connect(chatId, bob.credentials);
    const reply = await socketSend(aliceSocket, "c-1", "abc\uD800def");
    expect(reply).toMatchObject({ ok: false, error: { code: "validation_failed", issues: [{ path: "body", message: expect.stringMatching(/well-formed/) }] } });
    // the socket stays usable, and the only event anyone sees is the next good message
    expect(await socketSend(aliceSocket, "c-2", "fine")).toMatchObject({ ok: true, result: { seq: before.headSeq + 1 } });
    const events = await bobSocket.until(() => bobSocket.events().length > 0 && bobSocket.events(), "the good message");
    expect(events).toMatchObject([{ type: "message", clientId: "c-2", body: "fine" }]);
    expect(messages(await history(bob, chatId)).map((e) => e.clientId)).toEqual(["c-2"]);
  });

  it("refuses a body of 21,845 lone surrogates, which would fit 64 KiB only as counted before storage", async () => {
    const { alice, bob, chatId } = await twoMembers();
    const body = "\uDC00".repeat(21845);
    await expectTextRefused(await restSend(alice, chatId, "c-1", body), "body", /well-formed/);
    const socket = await connect(chatId, alice.credentials);
    expect(await socketSend(socket, "c-2", body)).toMatchObject({ ok: false, error: { code: "validation_failed" } });
    expect((await history(bob, chatId)).headSeq).toBe(1);
  });

  it("refuses a clientId or frame id with a lone surrogate", async () => {
    const { alice, bob, chatId } = await twoMembers();
    await expectTextRefused(await restSend(alice, chatId, "c-\uD800", "hello"), "clientId", /well-formed/);
    const socket = await connect(chatId, alice.credentials);
    expect(await socketSend(socket, "c-\uDFFF", "hello")).toMatchObject({ ok: false, error: { code: "validation_failed", issues: [{ path: "clientId" }] } });
    socket.send({ type: "send", id: "frame-\uD800", clientId: "c-3", body: "hello" });
    expect(await socket.reply("frame-\uD800")).toMatchObject({ ok: false, error: { code: "validation_failed", issues: [{ path: "id" }] } });
    expect((await history(bob, chatId)).headSeq).toBe(1);
  });

  it("keeps well-formed bodies exact through the ack, live delivery and history, and a retry is a duplicate", async () => {
    const { alice, bob, chatId } = await twoMembers();
    const aliceSocket = await connect(chatId, alice.credentials);
    const bobSocket = await connect(chatId, bob.credentials);
    const acks = new Map<string, SendResult>();
    for (const [i, body] of TRICKY_BODIES.entries()) {
      // alternate the two ways in
      if (i % 2 === 0) {
        const response = await restSend(alice, chatId, `t-${i}`, body);
        expect(response.status, body).toBe(201);
        acks.set(`t-${i}`, (await response.json()) as SendResult);
      } else {
        const reply = await socketSend(aliceSocket, `t-${i}`, body);
        expect(reply.ok, JSON.stringify(reply)).toBe(true);
        acks.set(`t-${i}`, (reply as { result: SendResult }).result);
      }
    }
    const live = await bobSocket.until(() => bobSocket.events().length >= TRICKY_BODIES.length && bobSocket.events(), "every message");
    const stored = messages(await history(bob, chatId));
    expect(stored).toHaveLength(TRICKY_BODIES.length);
    for (const [i, body] of TRICKY_BODIES.entries()) {
      const ack = acks.get(`t-${i}`)!;
      const liveEvent = live.find((e) => e.seq === ack.seq);
      const storedEvent = stored.find((e) => e.seq === ack.seq);
      expect(liveEvent).toMatchObject({ type: "message", clientId: `t-${i}`, messageId: ack.messageId });
      expect(storedEvent).toMatchObject({ type: "message", clientId: `t-${i}`, messageId: ack.messageId });
      expect(utf8((liveEvent as { body: string }).body), `live ${JSON.stringify(body)}`).toEqual(utf8(body));
      expect(utf8((storedEvent as { body: string }).body), `history ${JSON.stringify(body)}`).toEqual(utf8(body));
    }
    // a retry with the same clientId and body, either way in, gets the original ack
    for (const [i, body] of TRICKY_BODIES.entries()) {
      const original = acks.get(`t-${i}`)!;
      const rest = await restSend(alice, chatId, `t-${i}`, body);
      expect(rest.status, `REST retry of ${JSON.stringify(body)}`).toBe(200);
      expect(await rest.json()).toEqual({ ...original, duplicate: true });
      const reply = await socketSend(aliceSocket, `t-${i}`, body);
      expect(reply, `socket retry of ${JSON.stringify(body)}`).toMatchObject({ ok: true, result: { ...original, duplicate: true } });
    }
    expect(messages(await history(bob, chatId))).toHaveLength(TRICKY_BODIES.length);
  });

  it("counts the body limit in exact UTF-8 bytes", async () => {
    const { alice, chatId } = await twoMembers();
    const astral = "\u{1F600}".repeat(16 * 1024); // 4 bytes each: exactly 64 KiB
    const first = await restSend(alice, chatId, "c-1", astral);
    expect(first.status).toBe(201);
    await expectTextRefused(await restSend(alice, chatId, "c-2", `${astral}a`), "body", /65536 bytes/);
    const stored = messages(await history(alice, chatId))[0] as { body: string };
    expect(stored.body === astral).toBe(true);
  });
});

describe("names and descriptions", () => {
  const createNamed = (creator: Session, fields: Record<string, unknown>) => api("/api/chats", { token: creator.credentials, body: { kind: "group", memberIds: [], ...fields } });

  it("refuse a group name with a lone surrogate, a control character or a bidi override", async () => {
    const alice = await login();
    await expectTextRefused(await createNamed(alice, { name: "Team \uD800" }), "name", /well-formed/);
    await expectTextRefused(await createNamed(alice, { name: "\uDC00".repeat(128) }), "name", /well-formed/);
    await expectTextRefused(await createNamed(alice, { name: "Te\u0000am" }), "name", /control/);
    await expectTextRefused(await createNamed(alice, { name: "Te\u0007am" }), "name", /control/);
    await expectTextRefused(await createNamed(alice, { name: "Te\u0085am" }), "name", /control/);
    await expectTextRefused(await createNamed(alice, { name: "Team\nB" }), "name", /control/);
    await expectTextRefused(await createNamed(alice, { name: "Team \u202Egnp.exe" }), "name", /bidirectional/);
    for (const bidi of ["\u202A", "\u202B", "\u202C", "\u202D", "\u2066", "\u2067", "\u2068", "\u2069"]) {
      await expectTextRefused(await createNamed(alice, { name: `a${bidi}b` }), "name", /bidirectional/);
    }
    await expectTextRefused(await createNamed(alice, { name: "Team", description: "about \uD800" }), "description", /well-formed/);
    await expectTextRefused(await createNamed(alice, { name: "Team", description: "nul \u0000" }), "description", /control/);
    expect(((await (await api("/api/chats", { token: alice.credentials })).json()) as ChatList).chats).toEqual([]);
  });

  it("store a group name in NFC and trimmed, and keep its length", async () => {
    const alice = await login();
    const nfd = "  Cafe\u0301 Re\u0301sume\u0301 \u1100\u1161  "; // é as e + U+0301, 가 as two jamo
    const response = await createNamed(alice, { name: nfd, description: "  line one\n\tline two (e\u0301)  " });
    expect(response.status).toBe(201);
    const chat = (await response.json()) as Chat;
    expect(chat.name).toBe("Caf\u00E9 R\u00E9sum\u00E9 \uAC00");
    expect(chat.description).toBe("line one\n\tline two (\u00E9)");

    // 128 UTF-16 code units: 64 astral characters, three-byte characters and a few ASCII
    for (const name of ["\u{1F600}".repeat(64), "\u6F22".repeat(128), `${"\u{1D11E}".repeat(60)}${"x".repeat(8)}`]) {
      expect(name.length).toBe(128);
      const chatId = await createGroup(alice, [], "group", name);
      const read = (await (await api(`/api/chats/${chatId}`, { token: alice.credentials })).json()) as Chat;
      expect(read.name.length).toBe(128);
      expect(read.name === name).toBe(true);
      const created = (await history(alice, chatId)).events[0] as { name: string };
      expect(created.name === name).toBe(true);
      const listed = ((await (await api("/api/chats", { token: alice.credentials })).json()) as ChatList).chats.find((c) => c.chatId === chatId);
      expect(listed?.name === name).toBe(true);
    }
    // 129 code units is one too many, and so is a name that NFC makes longer than 128
    await expectTextRefused(await createNamed(alice, { name: "x".repeat(129) }), "name", /128/);
    await expectTextRefused(await createNamed(alice, { name: "\u0958".repeat(65) }), "name", /128/); // NFC: 2 code units each
  });

  it("refuse a display name or device name with a lone surrogate, a control or bidi character, and normalise them", async () => {
    const alice = await login();
    const patch = (body: unknown) => api("/api/me", { method: "PATCH", token: alice.credentials, body });
    await expectTextRefused(await patch({ displayName: "Alice \uD800" }), "displayName", /well-formed/);
    await expectTextRefused(await patch({ displayName: "Al\u0000ice" }), "displayName", /control/);
    await expectTextRefused(await patch({ displayName: "Alice \u2067evil" }), "displayName", /bidirectional/);
    await expectTextRefused(await patch({ about: "hi \uDFFF" }), "about", /well-formed/);
    await expectTextRefused(await patch({ about: "hi \u0000" }), "about", /control/);
    const ok = await patch({ displayName: "  Zoe\u0308  ", about: " first line\nsecond, \u202Bmixed\u202C " });
    expect(ok.status).toBe(200);
    expect((await ok.json()) as Me).toMatchObject({ displayName: "Zo\u00EB", about: "first line\nsecond, \u202Bmixed\u202C" });

    const phone = uniquePhone(); // a code of its own: alice's number is within its resend wait
    const otp = await api("/api/otp", { body: { phone } });
    expect(otp.status).toBe(201);
    // everything but deviceName as a login needs it, whatever else the OTP answer carries
    const { devCode, expiresInSeconds: _expires, resendAfterSeconds: _resend, sent: _sent, ...rest } = (await otp.json()) as Record<string, unknown>;
    for (const [deviceName, message] of [
      ["Pixel \uD800", /well-formed/],
      ["Pixel\u0000", /control/],
      ["Pixel \u202E9", /bidirectional/],
    ] as const) {
      const response = await api("/api/auth/login", { body: { ...rest, phone, code: devCode, deviceName } });
      const { error } = (await response.clone().json()) as ErrorResponse;
      expect(error.issues?.map((issue) => issue.path)).toEqual(["deviceName"]); // only deviceName is wrong
      await expectTextRefused(response, "deviceName", message);
    }
    const named = await login(undefined, "  Te\u0301le\u0301phone  ");
    expect(named.device.name).toBe("T\u00E9l\u00E9phone");
  });

  it("refuse a refresh token with a lone surrogate as validation_failed, not as a bad token", async () => {
    await expectTextRefused(await api("/api/auth/refresh", { body: { refreshToken: "abc\uD800" } }), "refreshToken", /well-formed/);
  });
});

describe("a device named from its User-Agent", () => {
  async function loginWithUserAgent(userAgent: string) {
    const phone = uniquePhone();
    const otp = (await (await api("/api/otp", { body: { phone } })).json()) as { devCode: string; attemptId: string };
    const response = await api("/api/auth/login", { body: { phone, code: otp.devCode, attemptId: otp.attemptId }, headers: { "user-agent": userAgent } });
    expect(response.status).toBe(200);
    return ((await response.json()) as { device: { name: string } }).device.name;
  }

  it("follows the name rules: a User-Agent with control characters gives a neutral name", async () => {
    expect(await loginWithUserAgent("Mozilla/5.0 (X11; Linux x86_64)")).toBe("Mozilla/5.0 (X11; Linux x86_64)");
    expect(await loginWithUserAgent("tab\there")).toBe("Unnamed device");
    expect(await loginWithUserAgent("x".repeat(100))).toBe("x".repeat(64));
  });
});
