import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiError, streamUrl, type ApiClient, type Presence } from "../../src/client/index.ts";
import { clientOptions, logIn, uniquePhone } from "./support/clients.ts";
import { OpenConnections } from "./support/connections.ts";
import { startDevServer, type DevServer } from "./support/dev-server.ts";
import { waitFor } from "./support/waiting.ts";

/**
 * Presence through `wrangler dev` with the SDK: a watcher sees a user go online, to the
 * background, offline with a last seen time, and a device that vanishes without a close
 * turn offline at its last heartbeat.
 */
describe("presence through wrangler dev, with the SDK", () => {
  let server: DevServer;
  const connections = new OpenConnections();
  const raw: WebSocket[] = [];
  let addresses = 0;

  beforeAll(async () => {
    server = await startDevServer({
      DEV_MODE: "true",
      OTP_SENDER: "console",
      // Offline after 1 s without a heartbeat; the SDK pings at this pace (stream.ready).
      HEARTBEAT_MS: "500",
    });
  });
  afterAll(async () => {
    connections.closeAll();
    for (const socket of raw) socket.terminate();
    await server?.stop();
  });

  async function user(name: string) {
    const api = await logIn(clientOptions(server.url, `10.78.${Math.floor(++addresses / 250)}.${addresses % 250}`), uniquePhone(), name);
    return { api, userId: api.session!.user.userId };
  }

  /** A device stream, live, with the presence it is told, in order. */
  async function stream(api: ApiClient) {
    const opened = connections.stream({ api });
    const seen: Presence[] = [];
    opened.stream.on("presence", (presence) => seen.push(presence));
    await waitFor(() => opened.stream.status === "live", "the stream live");
    return { ...opened, seen };
  }

  it("a watcher sees a user online, in the background, back, then offline with last seen; and a device that vanishes without a close goes offline at its last heartbeat", async () => {
    const [alice, bob, mallory] = await Promise.all([user("alice"), user("bob"), user("mallory")]);
    const { chatId } = await alice.api.createChat({ kind: "direct", peerId: bob.userId });
    const watcher = await stream(alice.api);
    const bobOf = () => watcher.seen.filter((presence) => presence.userId === bob.userId);

    const answer = await watcher.stream.watchPresence([
      { userId: bob.userId, chatId },
      { userId: mallory.userId, chatId },
    ]);
    expect(answer).toMatchObject({ presence: [{ userId: bob.userId, online: false }], refused: [mallory.userId], leaseMs: 60_000 });

    // Online, then in the background (offline, seen then), then back.
    const bobStream = await stream(bob.api);
    await waitFor(() => bobOf().at(-1)?.online === true, "bob online");
    const backgroundAt = Date.now();
    await bobStream.stream.setAppState("background");
    await waitFor(() => bobOf().at(-1)?.online === false, "bob in the background");
    expect(bobOf().at(-1)!.lastSeenAt).toBeGreaterThanOrEqual(backgroundAt - 1000); // server and test share a clock here
    await bobStream.stream.setAppState("foreground");
    await waitFor(() => bobOf().at(-1)?.online === true, "bob back");
    expect(await alice.api.presence(bob.userId, chatId)).toEqual({ userId: bob.userId, online: true });

    // A clean close: offline, last seen at the close.
    const closedAt = Date.now();
    bobStream.stream.close();
    await waitFor(() => bobOf().at(-1)?.online === false, "bob offline after closing");
    const lastSeen = bobOf().at(-1)!.lastSeenAt!;
    expect(lastSeen).toBeGreaterThanOrEqual(closedAt - 1000);
    expect(await alice.api.presence(bob.userId, chatId)).toEqual({ userId: bob.userId, online: false, lastSeenAt: lastSeen });

    // A device that vanishes: a raw stream that pings once, then never again and never closes.
    const token = await bob.api.accessToken();
    const vanishing = new WebSocket(streamUrl(server.url), ["chat.v1", `bearer.${token}`]);
    raw.push(vanishing);
    await new Promise<void>((resolve, reject) => {
      vanishing.once("open", () => resolve());
      vanishing.once("error", reject);
    });
    await waitFor(() => bobOf().at(-1)?.online === true, "bob online on the vanishing device");
    const pingedAt = Date.now();
    const pong = new Promise<void>((resolve) => vanishing.on("message", (data) => String(data) === "pong" && resolve()));
    vanishing.send("ping");
    await pong;
    const pongedAt = Date.now();
    await waitFor(() => bobOf().at(-1)?.online === false, "bob offline through the sweep");
    const swept = bobOf().at(-1)!;
    expect(swept.lastSeenAt).toBeGreaterThanOrEqual(pingedAt - 1000);
    expect(swept.lastSeenAt).toBeLessThanOrEqual(pongedAt + 1000);
    expect(vanishing.readyState).toBe(WebSocket.OPEN);

    // A stranger is refused over REST as not found.
    const refused = await mallory.api.presence(bob.userId, chatId).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(ApiError);
    expect((refused as ApiError).status).toBe(404);
    expect((refused as ApiError).code).toBe("not_found");
  });
});
