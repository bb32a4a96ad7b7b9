import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { Chat, ChatList, CloseCode, InvitationList, Limits, type ChatEvent } from "../../src/protocol/index.ts";
import { api, connect, createDirect, createGroup, expectError, history, login, openSocket, restSend, type Session } from "./helpers.ts";

const uid = (session: Session) => session.user.userId;

async function addMembers(admin: Session, chatId: string, members: Session[]) {
  return api(`/api/chats/${chatId}/members`, { token: admin.credentials, body: { userIds: members.map(uid) } });
}
async function removeMember(admin: Session, chatId: string, member: Session) {
  return api(`/api/chats/${chatId}/members/${uid(member)}`, { token: admin.credentials, method: "DELETE" });
}
async function leave(member: Session, chatId: string) {
  return api(`/api/chats/${chatId}/leave`, { token: member.credentials, method: "POST" });
}
async function setRole(admin: Session, chatId: string, member: Session, role: "admin" | "member") {
  return api(`/api/chats/${chatId}/members/${uid(member)}/role`, { token: admin.credentials, method: "PUT", body: { role } });
}
async function chatOf(session: Session, chatId: string) {
  const response = await api(`/api/chats/${chatId}`, { token: session.credentials });
  expect(response.status).toBe(200);
  return Chat.parse(await response.json());
}
/** Every event the member can read, oldest first, through history pages. */
async function everything(session: Session, chatId: string): Promise<ChatEvent[]> {
  const events: ChatEvent[] = [];
  let after = 0;
  for (;;) {
    const page = await history(session, chatId, `?after=${after}&limit=3`);
    events.push(...page.events);
    if (!page.hasMore) return events;
    after = page.events.at(-1)!.seq;
  }
}
async function sendAll(session: Session, chatId: string, prefix: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) expect((await restSend(session, chatId, `${prefix}-${i}`, `${prefix} ${i}`)).status).toBe(201);
}
async function headOf(session: Session, chatId: string): Promise<number> {
  return (await history(session, chatId, "?limit=1")).headSeq;
}

