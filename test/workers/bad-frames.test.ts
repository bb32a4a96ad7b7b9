import { describe, expect, it } from "vitest";
import { connect, createDirect, login, socketSend } from "./helpers.ts";

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
