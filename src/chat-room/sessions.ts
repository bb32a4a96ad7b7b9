import { z } from "zod";
import { describeError, log } from "../lib/log.ts";
import { CloseCode } from "../protocol/close-codes.ts";
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
});
export type SessionState = z.infer<typeof SessionState>;

export const socketTags = (userId: string, deviceId: string) => [`u:${userId}`, `d:${deviceId}`];
export const deviceTag = (deviceId: string) => `d:${deviceId}`;

/**
 * The open sockets of one chat with their state, kept in memory and rebuilt from
 * the attachments when the object wakes from hibernation.
 */
export class Sessions {
  readonly #ctx: DurableObjectState;
  readonly #chatId: () => string;
  readonly #states = new Map<WebSocket, SessionState>();

  constructor(ctx: DurableObjectState, chatId: () => string) {
    this.#ctx = ctx;
    this.#chatId = chatId;
    for (const ws of ctx.getWebSockets()) {
      const state = SessionState.safeParse(ws.deserializeAttachment());
      if (state.success) this.#states.set(ws, state.data);
      else closeQuietly(ws, CloseCode.tryAgain, "lost session state");
    }
  }

  accept(ws: WebSocket, state: SessionState): void {
    this.#ctx.acceptWebSocket(ws, socketTags(state.userId, state.deviceId));
    this.save(ws, state);
  }

  get(ws: WebSocket): SessionState | undefined {
    return this.#states.get(ws);
  }

  save(ws: WebSocket, state: SessionState): void {
    ws.serializeAttachment(state);
    this.#states.set(ws, state);
  }

  forget(ws: WebSocket): void {
    this.#states.delete(ws);
  }

  /** Pushes newly stored events to every live socket; catching-up sockets get them in a page. */
  broadcast(events: ChatEvent[]): void {
    if (events.length === 0) return;
    const frame: EventsFrame = { type: "events", chatId: this.#chatId(), events, more: false };
    const text = JSON.stringify(frame); // serialized once for every socket
    for (const [ws, state] of this.#states) {
      if (state.live) sendText(ws, text);
    }
  }

  /** Closes every socket of one device (revoked) or one user (removed). */
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