describe("membership changes", () => {
  it("adds several accounts at once with one event, from which the new members see the chat", async () => {
    const [alice, bob, carol, dave] = await Promise.all([login(), login(), login(), login()]);
    const chatId = await createGroup(alice, [bob]);
    await sendAll(alice, chatId, "before", 2);
    const response = await addMembers(alice, chatId, [carol, dave, bob]);
    expect(response.status).toBe(201);
    const result = (await response.json()) as { seq: number; added: string[]; invited: string[]; alreadyMembers: string[] };
    expect(result).toEqual({ seq: 4, added: [uid(carol), uid(dave)], invited: [], alreadyMembers: [uid(bob)] });
    const events = await everything(carol, chatId);
    expect(events[0]).toMatchObject({ type: "member.added", seq: 4, actorId: uid(alice), members: [{ userId: uid(carol), role: "member" }, { userId: uid(dave), role: "member" }] });
    expect(events).toHaveLength(1);
    expect((await everything(bob, chatId)).map((e) => e.type)).toEqual(["chat.created", "message", "message", "member.added"]);
    expect((await chatOf(dave, chatId)).members.map((m) => m.userId)).toEqual([uid(alice), uid(bob), uid(carol), uid(dave)]);
  });

  it("cuts a removed member off at once on every device, and leaves them only their own period", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const bobsPhone = await login(bob.phone, "second phone");
    const chatId = await createGroup(alice, [bob]);
    await sendAll(alice, chatId, "m", 2);
    const [first, second, alices] = await Promise.all([connect(chatId, bob.credentials), connect(chatId, bobsPhone.credentials), connect(chatId, alice.credentials)]);

    const removal = await removeMember(alice, chatId, bob);
    expect(removal.status).toBe(200);
    const { seq } = (await removal.json()) as { seq: number };
    for (const socket of [first, second]) {
      expect(await socket.closeEvent()).toEqual({ code: CloseCode.notAMember, reason: "removed" });
      // the event that removed them is the last thing they got
      expect(socket.events().map((e) => e.type)).toEqual(["member.removed"]);
    }
    await alices.until(() => alices.events().some((e) => e.type === "member.removed"), "the removal");
    expect(alices.closed).toBeNull();

    await sendAll(alice, chatId, "after", 2);
    const readable = await everything(bob, chatId);
    expect(readable.map((e) => e.seq)).toEqual([1, 2, 3, 4]);
    expect(readable.at(-1)).toMatchObject({ type: "member.removed", seq, userId: uid(bob), actorId: uid(alice) });
    await expectError(await restSend(bob, chatId, "late", "hello?"), 403, "not_a_member");
    await expectError(await api(`/api/chats/${chatId}`, { token: bob.credentials }), 403, "not_a_member");
    const { socket } = await openSocket(chatId, bobsPhone.credentials);
    expect(await socket!.closeEvent()).toMatchObject({ code: CloseCode.notAMember });
  });

  it("shows a member who left and came back exactly their two periods, on history and on a resuming socket", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createGroup(alice, [bob]);
    await sendAll(alice, chatId, "one", 2); // 2, 3
    const left = (await (await leave(bob, chatId)).json()) as { seq: number }; // 4
    await sendAll(alice, chatId, "away", 3); // 5, 6, 7
    const back = (await (await addMembers(alice, chatId, [bob])).json()) as { seq: number }; // 8
    await sendAll(alice, chatId, "two", 2); // 9, 10
    expect([left.seq, back.seq]).toEqual([4, 8]);

    const expected = [1, 2, 3, 4, 8, 9, 10];
    expect((await everything(bob, chatId)).map((e) => e.seq)).toEqual(expected);
    // newest first, across the gap
    const latest = await history(bob, chatId, "?limit=4");
    expect(latest.events.map((e) => e.seq)).toEqual([4, 8, 9, 10]);
    expect(latest.hasMore).toBe(true);
    const older = await history(bob, chatId, "?before=4&limit=10");
    expect(older.events.map((e) => e.seq)).toEqual([1, 2, 3]);
    expect(older.hasMore).toBe(false);
    // a socket resuming from the start pages through the same events
    const socket = await connect(chatId, bob.credentials, 0);
    await socket.until(() => socket.frames.some((f) => f.type === "events" && !f.more), "catch-up");
    expect(socket.events().map((e) => e.seq)).toEqual(expected);
    // alice, a member throughout, sees everything
    expect((await everything(alice, chatId)).map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it("makes the longest-standing member admin when the last admin leaves", async () => {
    const [alice, bob, carol, dave] = await Promise.all([login(), login(), login(), login()]);
    const chatId = await createGroup(alice, [bob, carol]);
    await addMembers(alice, chatId, [dave]);
    const watcher = await connect(chatId, carol.credentials);
    expect((await leave(alice, chatId)).status).toBe(200);
    await watcher.until(() => watcher.events().length >= 2, "the leave and the promotion");
    expect(watcher.events()).toMatchObject([
      { type: "member.left", actorId: uid(alice) },
      { type: "member.role_changed", userId: uid(bob), role: "admin", reason: "last_admin_left" },
    ]);
    const chat = await chatOf(bob, chatId);
    expect(chat.members.map((m) => [m.userId, m.role])).toEqual([[uid(bob), "admin"], [uid(carol), "member"], [uid(dave), "member"]]);
    // the new admin can manage the group
    expect((await removeMember(bob, chatId, dave)).status).toBe(200);
  });

  it("promotes, demotes, renames and describes, each as an event", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    const chatId = await createGroup(alice, [bob]);
    expect((await setRole(alice, chatId, bob, "admin")).status).toBe(200);
    expect((await setRole(bob, chatId, alice, "member")).status).toBe(200);
    const renamed = await api(`/api/chats/${chatId}`, { token: bob.credentials, method: "PATCH", body: { name: "  Renamed ", description: "what we do" } });
    expect(renamed.status).toBe(200);
    expect(await chatOf(alice, chatId)).toMatchObject({ name: "Renamed", description: "what we do", members: [{ userId: uid(alice), role: "member" }, { userId: uid(bob), role: "admin" }] });
    expect((await everything(alice, chatId)).slice(1)).toMatchObject([
      { type: "member.role_changed", actorId: uid(alice), userId: uid(bob), role: "admin" },
      { type: "member.role_changed", actorId: uid(bob), userId: uid(alice), role: "member" },
      { type: "chat.updated", actorId: uid(bob), name: "Renamed", description: "what we do" },
    ]);
  });
});

