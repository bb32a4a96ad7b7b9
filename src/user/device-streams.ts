import { z } from "zod";
import { AppError } from "../lib/app-error.ts";
import { failureOf } from "../lib/failure.ts";
import { describeError, log } from "../lib/log.ts";
import { unwrap, type Outcome } from "../lib/result.ts";
import { CloseCode, Limits, type ChatSummary, type ResumeResult, type StreamSyncResult } from "../protocol/index.ts";
import type { StreamPage, StreamPush } from "../chat-room/stream-pushes.ts";
import { SocketAttachments, SocketSession } from "../sockets/attachments.ts";
import { closeQuietly, eventsFrameText, sendErrorFrame, sendFrame, sendText } from "../sockets/socket-io.ts";

/**
 * What a device stream carries across hibernation. `new`: waiting for `resume`;
 * `catching_up`: pages are being sent; `live`: every chat's events are pushed.
 */
export const StreamSession = SocketSession.extend({ phase: z.enum(["new", "catching_up", "live"]) });
export type StreamSession = z.infer<typeof StreamSession>;

/** What the streams need from their account: its chat list and its chats' pages. */
export type StreamChats = {
  /** The account's chat list, most recent activity first. */
  list(): ChatSummary[];
  /** Subscribes the account to the chat's pushes and reads its first page after `after` (null: none, from the head). */
  open(chatId: string, after: number | null): Promise<Outcome<StreamPage>>;
  page(chatId: string, after: number): Promise<Outcome<StreamPage>>;
};

/** Bytes of events a catch-up batch holds before it waits for the client's `sync`. */
const BATCH_BYTES = Limits.maxPageBytes;
/** Chats asked for their first page at once when a device resumes. */
const OPENS_AT_ONCE = 16;

/** A chat a device is behind on: its pages go out before any live event of it. */
type Behind = { cursor: number; page: StreamPage | null; subscribe: boolean };

/**
 * Per catching-up socket, in memory: the chats still behind (in the order they are
 * sent), and where each finished chat's catch-up ended, so that a push overlapping
 * the last page is cut to what the device has not had.
 */
