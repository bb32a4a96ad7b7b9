import { z } from "zod";
import { DeviceId, UserId } from "./auth.ts";
import { ChatId, ClientChosenId, SendMessageFields, contentRequired, hasContent } from "./chats.ts";
import { ErrorBody } from "./errors.ts";
import { ChatEvent, EventEnvelope, MemberRole, Seq } from "./events.ts";
import { DeleteFrame } from "./deletes.ts";
import { DeliveredFrame, ReadFrame, ReceiptsFrame, StatusFrame } from "./receipts.ts";
import { TypingFrame, TypingNotice } from "./typing.ts";

/**
 * Frames on a chat socket (GET /chat/:chatId). Text frames of JSON, except the
 * heartbeat: the client sends the literal text `ping` and gets `pong`, answered
 * without waking the chat's object.
 */
export const Heartbeat = { request: "ping", response: "pong" } as const;

/** Client -> server: store a message. Answered by a reply with a SendResult. */
export const SendFrame = SendMessageFields.extend({
  type: z.literal("send"),
  id: ClientChosenId,
}).refine(hasContent, contentRequired);
export type SendFrame = z.infer<typeof SendFrame>;

/**
 * Client -> server: "I have processed the catch-up page, send the next one". Sent
 * after each `events` frame with `more: true`. The server sends the next page, then
 * the reply with the socket's new cursor. On a live socket it sends nothing but the
 * reply (cursor = head).
 */
export const SyncFrame = z.strictObject({ type: z.literal("sync"), id: ClientChosenId });
export type SyncFrame = z.infer<typeof SyncFrame>;

export const ClientFrame = z.discriminatedUnion("type", [SendFrame, SyncFrame, DeliveredFrame, ReadFrame, StatusFrame, TypingFrame, DeleteFrame]);
export type ClientFrame = z.infer<typeof ClientFrame>;

/** Server -> client: the answer to the client frame with the same `id`. */
export const ReplyFrame = z.discriminatedUnion("ok", [
  z.object({ type: z.literal("reply"), id: z.string(), ok: z.literal(true), result: z.unknown() }),
  z.object({ type: z.literal("reply"), id: z.string(), ok: z.literal(false), error: ErrorBody }),
]);
export type ReplyFrame = z.infer<typeof ReplyFrame>;

/** Result of a `sync` reply: where the socket's cursor now is. */
export const SyncResult = z.object({ cursor: Seq });
export type SyncResult = z.infer<typeof SyncResult>;

/** Server -> client, first frame on every socket. */
export const ReadyFrame = z.object({
  type: z.literal("ready"),
  chatId: ChatId,
  userId: UserId,
  deviceId: DeviceId,
  role: MemberRole,
  /** The chat's latest seq when the socket opened. */
  headSeq: Seq,
  /** True when the socket opened with `?after=` below headSeq: pages follow. */
  catchingUp: z.boolean(),
  /** How far the user's own messages have gone (as in a `receipts` frame), as the socket opened. */
  deliveredUpTo: Seq,
  seenUpTo: Seq,
});
export type ReadyFrame = z.infer<typeof ReadyFrame>;

/**
 * Server -> client: events in ascending seq, with no gap after the socket's cursor.
 * During catch-up, `more: true` means another page waits for a `sync` frame; no live
 * event is pushed before the page with `more: false`.
 */
export const EventsFrame = z.object({
  type: z.literal("events"),
  chatId: ChatId,
  events: z.array(ChatEvent),
  more: z.boolean(),
});
export type EventsFrame = z.infer<typeof EventsFrame>;

/** An `events` frame read leniently: events this client version does not know still parse. */
export const EventsFrameEnvelope = EventsFrame.extend({ events: z.array(EventEnvelope) });
export type EventsFrameEnvelope = z.infer<typeof EventsFrameEnvelope>;

/** Server -> client: a frame that could not be answered by id (bad JSON, binary, no id). */
export const ErrorFrame = z.object({ type: z.literal("error"), error: ErrorBody });
export type ErrorFrame = z.infer<typeof ErrorFrame>;

export const ServerFrame = z.union([ReplyFrame, ReadyFrame, EventsFrame, ErrorFrame, ReceiptsFrame, TypingNotice]);
export type ServerFrame = z.infer<typeof ServerFrame>;