describe("membership rights and bad requests", () => {
  it("refuses each with its code and changes nothing", async () => {
    const [alice, bob, carol, stranger] = await Promise.all([login(), login(), login(), login()]);
    const chatId = await createGroup(alice, [bob]);
    const direct = await createDirect(alice, carol);
    const head = await headOf(alice, chatId);
    const directHead = await headOf(alice, direct);

    // non-admins manage nothing
    await expectError(await addMembers(bob, chatId, [carol]), 403, "admins_only");
    await expectError(await removeMember(bob, chatId, alice), 403, "admins_only");
    await expectError(await setRole(bob, chatId, bob, "admin"), 403, "admins_only");
    await expectError(await api(`/api/chats/${chatId}`, { token: bob.credentials, method: "PATCH", body: { name: "mine" } }), 403, "admins_only");
    // a direct chat has no membership changes
    await expectError(await addMembers(alice, direct, [bob]), 400, "not_a_group");
    await expectError(await leave(alice, direct), 400, "not_a_group");
    await expectError(await removeMember(alice, direct, carol), 400, "not_a_group");
    // removing or promoting someone who is not a member; promoting twice; the last admin
    await expectError(await removeMember(alice, chatId, carol), 404, "member_not_found");
    await expectError(await setRole(alice, chatId, carol, "admin"), 404, "member_not_found");
    await expectError(await setRole(alice, chatId, alice, "admin"), 409, "no_change");
    await expectError(await setRole(alice, chatId, alice, "member"), 409, "last_admin");
    await expectError(await api(`/api/chats/${chatId}`, { token: alice.credentials, method: "PATCH", body: { name: "Team" } }), 409, "no_change");
    // acting on a chat one is not in
    await expectError(await addMembers(stranger, chatId, [carol]), 403, "not_a_member");
    await expectError(await leave(stranger, chatId), 403, "not_a_member");
    // malformed and made-up ids, bad bodies
    await expectError(await api(`/api/chats/${chatId}/members`, { token: alice.credentials, body: { userIds: ["u_nope"] } }), 400, "validation_failed");
    await expectError(await api(`/api/chats/${chatId}/members`, { token: alice.credentials, body: { userIds: [`u_${"A".repeat(32)}`] } }), 400, "invalid_member");
    await expectError(await api(`/api/chats/${chatId}/members`, { token: alice.credentials, body: { userIds: [] } }), 400, "validation_failed");
    await expectError(await api(`/api/chats/${chatId}/members/not-an-id`, { token: alice.credentials, method: "DELETE" }), 400, "validation_failed");
    await expectError(await api(`/api/chats/${chatId}/members/${uid(bob)}/role`, { token: alice.credentials, method: "PUT", body: { role: "owner" } }), 400, "validation_failed");
    await expectError(await api(`/api/chats/${chatId}`, { token: alice.credentials, method: "PATCH", body: {} }), 400, "validation_failed");

    expect(await headOf(alice, chatId)).toBe(head);
    expect(await headOf(alice, direct)).toBe(directHead);
    expect((await chatOf(alice, chatId)).members.map((m) => [m.userId, m.role])).toEqual([[uid(alice), "admin"], [uid(bob), "member"]]);
  });
});

