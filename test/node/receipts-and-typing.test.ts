import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  DELIVERY_REPORT_INTERVAL_MS,
  DELIVERY_REPORTS_PER_SECOND,
  DeliveryReports,
  Limits,
  ReceiptBook,
  TypingIndicators,
  TypingReporter,
  type ChatEvent,
  type MessageEvent,
} from "../../src/client/index.ts";

const CHAT = "g_CCCCCCCCCCCCCCCCCCCCCC";
const ME = "u_AAAAAAAAAAAAAAAAAAAAAA";
const PEER = "u_BBBBBBBBBBBBBBBBBBBBBB";

const message = (seq: number, senderId = PEER): MessageEvent => ({
  type: "message",
  seq,
  createdAt: seq,
  messageId: `m${seq}`,
  senderId,
  senderDeviceId: "dv_BBBBBBBBBBBBBBBBBBBBBB",
  clientId: `c${seq}`,
  body: `message ${seq}`,
});

beforeEach(() => void vi.useFakeTimers());
afterEach(() => void vi.useRealTimers());

describe("delivery reports", () => {
  it("report others' messages at once, then at most once per interval per chat, with the latest seq", async () => {
    const reports: [string, number][] = [];
    const reporter = new DeliveryReports(async (chatId, seq) => void reports.push([chatId, seq]));
    reporter.received(CHAT, [message(2)], ME);
    expect(reports).toEqual([[CHAT, 2]]);
    for (let seq = 3; seq <= 40; seq++) reporter.received(CHAT, [message(seq)], ME);
    expect(reports).toEqual([[CHAT, 2]]);
    await vi.advanceTimersByTimeAsync(DELIVERY_REPORT_INTERVAL_MS);
    expect(reports).toEqual([[CHAT, 2], [CHAT, 40]]);
    // Another chat has its own interval (the pace across chats lets it go a moment later).
    reporter.received("g_DDDDDDDDDDDDDDDDDDDDDD", [message(7)], ME);
    await vi.advanceTimersByTimeAsync(1000 / DELIVERY_REPORTS_PER_SECOND);
    expect(reports).toEqual([[CHAT, 2], [CHAT, 40], ["g_DDDDDDDDDDDDDDDDDDDDDD", 7]]);
  });

  it("send nothing for one's own messages, other events, or what was reported already", async () => {
    const reports: number[] = [];
    const reporter = new DeliveryReports(async (_chatId, seq) => void reports.push(seq));
    const added: ChatEvent = { type: "member.added", seq: 3, createdAt: 3, actorId: PEER, members: [{ userId: ME, role: "member" }] };
    reporter.received(CHAT, [message(2, ME), added], ME);
    reporter.received(CHAT, [message(4)], ME);
    reporter.received(CHAT, [message(4)], ME);
    await vi.advanceTimersByTimeAsync(1000);
    expect(reports).toEqual([4]);
  });

  it("send a failed report again until it is acknowledged, though nothing new arrives", async () => {
    const reports: number[] = [];
    let failures = 2;
    const reporter = new DeliveryReports(async (_chatId, seq) => {
      reports.push(seq);
      if (failures-- > 0) throw new Error("offline");
    });
    reporter.received(CHAT, [message(2)], ME);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(reports).toEqual([2, 2, 2]);
  });

  it("wait as long as the server says when it answers rate_limited, and stop on a refusal for good", async () => {
    const reports: [string, number, number][] = [];
    const start = Date.now();
    const reporter = new DeliveryReports(async (chatId, seq) => {
      reports.push([chatId, seq, Date.now() - start]);
      if (chatId === CHAT && reports.length === 1) throw { error: { code: "rate_limited", message: "wait", retryable: true, retryAfterMs: 5_000 } };
      if (chatId !== CHAT) throw { body: { code: "not_a_member", message: "left", retryable: false } };
    });
    reporter.received(CHAT, [message(2)], ME);
    reporter.received("g_DDDDDDDDDDDDDDDDDDDDDD", [message(3)], ME);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(reports.map(([chatId, seq]) => [chatId, seq])).toEqual([[CHAT, 2], ["g_DDDDDDDDDDDDDDDDDDDDDD", 3], [CHAT, 2]]);
    expect(reports[2]![2]).toBeGreaterThanOrEqual(5_000);
  });

  it("pace reports across chats, so a catch-up of many chats does not spend the connection's frame budget at once", async () => {
    const reports: number[] = [];
    const reporter = new DeliveryReports(async () => void reports.push(Date.now()));
    for (let index = 0; index < 100; index++) reporter.received(`g_${String(index).padStart(22, "C")}`, [message(2)], ME);
    expect(reports).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(reports.length).toBeLessThanOrEqual(DELIVERY_REPORTS_PER_SECOND + 1);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(reports).toHaveLength(100);
  });
});

