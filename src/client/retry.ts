import ReconnectingWebSocket from "partysocket/ws";
import { CloseCode, Heartbeat } from "../protocol/index.ts";
import { ApiError } from "./api-client.ts";

/** Delay before another try after a failure whose cause may pass (network, 5xx): 0.5 s doubling to 30 s, jittered. */
export function backoffMs(failures: number): number {
  return Math.min(30_000, 500 * 2 ** Math.max(0, failures - 1)) * (0.75 + Math.random() / 2);
}

/**
 * Whether a failed refresh (or a token request that needed one) ended the session for
 * good: the server refused the refresh token (401: unknown or reused, or the device
 * was logged out), so no connection can succeed until the user logs in again. Returns
 * the close code a connection reports for it (4009 for a revoked device, else 4001)
 * and the error code as the reason; null for failures that may pass (the network, a
 * 5xx, a 429), after which the refresh is tried again.
 */
export function sessionEnded(error: unknown): { code: number; reason: string } | null {
  if (!(error instanceof ApiError) || error.status !== 401) return null;
  return { code: error.code === "device_revoked" ? CloseCode.deviceRevoked : CloseCode.unauthorized, reason: error.code };
}

/** Timers of retries a connection has planned, all cancelled when it stops. */
export class Retries {
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();

  /** Runs `retry` after `delayMs` unless `stopped()` says the connection has stopped by then (or `cancel` ran). */
  in(delayMs: number, stopped: () => boolean, retry: () => void): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (!stopped()) retry();
    }, delayMs);
    this.#timers.add(timer);
  }

  cancel(): void {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
  }
}

/** What refreshing a connection's token needs of the connection. */
export type Refreshable = {
  refresh(): Promise<unknown>;
  retries: Retries;
  stopped(): boolean;
  reconnect(): void;
  /** Ends the connection for good with this close code and reason. */
  end(code: number, reason: string): void;
};

/**
 * The token was refused or expired: refresh it, then connect again. Only a refresh the
 * server refuses for good (401) ends the connection; after any other failure (the
 * network, a 5xx, a 429) the refresh is tried again with backoff, as often as it takes.
 */
export function refreshThenReconnect(connection: Refreshable, failures = 0): void {
  connection.refresh().then(
    () => {
      if (!connection.stopped()) connection.reconnect();
    },
    (error: unknown) => {
      if (connection.stopped()) return;
      const ended = sessionEnded(error);
      if (ended) return connection.end(ended.code, ended.reason);
      const retryAfterMs = error instanceof ApiError ? error.body.retryAfterMs : undefined;
      connection.retries.in(retryAfterMs ?? backoffMs(failures + 1), connection.stopped, () => refreshThenReconnect(connection, failures + 1));
    },
  );
}

/**
 * Sends the heartbeat every `intervalMs` on an open socket, and replaces a socket that
 * has said nothing for two intervals (a half-dead connection never closes by itself).
 */
export class HeartbeatWatch {
  readonly #socket: () => ReconnectingWebSocket | null;
  readonly #intervalMs: () => number;
  #timer: ReturnType<typeof setInterval> | null = null;
  #lastHeardAt = 0;

  constructor(socket: () => ReconnectingWebSocket | null, intervalMs: () => number) {
    this.#socket = socket;
    this.#intervalMs = intervalMs;
  }

  start(): void {
    const intervalMs = this.#intervalMs();
    this.#lastHeardAt = Date.now();
    this.#timer = setInterval(() => {
      const socket = this.#socket();
      if (socket?.readyState !== ReconnectingWebSocket.OPEN) return;
      if (Date.now() - this.#lastHeardAt > 2 * intervalMs) {
        this.#lastHeardAt = Date.now();
        socket.reconnect(CloseCode.normal, "heartbeat timeout");
        return;
      }
      socket.send(Heartbeat.request);
    }, intervalMs);
  }

  /** Anything arrived on the socket. */
  heard(): void {
    this.#lastHeardAt = Date.now();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }
}
