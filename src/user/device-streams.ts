import { z } from "zod";
import { AppError } from "../lib/app-error.ts";
import { failureOf } from "../lib/failure.ts";
import { log } from "../lib/log.ts";
import type { Outcome } from "../lib/result.ts";
import { TokenBuckets } from "../lib/token-buckets.ts";
import {
  AppState,
  CloseCode,
  Limits,
  PresenceWatch,
  type ChatSummary,
  type HiddenFrame,
  type HiddenPage,
  type ReceiptsFrame,
  type TypingNotice,
  type ResumeResult,
  type StreamSyncResult,
} from "../protocol/index.ts";
import type { StreamPage, StreamPush } from "../chat-room/stream-pushes.ts";
import { SocketAttachments, SocketSession } from "../sockets/attachments.ts";
import type { StreamEntry } from "./chat-index.ts";
import { closeQuietly, eventsFrameText, sendErrorFrame, sendFrame, sendText } from "../sockets/socket-io.ts";

/**
 * What a device stream carries across hibernation. `new`: waiting for `resume`;
 * `catching_up`: pages are being sent; `live`: every chat's events are pushed.
 * Presence (src/user/presence.ts): whether the app is in the foreground, and the people
 * this stream watches until `watchUntil` (its subscription's lease).
 */
export const StreamSession = SocketSession.extend({
  phase: z.enum(["new", "catching_up", "live"]),
  appState: AppState.default("foreground"),
  watching: z.array(PresenceWatch).default([]),
  watchUntil: z.number().int().default(0),
});
export type StreamSession = z.infer<typeof StreamSession>;

/** What the streams need from their account: its chat list and its chats' pages. */
export type StreamChats = {
  /** Every chat of the account, most recent activity first. */
  entries(): StreamEntry[];
  /** One chat's list entry (null if the account has no such chat). */
  summary(chatId: string): ChatSummary | null;
  /** Subscribes the account to the chat's pushes and reads its first page after `after` (null: none, from the head). */
  open(chatId: string, after: number | null): Promise<Outcome<StreamPage>>;
  page(chatId: string, after: number): Promise<Outcome<StreamPage>>;
  /** The chats whose receipts (the account's own messages' status) moved after `since`. */
  receiptsSince(since: number): ReceiptsFrame[];
  /** Up to `limit` of the messages the account hid after `after` (hiddenNo). */
  hiddenAfter(after: number, limit: number): HiddenPage;
  /**
   * How long a chat has been without events before the next one reaches the account's
   * list at once (past the longest fan-out interval): such a chat need not be asked at
   * a resume (see `resume`).
   */
  quietAfterMs: number;
};

/** The second cursors of a `resume` (see ResumeFrame): what the device heard last outside the chats' event orders. */
export type ResumeSince = { receipts: number | undefined; hidden: number | undefined };

/** Bytes of events a catch-up batch holds before it waits for the client's `sync`. */
const BATCH_BYTES = Limits.maxPageBytes;
/** Chats asked for their first page at once when a device resumes. */
const OPENS_AT_ONCE = 16;
/** Catch-up pacing per device, as on chat sockets: 1 MiB/s in bursts of 2 MiB; a batch over it waits. */
const CATCH_UP_BYTES_PER_SECOND = 1024 * 1024;
const CATCH_UP_BYTES_BURST = 2 * 1024 * 1024;
/** Resumes per device: each asks every small chat of the account, so a reconnect loop is slowed down. */
const RESUMES_PER_MINUTE = 12;
const RESUME_BURST = 4;

/** A chat a device is behind on: its pages go out before any live event of it. */
type Behind = { cursor: number; page: StreamPage | null; subscribe: boolean };

/**
 * Per socket, in memory: the chats it is still behind on (in the order they are sent),
 * and per chat the last seq sent to it, so that a push overlapping what the socket
 * already has (its last page, or a push sent again) is cut.
 */
type SocketProgress = {
  behind: Map<string, Behind>;
  sent: Map<string, number>;
  sending: boolean;
  /** True while `resume` asks the chats for their first pages: nothing is sent until its reply. */
  planning: boolean;
  /** A batch is waiting for the device's byte budget. */
  paced: boolean;
  /**
   * The resume's hidden catch-up still to send: the hiddenNo its next page continues
   * from (null: none, or all sent). Until it is sent, no live `hidden` frame goes to the
   * socket: its pages, read when sent, hold every entry made meanwhile.
   */
  hidden: number | null;
};

