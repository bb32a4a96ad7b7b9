import { abortAllDurableObjects, env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ChatList } from "../../src/protocol/index.ts";
import { accounts, api, connect, createGroup, login, restSend, type Session } from "./helpers.ts";

const chatObject = (chatId: string) => env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId));
const userObject = (userId: string) => env.USER.get(env.USER.idFromName(userId));

/** The head seq each account's chat list has for `chatId` (0 when absent). */
async function listedHeads(userIds: string[], chatId: string): Promise<number[]> {
  return Promise.all(
    userIds.map(async (userId) => {
      const list = await userObject(userId).listChats({ limit: 200 });
      return list.chats.find((chat) => chat.chatId === chatId)?.headSeq ?? 0;
    }),
  );
}

/** The fan-out progress the chat has stored, per member period. */
async function notifiedSeqs(chatId: string): Promise<Map<string, number>> {
  return runInDurableObject(chatObject(chatId), (_instance, state) => {
    const rows = state.storage.sql.exec<{ user_id: string; notified_seq: number }>("SELECT user_id, notified_seq FROM members WHERE left_seq IS NULL").toArray();
    return new Map(rows.map((row) => [row.user_id, row.notified_seq]));
  });
}

/** Makes an account's object fail every chat-list update, as a broken or unreachable object would, until `restore`. */
async function breakChatList(userId: string): Promise<() => Promise<void>> {
  await runInDurableObject(userObject(userId), (_instance, state) => void state.storage.sql.exec("ALTER TABLE chats RENAME TO chats_away"));
  return () => runInDurableObject(userObject(userId), (_instance, state) => void state.storage.sql.exec("ALTER TABLE chats_away RENAME TO chats"));
}

async function sendAll(session: Session, chatId: string, prefix: string, count: number): Promise<number> {
  let seq = 0;
  for (let i = 0; i < count; i++) seq = ((await (await restSend(session, chatId, `${prefix}-${i}`, `${prefix} ${i}`)).json()) as { seq: number }).seq;
  return seq;
}

describe("the fan-out to members' accounts", () => {
  it("gives an account that failed the whole range in one retry", async () => {
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    const chatId = await createGroup(alice, [bob, carol]);
    const restore = await breakChatList(bob.user.userId);
    const head = await sendAll(alice, chatId, "m", 5);
    // carol's account follows; bob's could not be told, and the chat knows it
    await expect.poll(() => listedHeads([carol.user.userId], chatId)).toEqual([head]);
    await expect.poll(async () => (await notifiedSeqs(chatId)).get(carol.user.userId)).toBe(head);
    expect((await notifiedSeqs(chatId)).get(bob.user.userId)).toBe(1);

    await restore();
    expect(await runDurableObjectAlarm(chatObject(chatId))).toBe(true);
    expect(await listedHeads([bob.user.userId], chatId)).toEqual([head]);
    expect((await notifiedSeqs(chatId)).get(bob.user.userId)).toBe(head);
  });

  it("brings every account to the head after the chat's object is aborted mid-fan-out", async () => {
    const alice = await login();
    const others = await accounts(30);
    const created = await api("/api/chats", { token: alice.credentials, body: { kind: "group", name: "Big", memberIds: others } });
    expect(created.status).toBe(201);
    const { chatId } = (await created.json()) as { chatId: string };
    const everyone = [alice.user.userId, ...others];
    // One account cannot be told, so the fan-out is still unfinished when everything is aborted.
    const restore = await breakChatList(others[0]!);
    const head = await sendAll(alice, chatId, "m", 3);
    await abortAllDurableObjects();
    await restore();
    // The alarm was stored with the messages: it survives and finishes the job.
    expect(await runDurableObjectAlarm(chatObject(chatId))).toBe(true);
    expect(await listedHeads(everyone, chatId)).toEqual(everyone.map(() => head));
    expect([...(await notifiedSeqs(chatId)).values()]).toEqual(everyone.map(() => head));
    // nothing left to do: no alarm is set
    expect(await runDurableObjectAlarm(chatObject(chatId))).toBe(false);
  });

  it("keeps one row of state per membership period after 1,000 messages", async () => {
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    const chatId = await createGroup(alice, [bob, carol]);
    await api(`/api/chats/${chatId}/leave`, { token: carol.credentials, method: "POST" });
    await api(`/api/chats/${chatId}/members`, { token: alice.credentials, body: { userIds: [carol.user.userId] } });
    const sockets = await Promise.all([alice, bob].map((session) => connect(chatId, session.credentials)));
    // 500 each, pipelined on their sockets
    await Promise.all(
      sockets.map(async (socket, who) => {
        for (let i = 0; i < 500; i++) socket.send({ type: "send", id: `s${i}`, clientId: `c${who}-${i}`, body: `message ${i}` });
        await socket.until(() => socket.frames.filter((f) => f.type === "reply").length === 500, "500 acks", 60_000);
        expect(socket.frames.filter((f) => f.type === "reply" && !f.ok)).toEqual([]);
      }),
    );
    const head = 1 + 2 + 1000;
    await expect.poll(() => listedHeads([alice, bob, carol].map((s) => s.user.userId), chatId), { timeout: 10_000 }).toEqual([head, head, head]);
    // alice, bob, and carol's two periods
    expect(await chatObject(chatId).fanOutStateRows()).toBe(4);
    const bobsList = ChatList.parse(await (await api("/api/chats", { token: bob.credentials })).json());
    expect(bobsList.chats[0]).toMatchObject({ chatId, headSeq: head, memberCount: 3, membership: "member" });
  }, 90_000);

  it("stops concurrent adds at 1,024 members", async () => {
    const alice = await login();
    const initial = await accounts(1013);
    const created = await api("/api/chats", { token: alice.credentials, body: { kind: "group", name: "Full", memberIds: initial } });
    expect(created.status).toBe(201);
    const { chatId } = (await created.json()) as { chatId: string };
    const waiting = await accounts(20);
    // ten admins' requests at once, two accounts each: room for five of them
    const responses = await Promise.all(
      Array.from({ length: 10 }, (_, i) => api(`/api/chats/${chatId}/members`, { token: alice.credentials, body: { userIds: waiting.slice(2 * i, 2 * i + 2) } })),
    );
    const statuses = responses.map((r) => r.status).sort();
    expect(statuses).toEqual([201, 201, 201, 201, 201, 409, 409, 409, 409, 409]);
    for (const response of responses.filter((r) => r.status === 409)) {
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe("group_full");
    }
    const chat = (await (await api(`/api/chats/${chatId}`, { token: alice.credentials })).json()) as { members: unknown[] };
    expect(chat.members).toHaveLength(1024);
    const [late] = await accounts(1);
    const refused = await api(`/api/chats/${chatId}/members`, { token: alice.credentials, body: { userIds: [late] } });
    expect(refused.status).toBe(409);
  }, 120_000);
});
