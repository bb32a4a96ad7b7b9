import { z } from "zod";
import { UserId } from "./auth.ts";
import { ChatId } from "./chats.ts";
import { Seq } from "./events.ts";

/**
 * Server -> push bridge (a webhook, not a socket frame): messages in `chatId` have
 * reached no device of `userId` for the configured delay (NOTIFY_AFTER_MS). One per
 * burst of such messages, never one per message, and never any message content:
 * who wrote last, how many, and when. `notificationId` stays the same across retries
 * of one notification, so a receiver can drop a repeat. Signed: see `WebhookHeaders`.
 */
export const UndeliveredWebhook = z.strictObject({
  type: z.literal("messages.undelivered"),
  notificationId: z.string().min(1).max(64),
  /** The recipient: the account to wake. */
  userId: UserId,
  chatId: ChatId,
  /** The sender of the latest undelivered message. */
  senderId: UserId,
  /** Messages from others that no device of the recipient has (at least 1). */
  count: z.number().int().min(1),
  /** The latest undelivered message's seq and creation time (ms since the epoch). */
  seq: Seq.min(1),
  at: z.number().int().nonnegative(),
  /** When this attempt was sent (ms since the epoch): the same as the timestamp header. */
  sentAt: z.number().int().nonnegative(),
});
export type UndeliveredWebhook = z.infer<typeof UndeliveredWebhook>;

/**
 * The headers of a webhook. The signature is `sha256=` and the lowercase hex
 * HMAC-SHA256 of the raw body, keyed with NOTIFY_WEBHOOK_SECRET; the body carries the
 * same time as the timestamp header (`sentAt`), so the signature covers it.
 */
export const WebhookHeaders = {
  signature: "X-Edgechat-Signature",
  timestamp: "X-Edgechat-Timestamp",
} as const;
