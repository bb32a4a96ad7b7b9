import { CloseCode } from "../protocol/index.ts";
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
