import { z } from "zod";
import { describeError, log } from "../lib/log.ts";
import { CloseCode } from "../protocol/close-codes.ts";
import { BroadcastQueue } from "./broadcast-queue.ts";
import type { ChatEvent, ErrorBody, EventsFrame, ServerFrame } from "../protocol/index.ts";

/**
 * What each socket carries across hibernation (serializeAttachment). `cursor` is the
 * last seq sent to the socket while it catches up; once `live`, every new event is
 * pushed as it is stored, so the cursor is the chat's head and is not rewritten.
 */
const SessionState = z.object({
  userId: z.string(),
  deviceId: z.string(),
  cursor: z.number().int().nonnegative(),
  live: z.boolean(),
  /** When the socket opened (ms): the oldest of a device's sockets is closed first. */
  openedAt: z.number().int().default(0),
  /** When the access token the socket opened with expires (ms): the socket closes then. */
  expiresAt: z.number().int().default(Number.MAX_SAFE_INTEGER),
});
export type SessionState = z.infer<typeof SessionState>;

/** Sockets sent a broadcast frame per turn; bigger chats get it over several turns. */
const BROADCAST_CHUNK = 128;
/** Events at most in one broadcast frame when waiting frames are merged (as many as one commit stores). */
const MAX_EVENTS_PER_BROADCAST = 64;

export const socketTags = (userId: string, deviceId: string) => [userTag(userId), deviceTag(deviceId)];
const userTag = (userId: string) => `u:${userId}`;
export const deviceTag = (deviceId: string) => `d:${deviceId}`;

/**
 * The open sockets of one chat with their state, kept in memory and rebuilt from
 * the attachments when the object wakes from hibernation.
 */
export class Sessions {
  readonly #ctx: DurableObjectState;
  readonly #chatId: () => string;
  readonly #states = new Map<WebSocket, SessionState>();
  /** Changes whenever a socket joins the live set (see BroadcastQueue). */
  #liveVersion = 0;
  /** Large broadcasts waiting for their commit, chained in order. */
  #afterCommit: Promise<unknown> = Promise.resolve();
  #awaitingCommit = 0;
  readonly #broadcasts = new BroadcastQueue<ChatEvent>({
    serialize: (events) => JSON.stringify({ type: "events", chatId: this.#chatId(), events, more: false } satisfies EventsFrame),
    // A socket closed (or revoked) since the frame was queued is skipped; one whose
    // token expired is closed instead (it resumes from its cursor with a new token).
    send: (ws, text, now) => {
      const state = this.#states.get(ws);
      if (!state) return;
      if (state.expiresAt <= now) this.expire(ws);
      else sendText(ws, text);
    },
    chunk: BROADCAST_CHUNK,
    maxEventsPerFrame: MAX_EVENTS_PER_BROADCAST,
  });

  constructor(ctx: DurableObjectState, chatId: () => string) {
    this.#ctx = ctx;
    this.#chatId = chatId;
    for (const ws of ctx.getWebSockets()) {
      const state = SessionState.safeParse(ws.deserializeAttachment());
      if (state.success) this.#states.set(ws, state.data);
      else closeQuietly(ws, CloseCode.tryAgain, "lost session state");
    }
  }

