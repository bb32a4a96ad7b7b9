import { z } from "zod";
import { DeviceId, UserId } from "./auth.ts";
import { ChatId, ChatSummary, ClientChosenId, SendMessageFields, contentRequired, hasContent } from "./chats.ts";
import { Seq } from "./events.ts";
import { Limits } from "./limits.ts";
import { ErrorFrame, EventsFrame, ReplyFrame, SyncFrame } from "./frames.ts";
import { ReceiptsFrame, StreamDeliveredFrame, StreamStatusFrame } from "./receipts.ts";
import { StreamTypingFrame, TypingNotice } from "./typing.ts";
import { PresenceFrame, PresenceStateFrame, PresenceSubscribeFrame } from "./presence.ts";
import { HiddenFrame } from "./deletes.ts";

/**
 * Frames of the device stream (GET /chat): one socket per device that carries every
 * chat of the account. The heartbeat, the `reply`, `error` and `events` frames are
 * the chat socket's (frames.ts); these are the stream's own.
 */

/**
 * Client -> server, first: where the device is in each chat it knows (`{chatId:
 * lastSeq}`, none for a new device). The reply says what follows; the server then
 * sends the catch-up (pages of `events`, in batches ended by `catching_up`), then
 * `synced`, then live events of every chat. Nothing but replies before this frame.
 */
export const ResumeFrame = z.strictObject({
  type: z.literal("resume"),
  id: ClientChosenId,
  cursors: z
    .record(ChatId, Seq)
    .refine((cursors) => Object.keys(cursors).length <= Limits.maxStreamCursors, `at most ${Limits.maxStreamCursors} cursors`),
  /**
   * The latest `at` of a `receipts` frame this device saw: the chats whose receipts
   * moved after it get a `receipts` frame before the catch-up. Absent: none are sent
   * (a device that lists no chats learns them from each chat's entry).
   */
  receiptsSince: z.number().int().nonnegative().optional(),
  /**
   * The latest `hiddenNo` this device has seen (`hidden` frames): the account's hidden
   * messages after it follow in `hidden` frames. Absent: none are sent.
   */
  hiddenSince: z.number().int().nonnegative().optional(),
});
export type ResumeFrame = z.infer<typeof ResumeFrame>;

/** The reply to `resume`. */
export const ResumeResult = z.object({
  /** Chats with events after the device's cursor: their pages follow. */
  behind: z.number().int().nonnegative(),
  /** Chats the device did not list, each announced by a `chat` frame. */
  announced: z.number().int().nonnegative(),
  /** Listed chats this account never had: the client may forget them. */
  unknownChats: z.array(ChatId),
});
export type ResumeResult = z.infer<typeof ResumeResult>;

/** Client -> server: send a message to one of the account's chats (same ack as the chat socket's `send`). */
export const StreamSendFrame = SendMessageFields.extend({
  type: z.literal("send"),
  id: ClientChosenId,
  chatId: ChatId,
}).refine(hasContent, contentRequired);
export type StreamSendFrame = z.infer<typeof StreamSendFrame>;

/** Client -> server: the user has read `chatId` up to `seq` (clears its unread count on every device). */
export const StreamReadFrame = z.strictObject({
  type: z.literal("read"),
  id: ClientChosenId,
  chatId: ChatId,
  seq: Seq.min(1),
});
export type StreamReadFrame = z.infer<typeof StreamReadFrame>;

/** `sync` on the stream: "the last batch is processed, send the next" (answered with the chats still behind). */
export const StreamClientFrame = z.discriminatedUnion("type", [
  ResumeFrame,
  SyncFrame,
  StreamSendFrame,
  StreamReadFrame,
  StreamDeliveredFrame,
  StreamStatusFrame,
  StreamTypingFrame,
  PresenceStateFrame,
  PresenceSubscribeFrame,
]);
export type StreamClientFrame = z.infer<typeof StreamClientFrame>;

/** The reply to a stream `sync`. */
export const StreamSyncResult = z.object({ behind: z.number().int().nonnegative() });
export type StreamSyncResult = z.infer<typeof StreamSyncResult>;

/** Server -> client, first frame on a stream. */
export const StreamReadyFrame = z.object({
  type: z.literal("stream.ready"),
  userId: UserId,
  deviceId: DeviceId,
  /**
   * The server's heartbeat interval (ms): send `ping` at least this often, since a
   * stream silent for twice this long counts as offline for presence.
   */
  heartbeatMs: z.number().int().positive().optional(),
});
export type StreamReadyFrame = z.infer<typeof StreamReadyFrame>;

/**
 * Server -> client: a chat's list entry, when the device first learns of the chat
 * (a chat it did not list, a new chat, a group it was added to) and whenever the entry
 * changes (renamed, members, read on another device, settings, left or removed). For
 * a chat of more than `Limits.maxStreamedChatMembers` members it is also the only
 * news of new events: its `headSeq` past the device's cursor means "fetch history".
 */
export const ChatFrame = z.object({ type: z.literal("chat"), chat: ChatSummary });
export type ChatFrame = z.infer<typeof ChatFrame>;

/** Server -> client: a catch-up batch ended; send `sync` for the next. */
export const CatchingUpFrame = z.object({ type: z.literal("catching_up"), behind: z.number().int().positive() });
export type CatchingUpFrame = z.infer<typeof CatchingUpFrame>;

/** Server -> client: the catch-up is complete; from here every chat's events come live. */
export const SyncedFrame = z.object({ type: z.literal("synced") });
export type SyncedFrame = z.infer<typeof SyncedFrame>;

/** Everything a device stream sends: its own frames, and the chat socket's replies, errors and events. */
export const StreamServerFrame = z.union([
  StreamReadyFrame,
  ChatFrame,
  CatchingUpFrame,
  SyncedFrame,
  PresenceFrame,
  ReplyFrame,
  ErrorFrame,
  EventsFrame,
  ReceiptsFrame,
  TypingNotice,
  HiddenFrame,
]);
export type StreamServerFrame = z.infer<typeof StreamServerFrame>;
