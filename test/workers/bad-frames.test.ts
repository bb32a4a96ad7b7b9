import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { connect, createDirect, createGroup, history, login, socketSend } from "./helpers.ts";

/** Names an object inherits from its prototype: none of them is a frame type. */
const PROTOTYPE_NAMES = [
  "constructor",
  "__proto__",
  "toString",
  "toLocaleString",
  "valueOf",
  "hasOwnProperty",
  "isPrototypeOf",
  "propertyIsEnumerable",
  "__defineGetter__",
  "__lookupGetter__",
];

describe("frames whose type names a prototype property", () => {
  it("get unknown_frame, with their id or as an error frame, and the socket keeps working", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createDirect(alice, bob);
    const socket = await connect(chatId, alice.credentials);

    for (const [i, type] of PROTOTYPE_NAMES.entries()) {
      socket.send({ type, id: `p${i}` });
      const reply = await socket.reply(`p${i}`);
      expect(reply, type).toMatchObject({ ok: false, error: { code: "unknown_frame" } });
    }
    // Without an id, the answer is an error frame.
    for (const type of PROTOTYPE_NAMES) {
      const before = socket.frames.length;
      socket.send(`{"type":${JSON.stringify(type)}}`);
      const frame = await socket.until(() => socket.frames.slice(before).find((f) => f.type === "error"), `error frame for ${type}`);
      expect(frame, type).toMatchObject({ type: "error", error: { code: "unknown_frame" } });
    }
    // A JSON `__proto__` key is an own property after JSON.parse, like any other.
    socket.send('{"type":"__proto__","id":"own-proto","__proto__":{"type":"send"}}');
    expect(await socket.reply("own-proto")).toMatchObject({ ok: false, error: { code: "unknown_frame" } });

    expect(socket.closed).toBeNull();
    const sent = await socketSend(socket, "after-bad-frames", "still here");
    expect(sent).toMatchObject({ ok: true, result: { seq: 2, duplicate: false } });
  });
});

describe("the chat object's RPC surface", () => {
  it("does not expose the frame handlers' operations (queueing a send, sending a page)", async () => {
    const alice = await login();
    const chatId = await createGroup(alice, []);
    const stub = env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId)) as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
    const sender = { userId: alice.user.userId, deviceId: alice.device.deviceId };
    const refusal = async (call: () => Promise<unknown>) => {
      try {
        await call();
        return "answered";
      } catch (error) {
        return String(error);
      }
    };
    expect(await refusal(() => stub.enqueueSend!(sender, { clientId: "rpc-1", body: "sneaked" }, null))).toMatch(/does not implement/);
    expect(await refusal(() => stub.sendNextPage!(null, null))).toMatch(/does not implement/);
    const page = await history(alice, chatId);
    expect(page.events.filter((e) => e.type === "message")).toEqual([]);
  });
});