  /**
   * Keeps a new socket. A device has at most `maxPerDevice` sockets on one chat:
   * beyond that its oldest are closed with `tooManySockets` (a reconnecting client
   * whose old socket is half-dead gets in; the old one goes).
   */
  accept(ws: WebSocket, state: SessionState, maxPerDevice: number): void {
    this.#ctx.acceptWebSocket(ws, socketTags(state.userId, state.deviceId));
    this.save(ws, state);
    const mine = this.#ctx.getWebSockets(deviceTag(state.deviceId)).filter((socket) => this.#states.has(socket));
    if (mine.length <= maxPerDevice) return;
    mine.sort((a, b) => this.#states.get(a)!.openedAt - this.#states.get(b)!.openedAt);
    for (const oldest of mine.slice(0, mine.length - maxPerDevice)) {
      if (oldest === ws) continue;
      this.#states.delete(oldest);
      closeQuietly(oldest, CloseCode.tooManySockets, "too_many_sockets");
    }
  }

  /** Closes a socket whose access token expired: the client refreshes and resumes. */
  expire(ws: WebSocket): void {
    this.#states.delete(ws);
    closeQuietly(ws, CloseCode.unauthorized, "token_expired");
  }

  get(ws: WebSocket): SessionState | undefined {
    return this.#states.get(ws);
  }

  save(ws: WebSocket, state: SessionState): void {
    if (state.live && !this.#states.get(ws)?.live) this.#liveVersion++;
    ws.serializeAttachment(state);
    this.#states.set(ws, state);
  }

  forget(ws: WebSocket): void {
    this.#states.delete(ws);
  }

  /**
   * Pushes newly stored events to every live socket; catching-up sockets get them in a
   * page. The live set is taken now, in the turn that stored the events.
   *
   * Up to one chunk of sockets, the frame is sent at once and each send waits on the
   * output gate (the commit's fsync) inside the runtime: the fastest path for small
   * chats. Beyond that, a gate wait per send is a real share of the cost (fan-out to
   * 1,000 sockets at 20 msg/s: 0.46 -> 0.38 cores, p50 17 -> 14 ms without it), so
   * the frame is queued once `durable()` (the commit) resolves. Broadcasts keep the order of these calls.
   */
  broadcast(events: ChatEvent[], durable: () => Promise<void>): void {
    if (events.length === 0) return;
    const live: WebSocket[] = [];
    for (const [ws, state] of this.#states) if (state.live) live.push(ws);
    const version = this.#liveVersion;
    if (live.length <= BROADCAST_CHUNK && this.#awaitingCommit === 0 && this.#broadcasts.idle) {
      this.#broadcasts.push(events, live, version);
      return;
    }
    this.#awaitingCommit++;
    this.#afterCommit = Promise.all([this.#afterCommit, durable()])
      .then(
        () => this.#broadcasts.push(events, live, version),
        (error: unknown) => log.error("broadcast after commit failed", describeError(error)),
      )
      .finally(() => this.#awaitingCommit--);
  }

  /**
   * Closes every socket of a user who stopped being a member. Live sockets first get
   * `lastEvents` (the event that ended their membership), so they see exactly their
   * period; sockets still catching up just close (history has the rest).
   */
  closeUser(userId: string, lastEvents: ChatEvent[], code: number, reason: string): void {
    const text = JSON.stringify({ type: "events", chatId: this.#chatId(), events: lastEvents, more: false } satisfies EventsFrame);
    for (const ws of this.#ctx.getWebSockets(userTag(userId))) {
      if (this.#states.get(ws)?.live) sendText(ws, text);
      this.#states.delete(ws);
      closeQuietly(ws, code, reason);
    }
  }

  /** Closes every socket of one device (revoked). */
  closeTagged(tag: string, code: number, reason: string): number {
    const sockets = this.#ctx.getWebSockets(tag);
    for (const ws of sockets) {
      this.#states.delete(ws);
      closeQuietly(ws, code, reason);
    }
    return sockets.length;
  }
}

export function sendFrame(ws: WebSocket, frame: ServerFrame): void {
  sendText(ws, JSON.stringify(frame));
}

/** An `events` frame from events already serialized (a catch-up page), without parsing them again. */
export function sendEventsFrame(ws: WebSocket, chatId: string, eventsJson: string[], more: boolean): void {
  sendText(ws, `{"type":"events","chatId":${JSON.stringify(chatId)},"events":[${eventsJson.join(",")}],"more":${more}}`);
}

export function sendErrorFrame(ws: WebSocket, error: ErrorBody): void {
  sendFrame(ws, { type: "error", error });
}

function sendText(ws: WebSocket, text: string): void {
  try {
    ws.send(text);
  } catch (error) {
    // The socket closed under us; its close handler cleans up.
    log.warn("send on a closed socket", describeError(error));
  }
}

export function closeQuietly(ws: WebSocket, code: number, reason: string): void {
  try {
    ws.close(code, reason);
  } catch {
    // Already closed.
  }
}
