import { z } from "zod";
import { Limits } from "./limits.ts";
import { DeviceId, UserId } from "./auth.ts";

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

/** A message. The server never reads `body`: it may be ciphertext. */
export const MessageEvent = EventBase.extend({
  type: z.literal("message"),
  messageId: z.string(),
  senderId: UserId,
  senderDeviceId: DeviceId,
  /** The sending device's idempotency key for this message. */
  clientId: z.string(),
  body: z.string(),
  replyToSeq: Seq.optional(),
});
export type MessageEvent = z.infer<typeof MessageEvent>;

/** Always seq 1: who created the chat, its kind and its first members. */
export const ChatCreatedEvent = EventBase.extend({
  type: z.literal("chat.created"),
  actorId: UserId,
  kind: ChatKind,
  name: z.string().max(Limits.maxChatNameLength),
  members: z.array(z.object({ userId: UserId, role: MemberRole })),
});
export type ChatCreatedEvent = z.infer<typeof ChatCreatedEvent>;

/**
 * Everything that can happen in a chat, in one total order by `seq`. Later versions
 * add deletes, membership changes and renames; clients skip types they do not know.
 */
export const ChatEvent = z.discriminatedUnion("type", [MessageEvent, ChatCreatedEvent]);
export type ChatEvent = z.infer<typeof ChatEvent>;

/**
 * What every event has, whatever its type: enough to keep the cursor moving over an
 * event type a newer server added. A client reads the envelope first, then the
 * event with ChatEvent, and skips (without a gap) what it does not know.
 */
export const EventEnvelope = z.looseObject({ type: z.string(), seq: Seq, createdAt: z.number().int() });
export type EventEnvelope = z.infer<typeof EventEnvelope>;
