import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CloseCode, type ApiClient } from "../../src/client/index.ts";
import { loggedInClient } from "./support/clients.ts";
import { startDevServer, type DevServer } from "./support/dev-server.ts";
import { OpenConnections } from "./support/connections.ts";
import { waitFor } from "./support/waiting.ts";

describe("membership through wrangler dev, with the SDK", () => {
  let server: DevServer;
  let alice: ApiClient;
  let bob: ApiClient;
  const connections = new OpenConnections();

  beforeAll(async () => {
    server = await startDevServer({ DEV_MODE: "true", OTP_SENDER: "console" });
    [alice, bob] = await Promise.all([loggedInClient(server.url, "alice"), loggedInClient(server.url, "bob")]);
  });
  afterAll(async () => {
    connections.closeAll();
    await server?.stop();
  });

  const connect = (api: ApiClient, chatId: string, after?: number) =>
    connections.connect(after === undefined ? { api, chatId, heartbeatMs: 1000 } : { api, chatId, after, heartbeatMs: 1000 });

  it("an added member joins live; a removed one is cut off, and coming back resumes across the gap", async () => {
    const bobId = bob.session!.user.userId;
    const chat = await alice.createChat({ kind: "group", name: "e2e members", memberIds: [] });
    const aliceSide = connect(alice, chat.chatId);
    await waitFor(() => aliceSide.connection.status === "live", "alice live");
    await aliceSide.connection.send("before bob");

    const added = await alice.addMembers(chat.chatId, [bobId]);
    expect(added).toMatchObject({ added: [bobId], invited: [] });
    // bob's chat list has the group, at its head
    await expect.poll(async () => (await bob.chats()).chats[0], { timeout: 5_000 }).toMatchObject({ chatId: chat.chatId, name: "e2e members", headSeq: added.seq, memberCount: 2, membership: "member" });

    // bob resumes from before he joined: he sees the chat from the event that added him
    const bobSide = connect(bob, chat.chatId, 0);
    await waitFor(() => bobSide.connection.status === "live", "bob live");
    expect(bobSide.events.map((e) => e.type)).toEqual(["member.added"]);
    const hello = await bobSide.connection.send("hi all");
    await waitFor(() => aliceSide.events.some((e) => e.seq === hello.seq), "bob's message at alice");

    // removed: bob's connection gets the removal, then stops for good with 4003
    const closed = new Promise<number>((resolve) => bobSide.connection.on("closed", (code) => resolve(code)));
    const removal = await alice.removeMember(chat.chatId, bobId);
    expect(await closed).toBe(CloseCode.notAMember);
    expect(bobSide.events.at(-1)).toMatchObject({ type: "member.removed", seq: removal.seq, userId: bobId });
    const bobCursor = bobSide.connection.cursor!;
    expect(bobCursor).toBe(removal.seq);
    await expect(bob.sendMessage(chat.chatId, { clientId: "late", body: "still here?" })).rejects.toMatchObject({ status: 403, body: { code: "not_a_member" } });

    // alice talks while bob is out, then adds him back; bob resumes from his cursor
    await aliceSide.connection.send("while bob was out");
    const back = await alice.addMembers(chat.chatId, [bobId]);
    const again = connect(bob, chat.chatId, bobCursor);
    await waitFor(() => again.connection.status === "live", "bob live again");
    const after = await aliceSide.connection.send("welcome back");
    await waitFor(() => again.events.some((e) => e.seq === after.seq), "the welcome");
    // exactly the new period: the jump over what he did not see is not a gap
    expect(again.events.map((e) => e.seq)).toEqual([back.seq!, after.seq]);
    expect(again.statuses.filter((s) => s === "connecting")).toHaveLength(1);
    const history = await bob.history(chat.chatId, { after: 0 });
    expect(history.events.map((e) => e.type)).toEqual(["member.added", "message", "member.removed", "member.added", "message"]);
  });
});
