import { z } from "zod";
import { UserId } from "./auth.ts";
import { ChatId } from "./chats.ts";
import { ChatKind, MemberRole, Seq } from "./events.ts";
import { Limits } from "./limits.ts";
import { longText, nameText } from "./text.ts";

/** POST /api/chats/:chatId/members: add several accounts at once (admins). */
export const AddMembersRequest = z.strictObject({
  userIds: z.array(UserId).min(1).max(Limits.maxMembersPerAdd),
});
export type AddMembersRequest = z.infer<typeof AddMembersRequest>;

/**
 * The answer to an add. `added` became members with the event at `seq` (absent when
 * nobody was added); `invited` got an invitation instead (their `groupAdd` setting);
 * `alreadyMembers` were members already and nothing changed for them.
 */
export const AddMembersResult = z.object({
  seq: Seq.optional(),
  added: z.array(UserId),
  invited: z.array(UserId),
  alreadyMembers: z.array(UserId),
});
export type AddMembersResult = z.infer<typeof AddMembersResult>;

/** PUT /api/chats/:chatId/members/:userId/role: promote or demote (admins). */
export const SetRoleRequest = z.strictObject({ role: MemberRole });
export type SetRoleRequest = z.infer<typeof SetRoleRequest>;

/** PATCH /api/chats/:chatId: rename or describe (admins). */
export const UpdateChatRequest = z
  .strictObject({
    name: nameText(Limits.maxChatNameLength).optional(),
    description: longText(Limits.maxChatDescriptionLength).optional(),
  })
  .refine((patch) => patch.name !== undefined || patch.description !== undefined, { message: "give name or description" });
export type UpdateChatRequest = z.infer<typeof UpdateChatRequest>;

/** The answer to a membership change or chat update: the seq of the event it wrote. */
export const ChangeResult = z.object({ seq: Seq });
export type ChangeResult = z.infer<typeof ChangeResult>;

/** One entry of GET /api/invitations: a group waiting for this account's answer. */
export const Invitation = z.object({
  chatId: ChatId,
  kind: ChatKind.exclude(["direct"]),
  name: z.string(),
  invitedBy: UserId,
  createdAt: z.number().int(),
});
export type Invitation = z.infer<typeof Invitation>;

/** GET /api/invitations */
export const InvitationList = z.object({ invitations: z.array(Invitation) });
export type InvitationList = z.infer<typeof InvitationList>;

/** One entry of GET /api/blocks. */
export const BlockedUser = z.object({ userId: UserId, createdAt: z.number().int() });
export type BlockedUser = z.infer<typeof BlockedUser>;

/** GET /api/blocks */
export const BlockList = z.object({ blocked: z.array(BlockedUser) });
export type BlockList = z.infer<typeof BlockList>;