type CatchUp = {
  behind: Map<string, Behind>;
  endedAt: Map<string, number>;
  sending: boolean;
  /** True while `resume` asks the chats for their first pages: nothing is sent until its reply. */
  planning: boolean;
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
  readonly #chats: StreamChats;
  /** Per chat: the highest seq pushed here or read at a subscription (pages must reach it). */
  readonly #heads = new Map<string, number>();
  readonly #catchUps = new Map<WebSocket, CatchUp>();

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
    this.#catchUps.delete(ws);
  }

  /**
   * The device's first frame: it is behind on the chats whose head is past its cursor,
   * and new to the chats it did not list (announced with their entry, live from their
   * head). Answers once every small chat has been asked for its first page.
   */
  async resume(ws: WebSocket, session: StreamSession, cursors: Record<string, number>): Promise<{ result: ResumeResult; announced: ChatSummary[] }> {
    if (session.phase !== "new") throw new AppError("validation_failed", 400, "a stream resumes once; reconnect to resume again", { retryable: false });
    const catchUp: CatchUp = { behind: new Map(), endedAt: new Map(), sending: false, planning: true };
    this.save(ws, { ...session, phase: "catching_up" });
    this.#catchUps.set(ws, catchUp);
    const list = this.#chats.list();
    const listed = new Set(list.map((chat) => chat.chatId));
    const unknownChats = Object.keys(cursors).filter((chatId) => !listed.has(chatId));
    const announced: ChatSummary[] = [];
    const opens: (() => Promise<void>)[] = [];
    for (const chat of list) {
      const { chatId } = chat;
      const cursor = Object.hasOwn(cursors, chatId) ? cursors[chatId]! : null;
      const streamed = chat.membership === "member" && chat.memberCount <= Limits.maxStreamedChatMembers;
      if (!streamed) {
        // Big chats and former ones: the entry tells the device how far to fetch.
        if (cursor === null || cursor < chat.headSeq) announced.push(chat);
        continue;
      }
      const known = this.#heads.get(chatId);
      if (cursor !== null && known !== undefined && known <= cursor) {
        catchUp.endedAt.set(chatId, cursor);
        continue;
      }
      // Held back from pushes from now until its first page is in.
      catchUp.behind.set(chatId, { cursor: cursor ?? 0, page: null, subscribe: true });
      opens.push(async () => {
        const page = unwrap(await this.#chats.open(chatId, cursor));
        this.#noteHead(chatId, page);
        if (cursor !== null) {
          catchUp.behind.set(chatId, { cursor, page, subscribe: false });
          return;
        }
        catchUp.behind.delete(chatId);
        catchUp.endedAt.set(chatId, page.cursor);
        announced.push({ ...chat, headSeq: page.headSeq });
      });
    }
    try {
      await runAtMost(OPENS_AT_ONCE, opens);
    } catch (error) {
      // The device may resume again (an invalid cursor must be fixed first).
      if (this.get(ws)) this.save(ws, { ...session, phase: "new" });
      this.#catchUps.delete(ws);
      throw error;
    }
    // A chat whose first page already reached the head needs no page at all.
    for (const [chatId, behind] of catchUp.behind) {
      if (behind.page && behind.page.events.length === 0 && this.#reachesHead(chatId, behind.page)) {
        catchUp.behind.delete(chatId);
        catchUp.endedAt.set(chatId, behind.page.cursor);
      }
    }
    return { result: { behind: catchUp.behind.size, announced: announced.length, unknownChats }, announced };
  }

  /** After the reply to `resume`: the announcements, then the first batch of pages. */
  startCatchUp(ws: WebSocket, announced: ChatSummary[]): void {
    for (const chat of announced) sendFrame(ws, { type: "chat", chat });
    const catchUp = this.#catchUps.get(ws);
    if (catchUp) catchUp.planning = false;
    void this.#sendBatch(ws);
  }

  /** The client processed a batch: the next one. */
  sync(ws: WebSocket): StreamSyncResult {
    const catchUp = this.#catchUps.get(ws);
    if (!catchUp || catchUp.behind.size === 0) return { behind: 0 };
    queueMicrotask(() => void this.#sendBatch(ws));
    return { behind: catchUp.behind.size };
  }

  /**
   * A chat's push (RPC from its ChatRoom): to every resumed socket not catching up on
   * that chat, cut where a socket's last page of it ended. False when no stream is
   * left: the chat stops pushing.
   */
  deliver(push: StreamPush, now = Date.now()): boolean {
    if (this.size === 0) {
      this.#heads.delete(push.chatId);
      return false;
    }
    this.#heads.set(push.chatId, Math.max(this.#heads.get(push.chatId) ?? 0, push.lastSeq));
    let whole: string | null = null;
    for (const [ws, session] of this.entries()) {
      if (session.phase === "new") continue;
      if (session.expiresAt <= now) {
        this.expire(ws);
        continue;
      }
      const catchUp = this.#catchUps.get(ws);
      if (catchUp?.behind.has(push.chatId)) continue;
      const endedAt = catchUp?.endedAt.get(push.chatId);
      if (endedAt !== undefined) {
        if (push.afterSeq < endedAt) {
          const from = push.seqs.findIndex((seq) => seq > endedAt);
          if (from >= 0) sendText(ws, eventsFrameText(push.chatId, push.events.slice(from), false));
          if (from >= 0) catchUp!.endedAt.delete(push.chatId);
          continue;
        }
        catchUp!.endedAt.delete(push.chatId);
      }
      whole ??= eventsFrameText(push.chatId, push.events, false);
      sendText(ws, whole);
    }
    return true;
  }

  /**
   * A chat's list entry changed (the account fan-out, a read, a setting): every
   * resumed socket gets it. A chat the account just joined is also caught up on each
   * of them from where the account's list had it (the start of the new period).
   */
  chatChanged(previous: ChatSummary | null, chat: ChatSummary): void {
    const joined =
      chat.membership === "member" && chat.memberCount <= Limits.maxStreamedChatMembers && (previous === null || previous.membership !== "member");
    for (const [ws, session] of this.entries()) {
      if (session.phase === "new") continue;
      sendFrame(ws, { type: "chat", chat });
      if (!joined) continue;
      let catchUp = this.#catchUps.get(ws);
      if (!catchUp) {
        catchUp = { behind: new Map(), endedAt: new Map(), sending: false, planning: false };
        this.#catchUps.set(ws, catchUp);
      }
      catchUp.behind.set(chat.chatId, { cursor: previous?.headSeq ?? 0, page: null, subscribe: true });
      void this.#sendBatch(ws);
    }
  }

  /** Sends pages until the batch is full, then asks for `sync`; `synced` when nothing is behind. */
  async #sendBatch(ws: WebSocket): Promise<void> {
    const catchUp = this.#catchUps.get(ws);
    if (!catchUp || catchUp.sending || catchUp.planning) return;
    catchUp.sending = true;
    try {
      let bytes = 0;
      while (bytes < BATCH_BYTES) {
        const next = catchUp.behind.entries().next();
        if (next.done) break;
        const [chatId, behind] = next.value;
        const page =
          behind.page ?? unwrap(await (behind.subscribe ? this.#chats.open(chatId, behind.cursor) : this.#chats.page(chatId, behind.cursor)));
        if (!this.get(ws)) return;
        if (behind.subscribe) this.#noteHead(chatId, page);
        const done = this.#reachesHead(chatId, page);
        if (page.events.length > 0) sendText(ws, eventsFrameText(chatId, page.events, !done));
        for (const event of page.events) bytes += event.length;
        if (done) {
          catchUp.behind.delete(chatId);
          catchUp.endedAt.set(chatId, page.cursor);
        } else catchUp.behind.set(chatId, { cursor: page.cursor, page: null, subscribe: false });
      }
      const session = this.get(ws);
      if (!session) return;
      if (catchUp.behind.size > 0) sendFrame(ws, { type: "catching_up", behind: catchUp.behind.size });
      else if (session.phase === "catching_up") {
        this.save(ws, { ...session, phase: "live" });
        sendFrame(ws, { type: "synced" });
      }
    } catch (error) {
      // The device resumes from its cursors (which only advanced with what it received).
      const failure = failureOf(error, { object: "User", during: "stream catch-up" });
      log.warn("stream catch-up failed", { code: failure.error.code, ...describeError(error) });
      sendErrorFrame(ws, failure.error);
      this.forget(ws);
      closeQuietly(ws, CloseCode.tryAgain, "catch_up_failed");
    } finally {
      catchUp.sending = false;
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