describe("blocks", () => {
  it("stop a direct chat in both directions, and adding the blocker to a group", async () => {
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    const direct = await createDirect(alice, bob);
    expect((await restSend(bob, direct, "before", "hi")).status).toBe(201);

    expect((await api(`/api/blocks/${uid(bob)}`, { token: alice.credentials, method: "PUT" })).status).toBe(204);
    const listed = (await (await api("/api/blocks", { token: alice.credentials })).json()) as { blocked: { userId: string }[] };
    expect(listed.blocked.map((b) => b.userId)).toEqual([uid(bob)]);

    // the blocked user: no sends in the direct chat, no new direct chat, no adding the blocker
    await expectError(await restSend(bob, direct, "after", "hello?"), 403, "blocked");
    await expectError(await api("/api/chats", { token: bob.credentials, body: { kind: "direct", peerId: uid(alice) } }), 403, "blocked");
    const bobsGroup = await createGroup(bob, [carol]);
    await expectError(await addMembers(bob, bobsGroup, [alice, carol]), 403, "blocked");
    await expectError(await api("/api/chats", { token: bob.credentials, body: { kind: "group", name: "x", memberIds: [uid(alice)] } }), 403, "blocked");
    // the blocker cannot write to them either until unblocking
    await expectError(await restSend(alice, direct, "mine", "bye"), 403, "blocked");
    // a retry of a message stored before the block still gets its ack
    expect((await restSend(bob, direct, "before", "hi")).status).toBe(200);
    // the blocker may still add the blocked user to a group (the block is theirs to lift)
    const alicesGroup = await createGroup(alice, [carol]);
    expect((await addMembers(alice, alicesGroup, [bob])).status).toBe(201);

    expect((await api(`/api/blocks/${uid(bob)}`, { token: alice.credentials, method: "DELETE" })).status).toBe(204);
    expect((await restSend(bob, direct, "after", "hello?")).status).toBe(201);
    expect((await addMembers(bob, bobsGroup, [alice])).status).toBe(201);

    // and from the other side
    expect((await api(`/api/blocks/${uid(alice)}`, { token: bob.credentials, method: "PUT" })).status).toBe(204);
    await expectError(await restSend(alice, direct, "again", "hm"), 403, "blocked");
    await expectError(await restSend(bob, direct, "again", "hm"), 403, "blocked");
  });

  it("refuses blocking oneself, made-up and unknown accounts", async () => {
    const alice = await login();
    await expectError(await api(`/api/blocks/${uid(alice)}`, { token: alice.credentials, method: "PUT" }), 400, "invalid_member");
    await expectError(await api(`/api/blocks/u_${"B".repeat(32)}`, { token: alice.credentials, method: "PUT" }), 400, "invalid_member");
    await expectError(await api("/api/blocks/nope", { token: alice.credentials, method: "PUT" }), 400, "validation_failed");
    const listed = (await (await api("/api/blocks", { token: alice.credentials })).json()) as { blocked: unknown[] };
    expect(listed.blocked).toEqual([]);
  });
});

