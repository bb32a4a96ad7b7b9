import { describe, expect, it } from "vitest";
import { addressKey } from "../../src/middleware/rate-limit.ts";
import { api, uniquePhone, awayFromRateWindowEdge } from "./helpers.ts";

/** A /64 of the documentation prefix that no other test of this file uses. */
let prefixCounter = Math.floor(Math.random() * 0xf000);
const freshPrefix = () => `2001:db8:${(++prefixCounter).toString(16)}:${Math.floor(Math.random() * 0xffff).toString(16)}`;

describe("the per-client key", () => {
  it("is an IPv4 address as is, a mapped IPv4 as its IPv4, other IPv6 as its /64", () => {
    expect(addressKey("203.0.113.7")).toBe("203.0.113.7");
    expect(addressKey("::ffff:203.0.113.7")).toBe("203.0.113.7");
    expect(addressKey("::ffff:cb00:7107")).toBe("203.0.113.7");
    expect(addressKey("2001:db8:1:2::5")).toBe("2001:db8:1:2::/64");
    expect(addressKey("2001:0db8:0001:0002:ffff:ffff:ffff:ffff")).toBe("2001:db8:1:2::/64");
    expect(addressKey("2001:DB8:1:2:a:b:c:d")).toBe("2001:db8:1:2::/64");
    expect(addressKey("2001:db8:1:3::5")).toBe("2001:db8:1:3::/64");
    for (const garbage of [null, "", "unknown", "not an address", "1", "0x7f.1", "2001:db8::1::2", "300.1.1.1"]) {
      expect(addressKey(garbage)).toBe("unknown");
    }
  });
});

describe("per-address request limits", () => {
  it("count every address of one IPv6 /64 together for OTP requests, and other /64s apart", async () => {
    await awayFromRateWindowEdge();
    const prefix = freshPrefix();
    const statuses: number[] = [];
    for (let i = 1; i <= 11; i++) {
      statuses.push((await api("/api/otp", { body: { phone: uniquePhone() }, ip: `${prefix}:${i.toString(16)}:0:0:${i}` })).status);
    }
    expect(statuses.slice(0, 10)).toEqual(Array(10).fill(201));
    expect(statuses[10]).toBe(429); // the 11th address of the /64: over OTP_IP_LIMITER's 10 per minute
    const neighbour = `${freshPrefix()}::1`;
    expect((await api("/api/otp", { body: { phone: uniquePhone() }, ip: neighbour })).status).toBe(201);
  });

  it("count an IPv4-mapped IPv6 address as its IPv4 address", async () => {
    await awayFromRateWindowEdge();
    const v4 = "198.51.100.77";
    for (let i = 0; i < 5; i++) expect((await api("/api/otp", { body: { phone: uniquePhone() }, ip: v4 })).status).toBe(201);
    for (let i = 0; i < 5; i++) expect((await api("/api/otp", { body: { phone: uniquePhone() }, ip: `::ffff:${v4}` })).status).toBe(201);
    expect((await api("/api/otp", { body: { phone: uniquePhone() }, ip: `::ffff:${v4}` })).status).toBe(429);
  });

  it("count every address of one IPv6 /64 together for logins", async () => {
    await awayFromRateWindowEdge();
    const prefix = freshPrefix();
    const statuses: number[] = [];
    for (let i = 1; i <= 31; i++) {
      const body = { phone: uniquePhone(), code: "000000", attemptId: "a".repeat(22) };
      statuses.push((await api("/api/auth/login", { body, ip: `${prefix}::${i.toString(16)}` })).status);
    }
    expect(statuses.slice(0, 30).every((status) => status !== 429)).toBe(true);
    expect(statuses[30]).toBe(429);
    const elsewhere = { phone: uniquePhone(), code: "000000", attemptId: "a".repeat(22) };
    expect((await api("/api/auth/login", { body: elsewhere, ip: `${freshPrefix()}::1` })).status).not.toBe(429);
  });
});
