import { z } from "zod";
import { Limits } from "./limits.ts";
import { DeviceId, UserId } from "./auth.ts";
import { Attachment } from "./media.ts";

/** A chat's position in its event log. The first event of every chat is seq 1. */
export const Seq = z.number().int().nonnegative();
export type Seq = z.infer<typeof Seq>;

export const ChatKind = z.enum(["direct", "group", "broadcast"]);
export type ChatKind = z.infer<typeof ChatKind>;

export const MemberRole = z.enum(["admin", "member"]);
export type MemberRole = z.infer<typeof MemberRole>;

const EventBase = z.object({
  seq: Seq,
  /** Server time the event was stored, ms since the epoch. */
  createdAt: z.number().int(),
});

/**
 * A message: text (`body`), files (`attachments`, with `body` as their caption), or
 * both. The server never reads `body`: it may be ciphertext.
 *
 * A message deleted for everyone stays in the log as a tombstone: the same event with
 * `deletedSeq` (the seq of its `message.deleted` event) and without body, attachments
 * or reply. So a device reading history or catching up from any cursor sees it gone.
 */
export const MessageEvent = EventBase.extend({
  type: z.literal("message"),
  messageId: z.string(),
  senderId: UserId,
  senderDeviceId: DeviceId,
  /** The sending device's idempotency key for this message. */
  clientId: z.string(),
  body: z.string().optional(),
  attachments: z.array(Attachment).optional(),
  replyToSeq: Seq.optional(),
  deletedSeq: Seq.optional(),
});
export type MessageEvent = z.infer<typeof MessageEvent>;

const MemberEntry = z.object({ userId: UserId, role: MemberRole });

/** Always seq 1: who created the chat, its kind and its first members. */
export const ChatCreatedEvent = EventBase.extend({
  type: z.literal("chat.created"),
  actorId: UserId,
  kind: ChatKind,
  name: z.string().max(Limits.maxChatNameLength),
  members: z.array(MemberEntry),
});
export type ChatCreatedEvent = z.infer<typeof ChatCreatedEvent>;

/**
 * People became members: each one's membership period starts at this event's seq, so
 * it is the first event they see. `actorId` is the admin who added them, or the
 * invited user who accepted (then `members` is that user alone).
 */
export const MemberAddedEvent = EventBase.extend({
  type: z.literal("member.added"),
  actorId: UserId,
  members: z.array(MemberEntry).min(1),
});
export type MemberAddedEvent = z.infer<typeof MemberAddedEvent>;

/** An admin removed `userId`: the last event of their period (they see it, then nothing). */
export const MemberRemovedEvent = EventBase.extend({
  type: z.literal("member.removed"),
  actorId: UserId,
  userId: UserId,
});
export type MemberRemovedEvent = z.infer<typeof MemberRemovedEvent>;

/** `actorId` left the chat: the last event of their period. */
export const MemberLeftEvent = EventBase.extend({
  type: z.literal("member.left"),
  actorId: UserId,
});
export type MemberLeftEvent = z.infer<typeof MemberLeftEvent>;

/**
 * `userId` is now `role`. `reason: "last_admin_left"` when the server promoted the
 * longest-standing member because the last admin left (`actorId` is the one who left).
 */
export const MemberRoleChangedEvent = EventBase.extend({
  type: z.literal("member.role_changed"),
  actorId: UserId,
  userId: UserId,
  role: MemberRole,
  reason: z.literal("last_admin_left").optional(),
});
export type MemberRoleChangedEvent = z.infer<typeof MemberRoleChangedEvent>;

/** An admin renamed or described the chat: the fields present are the new values. */
export const ChatUpdatedEvent = EventBase.extend({
  type: z.literal("chat.updated"),
  actorId: UserId,
  name: z.string().optional(),
  description: z.string().optional(),
});
export type ChatUpdatedEvent = z.infer<typeof ChatUpdatedEvent>;

/**
 * `actorId` deleted the message at `targetSeq` for everyone (its sender, within the
 * delete window, or an admin of a group): from here on that message is a tombstone.
 */
export const MessageDeletedEvent = EventBase.extend({
  type: z.literal("message.deleted"),
  actorId: UserId,
  targetSeq: Seq,
  /** The deleted message's sender (an admin may delete others' messages). */
  senderId: UserId,
});
export type MessageDeletedEvent = z.infer<typeof MessageDeletedEvent>;

/**
 * The event registry: every event type, once. Adding a type means a schema here, its
 * section in docs/protocol.md (a test checks) and a test that produces it. The log
 * stores messages in their own columns and every other type's fields as JSON, so
 * storage needs nothing per type.
 */
export const eventSchemas = [
  MessageEvent,
  ChatCreatedEvent,
  MemberAddedEvent,
  MemberRemovedEvent,
  MemberLeftEvent,
  MemberRoleChangedEvent,
  ChatUpdatedEvent,
  MessageDeletedEvent,
] as const;

/**
 * Everything that can happen in a chat, in one total order by `seq`. Later versions
 * add more types (deletes); clients skip types they do not know.
 */
export const ChatEvent = z.discriminatedUnion("type", eventSchemas);
export type ChatEvent = z.infer<typeof ChatEvent>;
export type ChatEventType = ChatEvent["type"];

/** Every event type the server writes. */
export const chatEventTypes: readonly ChatEventType[] = eventSchemas.map((schema) => schema.shape.type.value);

/**
 * What every event has, whatever its type: enough to keep the cursor moving over an
 * event type a newer server added. A client reads the envelope first, then the
 * event with ChatEvent, and skips (without a gap) what it does not know.
 */
export const EventEnvelope = z.looseObject({ type: z.string(), seq: Seq, createdAt: z.number().int() });
export type EventEnvelope = z.infer<typeof EventEnvelope>;