/**
 * The account's device streams (GET /chat): one socket per device for every chat.
 *
 * Each small chat the account is in pushes its events here (see StreamPushes); a push
 * goes to every resumed socket except those still catching up on that chat, whose
 * pages will include it. A catch-up of a chat ends when a page reaches the chat's
 * head as read, and that head is at least the last seq pushed here: an event stored
 * after the read is then pushed (never both, never neither).
 */
export class DeviceStreams extends SocketAttachments<StreamSession> {
  /** Entries per page of a resume's hidden catch-up (tests set a smaller one). */
  static hiddenPageSize: number = Limits.maxHiddenPageSize;
  readonly #chats: StreamChats;
  /**
   * Per chat the account is subscribed to: the highest seq pushed here or read at a
   * subscription (a catch-up's pages must reach it). Deleted when the chat says it
   * pushes no more (the membership ended) or no stream is left.
   */
  readonly #heads = new Map<string, number>();
  readonly #progress = new Map<WebSocket, SocketProgress>();
  readonly #catchUpBytes = new TokenBuckets(CATCH_UP_BYTES_PER_SECOND, CATCH_UP_BYTES_BURST);
  readonly #resumes = new TokenBuckets(RESUMES_PER_MINUTE / 60, RESUME_BURST);

  constructor(ctx: DurableObjectState, chats: StreamChats) {
    super(ctx, StreamSession);
    this.#chats = chats;
    // A catch-up's progress is kept in memory only: after an eviction the device resumes.
    for (const [ws, session] of this.entries()) {
      if (session.phase === "catching_up") {
        this.forget(ws);
        closeQuietly(ws, CloseCode.tryAgain, "resume again");
      }
    }
  }

  override forget(ws: WebSocket): void {
    super.forget(ws);
    this.#progress.delete(ws);
  }

