import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import type { ApiClient } from "../../src/client/index.ts";
import { loggedInClient } from "./support/clients.ts";
import { startDevServer, type DevServer } from "./support/dev-server.ts";
import { waitFor } from "./support/waiting.ts";

/**
 * Catch-up pages are bounded by bytes and sent only when asked for, so sockets that
 * resume from the start of a chat of big messages and then never read cost the
 * runtime a page each, not the chat. Before that bound, 40 such sockets on a chat of
 * 200 messages of 64 KiB grew the runtime by about 1.1 GB (13 MB of first page each,
 * buffered), and most of it stayed after they closed. Only the runtime shows this.
 */
describe("sockets that resume and never read", () => {
  let server: DevServer;
  let members: ApiClient[];
  let chatId: string;
  const MiB = 1024 * 1024;

  beforeAll(async () => {
    // Lifted send rate: the seeding sends 200 messages at once.
    server = await startDevServer({ DEV_MODE: "true", OTP_SENDER: "console", SEND_RATE_PER_SECOND: "100000", SEND_BURST: "100000", ACCOUNT_SEND_RATE_PER_SECOND: "100000", ACCOUNT_SEND_BURST: "100000" });
    members = [];
    for (let i = 0; i < 41; i++) members.push(await loggedInClient(server.url, `member ${i}`, `10.41.0.${i + 1}`));
    const [creator, ...others] = members;
    ({ chatId } = await creator!.createChat({ kind: "group", name: "big messages", memberIds: others.map((m) => m.session!.user.userId) }));
    const body = "x".repeat(64 * 1024 - 8);
    for (let i = 0; i < 200; i++) await creator!.sendMessage(chatId, { clientId: `big-${i}`, body: `${i}:${body}` });
  }, 120_000);
  afterAll(async () => {
    await server?.stop();
  });

  it("cost the runtime about a page each (40 sockets: well under 100 MiB), not the chat", async () => {
    await new Promise((resolve) => setTimeout(resolve, 2_000)); // let the seeding settle
    const before = server.runtimeRss();
    const sockets: WebSocket[] = [];
    for (const member of members.slice(1)) {
      const socket = new WebSocket(`${server.url.replace("http", "ws")}/chat/${chatId}?after=0`, {
        headers: { authorization: `Bearer ${member.session!.credentials}` },
        perMessageDeflate: false,
      });
      await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
      (socket as unknown as { _socket: { pause(): void } })._socket.pause(); // and never read again
      sockets.push(socket);
    }
    await new Promise((resolve) => setTimeout(resolve, 5_000)); // the server sends what it will
    const grown = server.runtimeRss() - before;
    for (const socket of sockets) socket.terminate();
    expect(grown / MiB).toBeLessThan(100);

    // The chat still serves a reader that does read: every event, paged.
    const reader = new WebSocket(`${server.url.replace("http", "ws")}/chat/${chatId}?after=0`, {
      headers: { authorization: `Bearer ${members[1]!.session!.credentials}` },
    });
    const seqs: number[] = [];
    let syncs = 0;
    reader.on("message", (data) => {
      const frame = JSON.parse(String(data)) as { type: string; events?: { seq: number }[]; more?: boolean; ok?: boolean; error?: { retryAfterMs?: number } };
      if (frame.type === "events") {
        seqs.push(...frame.events!.map((e) => e.seq));
        if (frame.more) reader.send(JSON.stringify({ type: "sync", id: `s${++syncs}` }));
      } else if (frame.type === "reply" && !frame.ok) {
        setTimeout(() => reader.send(JSON.stringify({ type: "sync", id: `s${++syncs}` })), frame.error?.retryAfterMs ?? 100);
      }
    });
    await waitFor(() => seqs.length >= 201, "every event", 60_000);
    reader.close();
    expect(seqs).toEqual(Array.from({ length: 201 }, (_, i) => i + 1));
  }, 120_000);
});
