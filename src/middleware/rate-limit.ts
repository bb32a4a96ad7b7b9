import { AppError } from "../lib/app-error.ts";

/**
 * Counts one request against a Rate Limiting binding (a 10 s or 60 s window, per
 * location) and refuses with 429 when the key is over its limit.
 */
export async function enforceRateLimit(limiter: RateLimit, key: string, windowMs = 60_000): Promise<void> {
  const { success } = await limiter.limit({ key });
  if (!success) throw new AppError("rate_limited", 429, "too many requests: slow down", { retryAfterMs: windowMs });
}

/** The client's address as Cloudflare's edge reports it. */
export function clientIp(headers: Headers): string {
  return headers.get("cf-connecting-ip") ?? "unknown";
}