describe("who may add you to groups", () => {
  async function setGroupAdd(session: Session, groupAdd: string) {
    const response = await api("/api/me", { token: session.credentials, method: "PATCH", body: { groupAdd } });
    expect(response.status).toBe(200);
    expect(((await response.json()) as { groupAdd: string }).groupAdd).toBe(groupAdd);
  }
  async function invitations(session: Session) {
    return InvitationList.parse(await (await api("/api/invitations", { token: session.credentials })).json()).invitations;
  }

  it("turns an add into an invitation the user accepts or declines", async () => {
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    await setGroupAdd(bob, "nobody");
    await setGroupAdd(carol, "nobody");
    const chatId = await createGroup(alice, []);
    const added = (await (await addMembers(alice, chatId, [bob, carol])).json()) as { added: string[]; invited: string[] };
    expect(added).toMatchObject({ added: [], invited: [uid(bob), uid(carol)] });
    expect(await headOf(alice, chatId)).toBe(1); // nothing in the log yet
    expect(await invitations(bob)).toMatchObject([{ chatId, kind: "group", name: "Team", invitedBy: uid(alice) }]);

    const accepted = await api(`/api/invitations/${chatId}/accept`, { token: bob.credentials, method: "POST" });
    expect(accepted.status).toBe(201);
    expect((await everything(bob, chatId))[0]).toMatchObject({ type: "member.added", actorId: uid(bob), members: [{ userId: uid(bob) }] });
    expect(await invitations(bob)).toEqual([]);
    // used up: accepting again finds no invitation
    await expectError(await api(`/api/invitations/${chatId}/accept`, { token: bob.credentials, method: "POST" }), 404, "not_found");

    expect((await api(`/api/invitations/${chatId}/decline`, { token: carol.credentials, method: "POST" })).status).toBe(204);
    await expectError(await api(`/api/invitations/${chatId}/accept`, { token: carol.credentials, method: "POST" }), 404, "not_found");
    expect((await chatOf(alice, chatId)).members.map((m) => m.userId)).toEqual([uid(alice), uid(bob)]);
  });

  it("expire after 7 days through the account's alarm, listed or not", async () => {
    const [alice, bob] = await Promise.all([login(), login()]);
    await setGroupAdd(bob, "nobody");
    const chatId = await createGroup(alice, []);
    await addMembers(alice, chatId, [bob]);
    const bobs = env.USER.get(env.USER.idFromName(uid(bob)));
    const stored = () => runInDurableObject(bobs, (_instance, state) => state.storage.sql.exec<{ n: number }>("SELECT count(*) AS n FROM invitations").one().n);
    expect(await stored()).toBe(1);
    // the alarm is set for the expiry; running it early keeps a fresh invitation
    expect(await runDurableObjectAlarm(bobs)).toBe(true);
    expect(await stored()).toBe(1);
    await runInDurableObject(bobs, (_instance, state) => void state.storage.sql.exec("UPDATE invitations SET created_at = created_at - ?", Limits.invitationTtlMs + 1));
    expect(await runDurableObjectAlarm(bobs)).toBe(true);
    expect(await stored()).toBe(0);
    expect(await runDurableObjectAlarm(bobs)).toBe(false); // nothing left to expire
    await expectError(await api(`/api/invitations/${chatId}/accept`, { token: bob.credentials, method: "POST" }), 404, "not_found");
  });

  it("lets people with a direct chat add a user whose setting is contacts", async () => {
    const [alice, bob, carol] = await Promise.all([login(), login(), login()]);
    await setGroupAdd(bob, "contacts");
    await createDirect(alice, bob);
    const chatId = await createGroup(alice, [bob]);
    expect((await chatOf(bob, chatId)).members).toHaveLength(2);
    const carols = await createGroup(carol, []);
    expect(((await (await addMembers(carol, carols, [bob])).json()) as { invited: string[] }).invited).toEqual([uid(bob)]);
  });
});

describe("chat lists", () => {
  it("follow renames, new messages and a removal, newest activity first", async () => {
    // The lists follow the chat just after it answers: poll for what a client would see.
    const settled = { timeout: 5_000 };
    const [alice, bob] = await Promise.all([login(), login()]);
    const first = await createGroup(alice, [bob], "group", "First");
    const second = await createGroup(alice, [bob], "group", "Second");
    const list = async () => ChatList.parse(await (await api("/api/chats", { token: bob.credentials })).json()).chats;
    await expect.poll(async () => (await list()).map((c) => c.chatId), settled).toEqual([second, first]);
    await restSend(alice, first, "m1", "bump");
    await api(`/api/chats/${first}`, { token: alice.credentials, method: "PATCH", body: { name: "Renamed" } });
    await expect.poll(list, settled).toMatchObject([{ chatId: first, name: "Renamed", headSeq: 3, memberCount: 2, membership: "member" }, { chatId: second, headSeq: 1 }]);
    await removeMember(alice, first, bob);
    await restSend(alice, first, "m2", "after bob left");
    await expect.poll(async () => (await list())[0], settled).toMatchObject({ chatId: first, headSeq: 4, membership: "removed" });
  });
});
