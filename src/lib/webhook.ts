import { WebhookHeaders } from "../protocol/index.ts";
import { hmacHex } from "./crypto.ts";
import { describeError, log } from "./log.ts";

/**
 * How one POST went: `delivered` (2xx), `retry` (network error, timeout, 5xx, 429;
 * `retryAfterMs` from the receiver's `Retry-After` header when it sent one), or
 * `refused` (any other status: never retried).
 */
export type WebhookResult =
  | { kind: "delivered" }
  | { kind: "retry"; status: number | null; retryAfterMs: number | null }
  | { kind: "refused"; status: number };

/** A webhook that does not answer within this long counts as failed (and is retried). */
const TIMEOUT_MS = 10_000;

/** `sha256=<hex HMAC-SHA256 of the raw body>`, keyed with `secret`: the signature header's value. */
export async function webhookSignature(secret: string, body: string): Promise<string> {
  return `sha256=${await hmacHex(secret, body)}`;
}

/**
 * POSTs `body` (JSON text, sent byte for byte as signed) once, signed with `secret`.
 * Never throws: the caller decides about retries from the result. `sentAt` is the
 * timestamp header; the body should carry the same value so the signature covers it.
 */
export async function postSignedWebhook(url: string, secret: string, body: string, sentAt: number): Promise<WebhookResult> {
  const headers = {
    "content-type": "application/json",
    [WebhookHeaders.signature]: await webhookSignature(secret, body),
    [WebhookHeaders.timestamp]: String(sentAt),
  };
  let response: Response;
  try {
    response = await fetch(url, { method: "POST", headers, body, signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (error) {
    log.warn("webhook unreachable", describeError(error));
    return { kind: "retry", status: null, retryAfterMs: null };
  }
  // The body is not used: read it so the connection can be reused.
  await response.body?.cancel();
  if (response.ok) return { kind: "delivered" };
  if (response.status === 429 || response.status >= 500) {
    return { kind: "retry", status: response.status, retryAfterMs: retryAfterMs(response.headers.get("retry-after"), Date.now()) };
  }
  return { kind: "refused", status: response.status };
}

/** `Retry-After` as seconds or an HTTP date, in ms from `now`; null when absent or unreadable. */
export function retryAfterMs(header: string | null, now: number): number | null {
  if (!header) return null;
  if (/^\d{1,9}$/.test(header.trim())) return Number(header.trim()) * 1000;
  const at = Date.parse(header);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}
