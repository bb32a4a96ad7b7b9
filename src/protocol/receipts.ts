import { z } from "zod";
import { UserId } from "./auth.ts";
import { ChatId, ClientChosenId } from "./chats.ts";
import { Seq } from "./events.ts";

/**
 * Message status (SENT / DELIVERED / SEEN) as watermarks. Each member of a chat has a
 * delivered-up-to and a seen-up-to seq, merged by max: a report below the watermark,
 * repeated or from another device changes nothing, and SEEN implies DELIVERED. A
 * message is SENT once stored (the ack), DELIVERED once every other current member
 * whose period contains it has it on a device, SEEN once every such member read it.
 */
export const MessageStatusName = z.enum(["sent", "delivered", "seen"]);
export type MessageStatusName = z.infer<typeof MessageStatusName>;

/**
 * Client -> server, chat socket: a device of the user received the chat's events up
 * to `seq` (by any path). The SDK sends it by itself, at most every 250 ms per chat.
 */
export const DeliveredFrame = z.strictObject({ type: z.literal("delivered"), id: ClientChosenId, seq: Seq.min(1) });
export type DeliveredFrame = z.infer<typeof DeliveredFrame>;

/** Client -> server, chat socket: the user read the chat up to `seq` (SEEN; the same as POST /api/chats/:chatId/read). */
export const ReadFrame = z.strictObject({ type: z.literal("read"), id: ClientChosenId, seq: Seq.min(1) });
export type ReadFrame = z.infer<typeof ReadFrame>;

/** Client -> server, chat socket: the status of one of the user's own messages (checkLatestStatusOfMessage). */
export const StatusFrame = z.strictObject({ type: z.literal("status"), id: ClientChosenId, seq: Seq.min(1) });
export type StatusFrame = z.infer<typeof StatusFrame>;

/** Client -> server, device stream: `delivered` for one chat of the account. */
export const StreamDeliveredFrame = DeliveredFrame.extend({ chatId: ChatId }).strict();
export type StreamDeliveredFrame = z.infer<typeof StreamDeliveredFrame>;

/** Client -> server, device stream: `status` of a message in one chat of the account. */
export const StreamStatusFrame = StatusFrame.extend({ chatId: ChatId }).strict();
export type StreamStatusFrame = z.infer<typeof StreamStatusFrame>;

/** The `:seq` of GET /api/chats/:chatId/messages/:seq/status. */
export const MessageSeqParam = z.string().regex(/^\d{1,15}$/, "must be a seq").transform(Number).pipe(Seq.min(1));

/** POST /api/chats/:chatId/delivered: a device of the caller has the chat up to `seq`. */
export const DeliveredRequest = z.strictObject({ seq: Seq.min(1) });
export type DeliveredRequest = z.infer<typeof DeliveredRequest>;

/**
 * The reporter's own watermarks after a `delivered` (or `read` on a chat socket): where
 * they are now, the report merged in. A report below them, or before the user's
 * period began, leaves them as they were.
 */
export const ReceiptResult = z.object({ chatId: ChatId, deliveredSeq: Seq, seenSeq: Seq });
export type ReceiptResult = z.infer<typeof ReceiptResult>;

/**
 * Server -> client: how far the user's own messages in `chatId` have gone. Every
 * message of the user with `seq <= deliveredUpTo` is DELIVERED, with `seq <= seenUpTo`
 * SEEN (seenUpTo <= deliveredUpTo); the rest are SENT. One frame moves any number of
 * messages; the values never go down. `at` is the server time of the latest change
 * (a device stream resumes with the latest `at` it saw, see `resume`).
 */
export const ReceiptsFrame = z.object({
  type: z.literal("receipts"),
  chatId: ChatId,
  deliveredUpTo: Seq,
  seenUpTo: Seq,
  at: z.number().int().nonnegative(),
});
export type ReceiptsFrame = z.infer<typeof ReceiptsFrame>;

/** One recipient of a message in the per-member detail: when it reached them and when they read it (ms), null if not yet. */
export const MemberReceipt = z.object({
  userId: UserId,
  deliveredAt: z.number().int().nullable(),
  seenAt: z.number().int().nullable(),
});
export type MemberReceipt = z.infer<typeof MemberReceipt>;

/**
 * The answer to `status` (frame) and GET /api/chats/:chatId/messages/:seq/status:
 * the aggregate over the recipients (the other current members whose period contains
 * the message), their counts, and in chats of up to `Limits.maxReceiptDetailMembers`
 * members the detail per recipient. Times are those of the watermark advance that
 * covered the message; see docs/protocol.md for how long they stay exact.
 */
export const MessageStatus = z.object({
  chatId: ChatId,
  seq: Seq,
  status: MessageStatusName,
  recipients: z.number().int().nonnegative(),
  delivered: z.number().int().nonnegative(),
  seen: z.number().int().nonnegative(),
  members: z.array(MemberReceipt).optional(),
});
export type MessageStatus = z.infer<typeof MessageStatus>;
