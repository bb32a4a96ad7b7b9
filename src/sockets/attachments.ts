import { z } from "zod";
import { CloseCode } from "../protocol/close-codes.ts";
import { describeError, log } from "../lib/log.ts";
import { answerClose, closeQuietly } from "./socket-io.ts";

/** What every socket's attachment holds, whichever object keeps it. */
export const SocketSession = z.object({
  userId: z.string(),
  deviceId: z.string(),
  /** When the socket opened (ms): the oldest of a device's sockets is closed first. */
  openedAt: z.number().int().default(0),
  /** When the access token the socket opened with expires (ms): the socket closes then. */
  expiresAt: z.number().int().default(Number.MAX_SAFE_INTEGER),
});
export type SocketSession = z.infer<typeof SocketSession>;

export const userTag = (userId: string) => `u:${userId}`;
export const deviceTag = (deviceId: string) => `d:${deviceId}`;
export const socketTags = (userId: string, deviceId: string) => [userTag(userId), deviceTag(deviceId)];

/**
 * An object's hibernatable sockets with their state: kept in memory, written to each
 * socket's attachment (serializeAttachment) and rebuilt from the attachments when
 * the object wakes. A socket whose attachment does not parse is closed with `tryAgain`.
 */
export class SocketAttachments<S extends SocketSession> {
  protected readonly ctx: DurableObjectState;
  readonly #states = new Map<WebSocket, S>();

  constructor(ctx: DurableObjectState, schema: z.ZodType<S, unknown>) {
    this.ctx = ctx;
    for (const ws of ctx.getWebSockets()) {
      const state = schema.safeParse(ws.deserializeAttachment());
      if (state.success) this.#states.set(ws, state.data);
      else closeQuietly(ws, CloseCode.tryAgain, "lost session state");
    }
  }

  /**
   * Keeps a new socket. A device has at most `maxPerDevice` sockets here: beyond that
   * its oldest are closed with `tooManySockets` (a reconnecting client whose old socket
   * is half-dead gets in; the old one goes).
   */
  accept(ws: WebSocket, state: S, maxPerDevice: number): void {
    this.ctx.acceptWebSocket(ws, socketTags(state.userId, state.deviceId));
    this.save(ws, state);
    const mine = this.ctx.getWebSockets(deviceTag(state.deviceId)).filter((socket) => this.#states.has(socket));
    if (mine.length <= maxPerDevice) return;
    mine.sort((a, b) => this.#states.get(a)!.openedAt - this.#states.get(b)!.openedAt);
    for (const oldest of mine.slice(0, mine.length - maxPerDevice)) {
      if (oldest === ws) continue;
      this.forget(oldest);
      closeQuietly(oldest, CloseCode.tooManySockets, "too_many_sockets");
    }
  }

  get(ws: WebSocket): S | undefined {
    return this.#states.get(ws);
  }

  save(ws: WebSocket, state: S): void {
    ws.serializeAttachment(state);
    this.#states.set(ws, state);
  }

  forget(ws: WebSocket): void {
    this.#states.delete(ws);
  }

  entries(): IterableIterator<[WebSocket, S]> {
    return this.#states.entries();
  }

  get size(): number {
    return this.#states.size;
  }

  /** The runtime's `webSocketClose`: the socket is forgotten and the client's close answered. */
  closed(ws: WebSocket, code: number): void {
    this.forget(ws);
    answerClose(ws, code);
  }

  /** The runtime's `webSocketError`: the socket is gone. */
  failed(ws: WebSocket, error: unknown): void {
    log.warn("socket error", describeError(error));
    this.forget(ws);
  }

  /** Closes a socket whose access token expired: the client refreshes and resumes. */
  expire(ws: WebSocket): void {
    this.forget(ws);
    closeQuietly(ws, CloseCode.unauthorized, "token_expired");
  }

  /** The sockets with `tag` (see socketTags) that this object still tracks. */
  tagged(tag: string): WebSocket[] {
    return this.ctx.getWebSockets(tag).filter((ws) => this.#states.has(ws));
  }

  /** Closes every socket with `tag` (a revoked device, a removed user); returns how many. */
  closeTagged(tag: string, code: number, reason: string): number {
    const sockets = this.ctx.getWebSockets(tag);
    for (const ws of sockets) {
      this.forget(ws);
      closeQuietly(ws, code, reason);
    }
    return sockets.length;
  }
}
