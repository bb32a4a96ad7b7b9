import { AppError } from "./app-error.ts";

/** The subprotocol a chat socket speaks; the server echoes it when offered. */
export const WS_SUBPROTOCOL = "chat.v1";
/** Browsers cannot set headers on a WebSocket, so they offer `bearer.<token>` as a subprotocol. */
export const WS_BEARER_PREFIX = "bearer.";

const USER_HEADER = "X-Verified-User-Id";
const DEVICE_HEADER = "X-Verified-Device-Id";

/**
 * The identity the Worker verified, passed to a Durable Object with a forwarded
 * upgrade. Only code holding the namespace binding can reach the object, and the
 * Worker always overwrites these headers, so the object can trust them.
 */
export type ForwardedIdentity = { userId: string; deviceId: string };

export const ForwardedIdentity = {
  write(headers: Headers, identity: ForwardedIdentity): void {
    headers.set(USER_HEADER, identity.userId);
    headers.set(DEVICE_HEADER, identity.deviceId);
  },

  read(headers: Headers): ForwardedIdentity {
    const userId = headers.get(USER_HEADER);
    const deviceId = headers.get(DEVICE_HEADER);
    if (!userId || !deviceId) throw new AppError("unauthorized", 401, "no verified identity");
    return { userId, deviceId };
  },

  /** The offered subprotocols, from `Sec-WebSocket-Protocol: a, b`. */
  offeredSubprotocols(headers: Headers): string[] {
    return (headers.get("Sec-WebSocket-Protocol") ?? "").split(",").map((p) => p.trim()).filter(Boolean);
  },

  offeredSubprotocol(headers: Headers): boolean {
    return ForwardedIdentity.offeredSubprotocols(headers).includes(WS_SUBPROTOCOL);
  },
};
