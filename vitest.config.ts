import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";
import { PUSH_BRIDGE_HOST, pushBridge } from "./test/workers/push-bridge.ts";

/** The tests' own configuration: development mode with known secrets. */
const testBindings = {
  DEV_MODE: "true",
  OTP_SENDER: "console",
  JWT_SECRET: "test-jwt-secret-0123456789abcdef0123456789",
  HMAC_SECRET: "test-hmac-secret-0123456789abcdef012345678",
  MEDIA_URL_SECRET: "test-media-secret-0123456789abcdef01234567",
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
};

const NOTIFICATIONS_TEST = "test/workers/notifications.test.ts";

/**
 * One `npm test` for every kind of test:
 * - workers: inside workerd against real Durable Objects, SQLite and sockets;
 * - workers-notifications: the same with offline notifications on, their webhooks
 *   answered by a push bridge recorder in Node (test/workers/push-bridge.ts);
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
            miniflare: { bindings: testBindings },
          }),
        ],
        // 20 s: tests that count requests up to a rate limit may first wait (up to 10 s)
        // for a fresh fixed window (awayFromRateWindowEdge).
        test: { name: "workers", include: ["test/workers/**/*.test.ts"], exclude: [NOTIFICATIONS_TEST], testTimeout: 20_000 },
      },
      {
        // Offline notifications are off unless a webhook URL is set, so their test has a
        // runtime of its own with one set, whose outbound fetches reach a push bridge in Node.
        plugins: [
          cloudflareTest({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              bindings: {
                ...testBindings,
                NOTIFY_WEBHOOK_URL: `http://${PUSH_BRIDGE_HOST}/hook`,
                NOTIFY_WEBHOOK_SECRET: "test-notify-secret-0123456789abcdef0123",
                NOTIFY_AFTER_MS: "2000",
              },
              outboundService: pushBridge,
            },
          }),
        ],
        test: { name: "workers-notifications", include: [NOTIFICATIONS_TEST], testTimeout: 30_000 },
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
