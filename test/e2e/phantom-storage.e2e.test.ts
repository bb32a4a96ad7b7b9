import { readdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiClient } from "../../src/client/index.ts";
import { loggedInClient } from "./support/clients.ts";
import { startDevServer, type DevServer } from "./support/dev-server.ts";

/**
 * Under `wrangler dev` every Durable Object that is merely addressed gets a SQLite
 * file. Requests about ids that do not exist must not add any: the count of object
 * databases is what a developer (or an attacker's bill) would see grow.
 */
describe("requests about ids that do not exist create no object databases", () => {
  let server: DevServer;
  let alice: ApiClient;

  beforeAll(async () => {
    server = await startDevServer({ DEV_MODE: "true", OTP_SENDER: "console" });
    alice = await loggedInClient(server.url, "alice");
  });
  afterAll(async () => {
    await server?.stop();
  });

  /** SQLite files of Durable Objects, per class directory. */
  function objectDatabases(): Record<string, number> {
    const root = join(server.stateDir, "v3", "do");
    const counts: Record<string, number> = {};
    for (const dir of readdirSync(root)) {
      counts[dir] = readdirSync(join(root, dir)).filter((file) => file.endsWith(".sqlite") && file !== "metadata.sqlite").length;
    }
    return counts;
  }

  const madeUp = (prefix: string) => `${prefix}_${crypto.randomUUID().replace(/-/g, "")}AbCdEfGh`;
  const call = (path: string) => alice.request("GET", path);

  it("made-up chat ids, member ids, user ids and refresh tokens leave the count unchanged", async () => {
    const before = objectDatabases();
    expect(Object.values(before).reduce((a, b) => a + b, 0)).toBeGreaterThan(0); // the login made some

    for (let i = 0; i < 20; i++) {
      expect((await call(`/api/chats/${madeUp("g")}`)).status).toBe(404);
      expect((await call(`/api/chats/${madeUp("d")}/messages`)).status).toBe(404);
      expect((await call(`/api/users/${madeUp("u")}`)).status).toBe(404);
      const refresh = await alice.request("POST", "/api/auth/refresh", { auth: false, body: { refreshToken: `rt1.${madeUp("u")}.${"A".repeat(43)}` } });
      expect(refresh.status).toBe(401);
    }
    const started = Date.now();
    const group = await alice.request("POST", "/api/chats", { body: { kind: "group", name: "Spam", memberIds: Array.from({ length: 1023 }, () => madeUp("u")) } });
    expect(group.status).toBe(400);
    expect(((await group.json()) as { error: { code: string } }).error.code).toBe("invalid_member");
    const refusedInMs = Date.now() - started;

    expect(objectDatabases()).toEqual(before);
    // Refused by the ids' tags, without waking 1,023 objects (8.7 s before this check existed).
    expect(refusedInMs).toBeLessThan(2_000);
  });
});
