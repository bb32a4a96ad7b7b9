import ipaddr from "ipaddr.js";
import { AppError } from "../lib/app-error.ts";

/**
 * Counts one request against a Rate Limiting binding (a 10 s or 60 s window, per
 * location) and refuses with 429 when the key is over its limit.
 */
export async function enforceRateLimit(limiter: RateLimit, key: string, windowMs = 60_000): Promise<void> {
  const { success } = await limiter.limit({ key });
  if (!success) throw new AppError("rate_limited", 429, "too many requests: slow down", { retryAfterMs: windowMs });
}

/**
 * The key that per-client limits count under, from the address Cloudflare's edge
 * reports: an IPv4 address as is (an IPv4-mapped IPv6 address counts as its IPv4),
 * any other IPv6 address as its /64 (`2001:db8:1:2::/64`), because one subscriber or
 * host usually gets a whole /64 and could otherwise rotate through 2^64 addresses to
 * escape every limit. Anything unreadable shares the single key "unknown".
 */
export function clientIp(headers: Headers): string {
  return addressKey(headers.get("cf-connecting-ip"));
}

/** `clientIp` for one address string (null: no address). */
export function addressKey(address: string | null): string {
  const text = address?.trim() ?? "";
  // Dotted quads only: ipaddr.js also reads forms like "1" or "0x7f.1", which no edge sends.
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) return ipaddr.IPv4.parse(text).toString();
  if (!ipaddr.IPv6.isValid(text)) return "unknown";
  const v6 = ipaddr.IPv6.parse(text);
  if (v6.isIPv4MappedAddress()) return v6.toIPv4Address().toString();
  return `${new ipaddr.IPv6([...v6.parts.slice(0, 4), 0, 0, 0, 0]).toString()}/64`;
}
