import { describe, expect, it } from "vitest";
import { connect, createGroup, login, restSend } from "./helpers.ts";

describe("a REST send to a chat with more live sockets than one broadcast turn", () => {
  it("reaches every socket, though the request has been answered before the later turns", async () => {
    const alice = await login();
    const members = await Promise.all(Array.from({ length: 100 }, () => login()));
    const chatId = await createGroup(alice, members);
    const live = await Promise.all(members.flatMap((member) => [1, 2].map(() => connect(chatId, member.credentials))));
    expect((await restSend(alice, chatId, "rest-1", "to everyone")).status).toBe(201);
    for (const socket of live) {
      await socket.until(() => socket.events().some((e) => e.type === "message"), "the message");
    }
  }, 30_000);
});
