import { AppError } from "./app-error.ts";

/** The subprotocol a chat socket speaks; the server echoes it when offered. */
export const WS_SUBPROTOCOL = "chat.v1";
/** Browsers cannot set headers on a WebSocket, so they offer `bearer.<token>` as a subprotocol. */
export const WS_BEARER_PREFIX = "bearer.";

const USER_HEADER = "X-Verified-User-Id";
const DEVICE_HEADER = "X-Verified-Device-Id";
const EXPIRES_HEADER = "X-Verified-Token-Expires-At";

/**
 * The identity the Worker verified, passed to a Durable Object with a forwarded
 * upgrade. Only code holding the namespace binding can reach the object, and the
 * Worker always overwrites these headers, so the object can trust them.
 */
export type ForwardedIdentity = { userId: string; deviceId: string; tokenExpiresAt: number };

export const ForwardedIdentity = {
  write(headers: Headers, identity: ForwardedIdentity): void {
    headers.set(USER_HEADER, identity.userId);
    headers.set(DEVICE_HEADER, identity.deviceId);
    headers.set(EXPIRES_HEADER, String(identity.tokenExpiresAt));
  },

  read(headers: Headers): ForwardedIdentity {
    const userId = headers.get(USER_HEADER);
    const deviceId = headers.get(DEVICE_HEADER);
    const tokenExpiresAt = Number(headers.get(EXPIRES_HEADER));
    if (!userId || !deviceId || !Number.isSafeInteger(tokenExpiresAt)) throw new AppError("unauthorized", 401, "no verified identity");
    return { userId, deviceId, tokenExpiresAt };
  },

  /** The offered subprotocols, from `Sec-WebSocket-Protocol: a, b`. */
  offeredSubprotocols(headers: Headers): string[] {
    return (headers.get("Sec-WebSocket-Protocol") ?? "").split(",").map((p) => p.trim()).filter(Boolean);
  },

  offeredSubprotocol(headers: Headers): boolean {
    return ForwardedIdentity.offeredSubprotocols(headers).includes(WS_SUBPROTOCOL);
  },
};