describe("the receipt book", () => {
  it("merges watermarks by max and answers each message's status", () => {
    const book = new ReceiptBook();
    expect(book.statusOf(CHAT, 5)).toBe("sent");
    expect(book.frame({ type: "receipts", chatId: CHAT, deliveredUpTo: 6, seenUpTo: 4, at: 100 })).toBe(true);
    expect([4, 5, 6, 7].map((seq) => book.statusOf(CHAT, seq))).toEqual(["seen", "delivered", "delivered", "sent"]);
    // An older frame (out of order) changes nothing; its time does not move `since` back.
    expect(book.frame({ type: "receipts", chatId: CHAT, deliveredUpTo: 5, seenUpTo: 3, at: 90 })).toBe(false);
    expect(book.get(CHAT)).toEqual({ deliveredUpTo: 6, seenUpTo: 4 });
    expect(book.since).toBe(100);
  });
});

describe("typing indicators", () => {
  it("show a member until the notice expires, a pause, or a message of theirs", async () => {
    const changes: string[][] = [];
    const typing = new TypingIndicators((_chatId, userIds) => changes.push(userIds));
    typing.notice({ type: "typing", chatId: CHAT, userId: PEER, state: "typing", expiresInMs: Limits.typingExpiresMs });
    expect(typing.typing(CHAT)).toEqual([PEER]);
    await vi.advanceTimersByTimeAsync(Limits.typingExpiresMs - 1);
    // Renewed before it expires: still shown, no change reported.
    typing.notice({ type: "typing", chatId: CHAT, userId: PEER, state: "typing", expiresInMs: Limits.typingExpiresMs });
    await vi.advanceTimersByTimeAsync(Limits.typingExpiresMs - 1);
    expect(typing.typing(CHAT)).toEqual([PEER]);
    await vi.advanceTimersByTimeAsync(1);
    expect(typing.typing(CHAT)).toEqual([]);
    expect(changes).toEqual([[PEER], []]);

    typing.notice({ type: "typing", chatId: CHAT, userId: PEER, state: "typing", expiresInMs: Limits.typingExpiresMs });
    typing.received(CHAT, [message(9)]);
    expect(typing.typing(CHAT)).toEqual([]);
    typing.notice({ type: "typing", chatId: CHAT, userId: PEER, state: "typing", expiresInMs: Limits.typingExpiresMs });
    typing.notice({ type: "typing", chatId: CHAT, userId: PEER, state: "paused", expiresInMs: Limits.typingExpiresMs });
    expect(typing.typing(CHAT)).toEqual([]);
  });

  it("send the user's typing at most once per interval while keys come, and paused after a pause", async () => {
    const sent: string[] = [];
    const reporter = new TypingReporter(async (_chatId, state) => void sent.push(state), 3000);
    reporter.typing(CHAT);
    for (let step = 0; step < 10; step++) {
      await vi.advanceTimersByTimeAsync(300);
      reporter.typing(CHAT);
    }
    // 3 s of keystrokes: `typing` at 0 and again once the interval passed.
    expect(sent).toEqual(["typing", "typing"]);
    await vi.advanceTimersByTimeAsync(3000);
    expect(sent).toEqual(["typing", "typing", "paused"]);
    reporter.typing(CHAT);
    reporter.stop(CHAT);
    expect(sent.slice(3)).toEqual(["typing", "paused"]);
  });
});
