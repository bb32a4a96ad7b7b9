import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiClient } from "../../src/client/index.ts";
import { loggedInClient } from "./support/clients.ts";
import { startDevServer, type DevServer } from "./support/dev-server.ts";
import { OpenConnections } from "./support/connections.ts";
import { waitFor } from "./support/waiting.ts";

/**
 * A socket lives as long as the access token it opened with. With 30 s tokens, the
 * SDK's sockets are closed after 30 s (4001 token_expired) at their next frame or
 * push; the SDK refreshes, reconnects and resumes, and the app sees nothing but a
 * short "connecting".
 */
describe("sockets outliving their token", () => {
  let server: DevServer;
  let alice: ApiClient;
  let bob: ApiClient;
  const connections = new OpenConnections();

  beforeAll(async () => {
    server = await startDevServer({ DEV_MODE: "true", OTP_SENDER: "console", ACCESS_TOKEN_TTL_SECONDS: "30" });
    [alice, bob] = await Promise.all([loggedInClient(server.url, "alice"), loggedInClient(server.url, "bob")]);
  });
  afterAll(async () => {
    connections.closeAll();
    await server?.stop();
  });

  function connect(api: ApiClient, chatId: string) {
    // A heartbeat slower than the test, so only the token's expiry closes the socket.
    return connections.connect({ api, chatId, heartbeatMs: 120_000 });
  }

  it("are closed when it expires, and the SDK refreshes, resumes and delivers every message once", async () => {
    const chat = await alice.createChat({ kind: "direct", peerId: bob.session!.user.userId });
    const aliceSide = connect(alice, chat.chatId);
    const bobSide = connect(bob, chat.chatId);
    await waitFor(() => aliceSide.connection.status === "live" && bobSide.connection.status === "live", "both live");
    const before = await aliceSide.connection.send("before expiry");

    await new Promise((resolve) => setTimeout(resolve, 31_000)); // both tokens have expired now

    const after = await aliceSide.connection.send("after expiry");
    expect(after.seq).toBe(before.seq + 1);
    await waitFor(() => bobSide.events.length === 2, "both messages at bob");
    expect(bobSide.events.map((e) => (e.type === "message" ? e.body : e.type))).toEqual(["before expiry", "after expiry"]);
    // Each side went back to connecting once its old socket closed, then live again.
    for (const side of [aliceSide, bobSide]) {
      expect(side.statuses.lastIndexOf("connecting")).toBeGreaterThan(side.statuses.indexOf("live"));
      await waitFor(() => side.connection.status === "live", "live again");
    }
    const history = await bob.history(chat.chatId, { after: 0 });
    expect(history.events.filter((e) => e.type === "message")).toHaveLength(2);
  }, 90_000);
});
