import { afterEach, describe, expect, it } from "vitest";
import { ApiError, ChatConnection, CursorStore, type ApiClient, type SendMessageRequest, type SendResult } from "../../src/client/index.ts";
import { FakeServerSocket } from "./support/fake-socket.ts";

const ME = "u_MMMMMMMMMMMMMMMMMMMMMM";
const DEVICE = "dv_DDDDDDDDDDDDDDDDDDDDDD";
const CHAT = "g_CCCCCCCCCCCCCCCCCCCCCC";

/** A chat socket's server side: it says `ready` at seq 3. */
class FakeSocket extends FakeServerSocket {
  protected firstFrame(): object {
    return { type: "ready", chatId: CHAT, userId: ME, deviceId: DEVICE, role: "member", headSeq: 3, catchingUp: false, deliveredUpTo: 3, seenUpTo: 3 };
  }
}

/** The REST side: refreshes that fail as the test says, sends that never answer. */
class FakeApi {
  readonly baseUrl = "https://chat.example";
  refreshes = 0;
  /** How the next refreshes fail, in order; once none is left, refreshes succeed. */
  readonly refreshFailures: unknown[] = [];
  accessToken = async () => "token";
  refresh = async () => {
    this.refreshes++;
    const failure = this.refreshFailures.shift();
    if (failure !== undefined) throw failure;
    return {};
  };
  /** The chat's head as `GET /api/chats/:chatId` reports it. */
  headSeq = 3;
  chat = async () => ({ headSeq: this.headSeq });
  socketUrl = (chatId: string, after?: number) => `wss://chat.example/chat/${chatId}${after === undefined ? "" : `?after=${after}`}`;
  sendMessage = (_chatId: string, _request: SendMessageRequest): Promise<SendResult> => new Promise(() => {});
}

const connections: ChatConnection[] = [];
afterEach(() => {
  for (const connection of connections.splice(0)) connection.close();
  FakeSocket.instances = [];
});

async function openLive(cursors = new CursorStore()) {
  const api = new FakeApi();
  const connection = new ChatConnection({ api: api as unknown as ApiClient, chatId: CHAT, WebSocket: FakeSocket, cursors });
  connections.push(connection);
  const closes: { code: number; reason: string }[] = [];
  connection.on("closed", (code, reason) => closes.push({ code, reason }));
  connection.connect();
  await until(() => connection.status === "live", "the connection live");
  return { api, connection, closes, cursors, socket: FakeSocket.latest() };
}

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  if (!condition()) throw new Error(`never happened: ${what}`);
}

describe("the chat connection", () => {
  it("tries a refresh that failed for a moment (network, 503) again, then resumes from its cursor on a new socket", async () => {
    const { api, connection, closes, socket } = await openLive();
    api.refreshFailures.push(
      new TypeError("fetch failed"),
      new ApiError(503, { code: "unavailable", message: "try again", retryable: true, retryAfterMs: 10 }),
    );
    socket.drop(4001, "token_expired");
    await until(() => FakeSocket.instances.length === 2 && connection.status === "live", "a new socket live");
    expect(api.refreshes).toBe(3);
    expect(closes).toEqual([]);
    expect(FakeSocket.latest().url).toBe(`wss://chat.example/chat/${CHAT}?after=3`);
  });

  it("stops for good when the refresh is refused for good, rejecting its waiting sends", async () => {
    const { api, connection, closes, socket } = await openLive();
    const ack = connection.send("hello"); // on the socket, then over REST, which never answers
    api.refreshFailures.push(new ApiError(401, { code: "device_revoked", message: "logged out", retryable: false }));
    socket.drop(4001, "token_expired");
    await expect(ack).rejects.toThrow(/unavailable/);
    expect(closes).toEqual([{ code: 4009, reason: "device_revoked" }]);
    expect(connection.status).toBe("closed");
    expect(FakeSocket.instances).toHaveLength(1);
  });

  it("brings a cursor past the chat's head back to it when the server refuses it, and resumes", async () => {
    const { api, connection, closes, cursors, socket } = await openLive();
    cursors.set(CHAT, 9); // as if the server's data had been reset below it
    api.headSeq = 3;
    socket.drop(4400, "invalid_cursor");
    await until(() => FakeSocket.instances.length === 2 && connection.status === "live", "a new socket live");
    expect(FakeSocket.latest().url).toBe(`wss://chat.example/chat/${CHAT}?after=3`);
    expect(closes).toEqual([]);
  });

  it("stops on a refused cursor that is not past the head", async () => {
    const { closes, socket } = await openLive();
    socket.drop(4400, "invalid_cursor");
    await until(() => closes.length === 1, "the final close");
    expect(closes).toEqual([{ code: 4400, reason: "invalid_cursor" }]);
    expect(FakeSocket.instances).toHaveLength(1);
  });
});
