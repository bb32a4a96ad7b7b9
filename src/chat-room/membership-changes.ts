import { AppError } from "../lib/app-error.ts";
import {
  CloseCode,
  Limits,
  type AddMembersResult,
  type ChangeResult,
  type ChatEvent,
  type MemberRole,
  type UpdateChatRequest,
} from "../protocol/index.ts";
import { refuseAdds, type AddPolicy } from "./add-refusals.ts";
import type { EventLog } from "./event-log.ts";
import type { Membership } from "./membership.ts";
import type { Sessions } from "./sessions.ts";

export type MembershipChangeContext = {
  log: () => EventLog;
  membership: () => Membership;
  sessions: Sessions;
  /** After a change is written: the members' sockets get the events, their accounts the news. */
  changed: (events: ChatEvent[], now: number) => void;
};

const notAMember = () => new AppError("member_not_found", 404, "that user is not a member of this chat", { retryable: false });

/**
 * The rules of membership changes, each written as one event (or two) in the log in
 * one synchronous turn: rights are checked, the event appended, the periods updated,
 * and the change announced, with nothing awaited in between. A refused change writes
 * nothing.
 */
export class MembershipChanges {
  readonly #context: MembershipChangeContext;

  constructor(context: MembershipChangeContext) {
    this.#context = context;
  }

  get #membership(): Membership {
    return this.#context.membership();
  }

  get #log(): EventLog {
    return this.#context.log();
  }

  /**
   * Adds `candidates` as their accounts allowed (`policies`, asked beforehand), after
   * checking again, in this turn, the actor's rights and the group's capacity: other
   * requests ran while the accounts answered, so concurrent adds cannot pass the cap.
   * Returns who was added and who is to be invited.
   */
  add(actorId: string, requested: string[], candidates: string[], policies: AddPolicy[], now: number): AddMembersResult {
    const membership = this.#membership;
    membership.requireAdmin(actorId);
    refuseAdds(candidates, policies);
    const added = candidates.filter((userId, index) => policies[index] === "allow" && !membership.isMember(userId));
    const invited = candidates.filter((userId, index) => policies[index] === "invite" && !membership.isMember(userId));
    const changing = new Set([...added, ...invited]);
    const alreadyMembers = requested.filter((userId) => !changing.has(userId));
    if (membership.memberCount + added.length > Limits.maxGroupMembers) {
      throw new AppError("group_full", 409, `a group has at most ${Limits.maxGroupMembers} members`, { retryable: false });
    }
    if (membership.invitationCount() + invited.length > Limits.maxGroupMembers) {
      throw new AppError("group_full", 409, `a group has at most ${Limits.maxGroupMembers} pending invitations`, { retryable: false });
    }
    for (const userId of invited) membership.invite(userId, actorId, now);
    if (added.length === 0) return { added, invited, alreadyMembers };
    const members = added.map((userId) => ({ userId, role: "member" as const }));
    const event = this.#log.append({ type: "member.added", actorId, members }, now);
    membership.add(members, event.seq);
    this.#context.changed([event], now);
    return { seq: event.seq, added, invited, alreadyMembers };
  }

  /** An admin removes a member: their sockets get the event, then close; their account hears it. */
  remove(actorId: string, userId: string, now: number): ChangeResult {
    this.#membership.requireAdmin(actorId);
    if (userId === actorId) return this.leave(actorId, now);
    if (!this.#membership.isMember(userId)) throw notAMember();
    const event = this.#log.append({ type: "member.removed", actorId, userId }, now);
    this.#membership.end(userId, event.seq);
    this.#context.sessions.closeUser(userId, [event], CloseCode.notAMember, "removed");
    this.#context.changed([event], now);
    return { seq: event.seq };
  }

  /** A member leaves; if they were the last admin, the longest-standing member becomes one. */
  leave(userId: string, now: number): ChangeResult {
    const membership = this.#membership;
    membership.requireGroup();
    const member = membership.requireMember(userId);
    const left = this.#log.append({ type: "member.left", actorId: userId }, now);
    membership.end(userId, left.seq);
    this.#context.sessions.closeUser(userId, [left], CloseCode.notAMember, "left");
    const events: ChatEvent[] = [left];
    const successor = member.role === "admin" && membership.adminCount() === 0 ? membership.longestStanding() : undefined;
    if (successor) {
      events.push(this.#log.append({ type: "member.role_changed", actorId: userId, userId: successor.userId, role: "admin", reason: "last_admin_left" }, now));
      membership.setRole(successor.userId, "admin");
    }
    this.#context.changed(events, now);
    return { seq: left.seq };
  }

  /** An admin promotes or demotes a member. A group always keeps an admin. */
  setRole(actorId: string, userId: string, role: MemberRole, now: number): ChangeResult {
    const membership = this.#membership;
    membership.requireAdmin(actorId);
    if (!membership.isMember(userId)) throw notAMember();
    const target = membership.requireMember(userId);
    if (target.role === role) throw new AppError("no_change", 409, `already ${role === "admin" ? "an admin" : "a member"}`, { retryable: false });
    if (role === "member" && membership.adminCount() === 1) {
      throw new AppError("last_admin", 409, "the group's only admin cannot be demoted: promote someone first", { retryable: false });
    }
    const event = this.#log.append({ type: "member.role_changed", actorId, userId, role }, now);
    membership.setRole(userId, role);
    this.#context.changed([event], now);
    return { seq: event.seq };
  }

  /** An admin renames or describes the chat. */
  update(actorId: string, patch: UpdateChatRequest, now: number): ChangeResult {
    const membership = this.#membership;
    const chat = membership.requireChat();
    membership.requireAdmin(actorId);
    const changes: { name?: string; description?: string } = {};
    if (patch.name !== undefined && patch.name !== chat.name) changes.name = patch.name;
    if (patch.description !== undefined && patch.description !== chat.description) changes.description = patch.description;
    if (Object.keys(changes).length === 0) throw new AppError("no_change", 409, "the chat already has that name and description", { retryable: false });
    const event = this.#log.append({ type: "chat.updated", actorId, ...changes }, now);
    membership.update(changes);
    this.#context.changed([event], now);
    return { seq: event.seq };
  }

  /** An invited account accepts: it joins with its own `member.added` event. */
  acceptInvitation(userId: string, now: number): ChangeResult {
    const membership = this.#membership;
    membership.requireGroup();
    if (membership.isMember(userId)) throw new AppError("no_change", 409, "already a member", { retryable: false });
    const invitation = membership.takeInvitation(userId, now - Limits.invitationTtlMs);
    if (!invitation) throw new AppError("not_found", 404, "no such invitation", { retryable: false });
    if (membership.memberCount >= Limits.maxGroupMembers) {
      throw new AppError("group_full", 409, `a group has at most ${Limits.maxGroupMembers} members`, { retryable: false });
    }
    const members = [{ userId, role: "member" as const }];
    const event = this.#log.append({ type: "member.added", actorId: userId, members }, now);
    membership.add(members, event.seq);
    this.#context.changed([event], now);
    return { seq: event.seq };
  }
}
