import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

/**
 * One `npm test` for every kind of test:
 * - workers: inside workerd against real Durable Objects, SQLite and sockets;
 * - node: plain Node checks (documentation examples, deploy configuration);
 * - e2e: `wrangler dev` started from Node and driven by the SDK over real sockets.
 */
export default defineConfig({
  test: {
    // Logs of passing tests are noise; a failing test shows its logs.
    silent: "passed-only",
    projects: [
      {
        plugins: [
          cloudflareTest({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              // The tests' own configuration: development mode with known secrets.
              bindings: {
                DEV_MODE: "true",
                OTP_SENDER: "console",
                JWT_SECRET: "test-jwt-secret-0123456789abcdef0123456789",
                HMAC_SECRET: "test-hmac-secret-0123456789abcdef012345678",
                CATCH_UP_PAGE_SIZE: "200",
                // Chat lists follow busy chats within 50 ms here, not 5 s, so tests need not wait.
                FAN_OUT_INTERVAL_MS: "50",
                // Streams count as offline after 1 s without a heartbeat, so presence tests need not wait.
                HEARTBEAT_MS: "500",
                // High enough for tests that send hundreds of messages; the limit
                // itself is tested with these values.
                SEND_RATE_PER_SECOND: "1",
                SEND_BURST: "600",
                // Per account across chats: above one chat's burst, so each limit is testable.
                ACCOUNT_SEND_RATE_PER_SECOND: "1",
                ACCOUNT_SEND_BURST: "900",
              },
            },
          }),
        ],
        // 20 s: tests that count requests up to a rate limit may first wait (up to 10 s)
        // for a fresh fixed window (awayFromRateWindowEdge).
        test: { name: "workers", include: ["test/workers/**/*.test.ts"], testTimeout: 20_000 },
      },
      { test: { name: "node", include: ["test/node/**/*.test.ts"], environment: "node" } },
      {
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          environment: "node",
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