  #progressOf(ws: WebSocket): SocketProgress {
    let progress = this.#progress.get(ws);
    if (!progress) {
      progress = { behind: new Map(), sent: new Map(), sending: false, planning: false, paced: false, hidden: null };
      this.#progress.set(ws, progress);
    }
    return progress;
  }

  /**
   * The device's first frame: it is behind on the chats whose head is past its cursor,
   * and new to the chats it did not list (announced with their entry, live from their
   * head). Answers once every small chat has been asked for its first page.
   */
  async resume(
    ws: WebSocket,
    session: StreamSession,
    cursors: Record<string, number>,
    since: ResumeSince = { receipts: undefined, hidden: undefined },
    now = Date.now(),
  ): Promise<{ result: ResumeResult; announced: Map<string, number> }> {
    if (session.phase !== "new") throw new AppError("validation_failed", 400, "a stream resumes once; reconnect to resume again", { retryable: false });
    const waitMs = this.#resumes.waitMs(session.deviceId, now);
    if (waitMs > 0) throw new AppError("rate_limited", 429, "resuming too often: wait, then resume", { retryAfterMs: waitMs });
    this.#resumes.take(session.deviceId, now);
    this.save(ws, { ...session, phase: "catching_up" });
    const progress = this.#progressOf(ws);
    progress.planning = true;
    // From now on live `hidden` frames are held back from this socket: its catch-up pages bring them.
    progress.hidden = since.hidden ?? null;
    const entries = this.#chats.entries();
    const listed = new Set(entries.map((chat) => chat.chatId));
    const unknownChats = Object.keys(cursors).filter((chatId) => !listed.has(chatId));
    // Announced chats, with the head they are live from (0: as the list has it).
    const announced = new Map<string, number>();
    const opens: (() => Promise<void>)[] = [];
    for (const chat of entries) {
      const { chatId } = chat;
      const cursor = Object.hasOwn(cursors, chatId) ? cursors[chatId]! : null;
      const streamed = chat.membership === "member" && chat.memberCount <= Limits.maxStreamedChatMembers;
      if (!streamed) {
        // Big chats and former ones: the entry tells the device how far to fetch.
        if (cursor === null || cursor < chat.headSeq) announced.set(chatId, 0);
        continue;
      }
      const known = this.#heads.get(chatId);
      // Subscribed, every push in: the device is live from its cursor, or from the last push.
      if (known !== undefined && (cursor === null || cursor === known)) {
        progress.sent.set(chatId, known);
        if (cursor === null) announced.set(chatId, known);
        continue;
      }
      // A quiet chat whose list entry is where the device is: nothing to ask now. Its
      // next event reaches the account's list at once (a quiet chat's fan-out does not
      // wait), and that subscribes it and catches the device up (`chatChanged`). Most of
      // an account's chats are quiet, so a resume asks only the few that are not.
      if (known === undefined && chat.lastActivityAt < now - this.#chats.quietAfterMs && (cursor === null || cursor === chat.headSeq)) {
        progress.sent.set(chatId, chat.headSeq);
        if (cursor === null) announced.set(chatId, chat.headSeq);
        continue;
      }
      // Held back from pushes from now until its first page is in.
      progress.behind.set(chatId, { cursor: cursor ?? 0, page: null, subscribe: true });
      opens.push(async () => {
        const opened = await this.#chats.open(chatId, cursor);
        if (!opened.ok) {
          if (opened.error.code === "invalid_cursor") throw AppError.fromBody({ ...opened.error, message: `${chatId}: ${opened.error.message}` }, opened.status);
          // One chat that cannot answer does not hold up the others: the device is told
          // its entry and fetches it (history), as for a chat that is not streamed.
          log.warn("a chat did not answer a stream resume", { chatId, code: opened.error.code });
          progress.behind.delete(chatId);
          announced.set(chatId, 0);
          return;
        }
        const page = opened.value;
        this.#noteHead(chatId, page);
        if (cursor !== null) {
          progress.behind.set(chatId, { cursor, page, subscribe: false });
          return;
        }
        progress.behind.delete(chatId);
        progress.sent.set(chatId, page.cursor);
        announced.set(chatId, page.headSeq);
      });
    }
    try {
      await runAtMost(OPENS_AT_ONCE, opens);
    } catch (error) {
      // The device may resume again (an invalid cursor must be fixed first).
      const current = this.get(ws);
      if (current) this.save(ws, { ...current, phase: "new" });
      this.#progress.delete(ws);
      throw error;
    }
    // A chat whose first page already reached the head needs no page at all.
    for (const [chatId, behind] of progress.behind) {
      if (behind.page && behind.page.events.length === 0 && this.#reachesHead(chatId, behind.page)) {
        progress.behind.delete(chatId);
        progress.sent.set(chatId, behind.page.cursor);
      }
    }
    return { result: { behind: progress.behind.size, announced: announced.size, unknownChats }, announced };
  }

  /**
   * After the reply to `resume`: the announcements (each entry read now, so none is
   * older than a `chat` frame sent meanwhile), then the first batch of pages.
   */
  startCatchUp(ws: WebSocket, announced: Map<string, number>, since: ResumeSince = { receipts: undefined, hidden: undefined }): void {
    for (const [chatId, liveFrom] of announced) this.#announce(ws, chatId, liveFrom);
    // Receipts that moved while the device was away (they are watermarks: the latest says it all).
    if (since.receipts !== undefined) for (const frame of this.#chats.receiptsSince(since.receipts)) sendFrame(ws, frame);
    const progress = this.#progress.get(ws);
    if (progress) progress.planning = false;
    void this.#sendBatch(ws);
  }

  /**
   * One page of the resume's hidden catch-up (the messages the account hid after the
   * device's `hiddenSince`), read now, before any event of the catch-up: a device hides
   * them before it shows them. The frame says where it continues from (`after`), so the
   * device may move its cursor over it. Returns the bytes sent, and whether more pages
   * follow (each after the device's next `sync`).
   */
  #sendHiddenPage(ws: WebSocket, progress: SocketProgress): { bytes: number; more: boolean } {
    const after = progress.hidden;
    if (after === null) return { bytes: 0, more: false };
    const page = this.#chats.hiddenAfter(after, DeviceStreams.hiddenPageSize);
    const last = page.entries.at(-1);
    if (!last) {
      progress.hidden = null;
      return { bytes: 0, more: false };
    }
    const frame: HiddenFrame = { type: "hidden", entries: page.entries, more: page.hasMore, after };
    const text = JSON.stringify(frame);
    sendText(ws, text);
    progress.hidden = page.hasMore ? last.hiddenNo : null;
    return { bytes: text.length, more: page.hasMore };
  }

  #announce(ws: WebSocket, chatId: string, liveFrom = 0): void {
    const chat = this.#chats.summary(chatId);
    if (chat) sendFrame(ws, { type: "chat", chat: { ...chat, headSeq: Math.max(chat.headSeq, liveFrom) } });
  }

  /** The client processed a batch: the next one. */
  sync(ws: WebSocket): StreamSyncResult {
    const progress = this.#progress.get(ws);
    const behind = progress ? behindOf(progress) : 0;
    if (behind === 0) return { behind: 0 };
    queueMicrotask(() => void this.#sendBatch(ws));
    return { behind };
  }

  /**
   * A chat's push (RPC from its ChatRoom): to every resumed socket not catching up on
   * that chat, without what the socket already has. False when no stream is left: the
   * chat stops pushing.
   */
  deliver(push: StreamPush, now = Date.now()): boolean {
    if (this.size === 0) {
      this.#heads.delete(push.chatId);
      return false;
    }
    if (push.final) this.#heads.delete(push.chatId);
    else this.#heads.set(push.chatId, Math.max(this.#heads.get(push.chatId) ?? 0, push.lastSeq));
    let whole: string | null = null;
    for (const [ws, session] of this.entries()) {
      if (session.phase === "new") continue;
      if (session.expiresAt <= now) {
        this.expire(ws);
        continue;
      }
      const progress = this.#progressOf(ws);
      if (progress.behind.has(push.chatId)) continue;
      const last = progress.sent.get(push.chatId);
      if (last !== undefined && push.lastSeq <= last) continue;
      progress.sent.set(push.chatId, push.lastSeq);
      if (last !== undefined && push.afterSeq < last) {
        const from = push.seqs.findIndex((seq) => seq > last);
        sendText(ws, eventsFrameText(push.chatId, push.events.slice(from), false));
        continue;
      }
      whole ??= eventsFrameText(push.chatId, push.events, false);
      sendText(ws, whole);
    }
    return true;
  }

  /**
   * A frame outside any chat's event order (receipts: watermarks; typing: ephemeral;
   * hidden: the account's own list, numbered by it) to every resumed socket.
   */
  sendToResumed(frame: ReceiptsFrame | TypingNotice | HiddenFrame): void {
    for (const [ws, session] of this.entries()) {
      if (session.phase === "new") continue;
      // A socket whose hidden catch-up is not all sent gets the entry in its pages instead.
      if (frame.type === "hidden" && (this.#progress.get(ws)?.hidden ?? null) !== null) continue;
      sendFrame(ws, frame);
    }
  }

  /**
   * A chat's list entry changed (the account fan-out, a read, a setting): every
   * resumed socket gets it. A chat the account just joined is also caught up on each
   * of them from where the account's list had it (the start of the new period), and so
   * is a chat with news that does not push here yet, from where each socket is.
   */
  chatChanged(previous: ChatSummary | null, chat: ChatSummary): void {
    const { chatId } = chat;
    const streamed = chat.membership === "member" && chat.memberCount <= Limits.maxStreamedChatMembers;
    const joined = streamed && (previous === null || previous.membership !== "member");
    // A chat left unasked at a resume (quiet then), or forgotten in an eviction, that has news.
    const unsubscribed = streamed && !this.#heads.has(chatId) && chat.headSeq > (previous?.headSeq ?? 0);
    for (const [ws, session] of this.entries()) {
      if (session.phase === "new") continue;
      sendFrame(ws, { type: "chat", chat });
      if (!joined && !unsubscribed) continue;
      const progress = this.#progressOf(ws);
      if (progress.behind.has(chatId)) continue;
      const cursor = joined ? (previous?.headSeq ?? 0) : (progress.sent.get(chatId) ?? previous?.headSeq ?? 0);
      // Caught up like at a resume (so an eviction meanwhile makes the device resume).
      if (session.phase === "live") this.save(ws, { ...session, phase: "catching_up" });
      progress.behind.set(chatId, { cursor, page: null, subscribe: true });
      void this.#sendBatch(ws);
    }
  }

  /**
   * Sends pages until the batch is full, then asks for `sync`; `synced` when nothing is
   * behind. Over the device's byte budget, the batch waits (the device cannot make the
   * account's object buffer megabytes by asking fast). A chat that fails to answer is
   * dropped from the catch-up and announced instead: the device fetches it.
   */
  async #sendBatch(ws: WebSocket, now = Date.now()): Promise<void> {
    const progress = this.#progress.get(ws);
    const session = this.get(ws);
    if (!progress || !session || progress.sending || progress.planning || progress.paced) return;
    const waitMs = this.#catchUpBytes.waitMs(session.deviceId, now);
    if (waitMs > 0 && behindOf(progress) > 0) {
      progress.paced = true;
      setTimeout(() => {
        progress.paced = false;
        void this.#sendBatch(ws);
      }, waitMs);
      return;
    }
    progress.sending = true;
    try {
      // The hidden catch-up first, one page per batch.
      const hidden = this.#sendHiddenPage(ws, progress);
      let bytes = hidden.bytes;
      while (bytes < BATCH_BYTES && !hidden.more) {
        const next = progress.behind.entries().next();
        if (next.done) break;
        const [chatId, behind] = next.value;
        let page = behind.page;
        if (!page) {
          const read = await (behind.subscribe ? this.#chats.open(chatId, behind.cursor) : this.#chats.page(chatId, behind.cursor));
          if (!this.get(ws)) return;
          if (!read.ok) {
            log.warn("a chat's catch-up page failed; the device is told to fetch it", { chatId, code: read.error.code });
            progress.behind.delete(chatId);
            this.#announce(ws, chatId);
            continue;
          }
          page = read.value;
          if (behind.subscribe) this.#noteHead(chatId, page);
        }
        const done = this.#reachesHead(chatId, page);
        if (page.events.length > 0) sendText(ws, eventsFrameText(chatId, page.events, !done));
        for (const event of page.events) bytes += event.length;
        progress.sent.set(chatId, page.cursor);
        if (done) progress.behind.delete(chatId);
        else progress.behind.set(chatId, { cursor: page.cursor, page: null, subscribe: false });
      }
      this.#catchUpBytes.take(session.deviceId, Date.now(), bytes);
      const current = this.get(ws);
      if (!current) return;
      const behind = behindOf(progress);
      if (behind > 0) sendFrame(ws, { type: "catching_up", behind });
      else if (current.phase === "catching_up") {
        this.save(ws, { ...current, phase: "live" });
        sendFrame(ws, { type: "synced" });
      }
    } catch (error) {
      // Not a chat's answer (those are handled above): the device resumes from its cursors.
      const failure = failureOf(error, { object: "User", during: "stream catch-up" });
      sendErrorFrame(ws, failure.error);
      this.forget(ws);
      closeQuietly(ws, CloseCode.tryAgain, "catch_up_failed");
    } finally {
      progress.sending = false;
    }
  }

  /** Whether `page` finished the chat: nothing more to read, and it reached every seq pushed here. */
  #reachesHead(chatId: string, page: StreamPage): boolean {
    return !page.hasMore && page.cursor >= (this.#heads.get(chatId) ?? 0);
  }
  #noteHead(chatId: string, page: StreamPage): void {
    if (page.streamed) this.#heads.set(chatId, Math.max(this.#heads.get(chatId) ?? 0, page.headSeq));
  }
}

/** What a socket is still behind on: its chats, and its hidden catch-up (counted as one). */
function behindOf(progress: SocketProgress): number {
  return progress.behind.size + (progress.hidden === null ? 0 : 1);
}

/** Runs `tasks` with at most `limit` at once; rejects with the first failure once all have settled. */
async function runAtMost(limit: number, tasks: (() => Promise<void>)[]): Promise<void> {
  let next = 0;
  const failures: unknown[] = [];
  const worker = async () => {
    while (next < tasks.length) {
      const task = tasks[next++]!;
      await task().catch((error: unknown) => void failures.push(error));
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  if (failures.length > 0) throw failures[0];
}
