import { z } from "zod";
import { UserId } from "./auth.ts";
import { ChatId, ClientChosenId } from "./chats.ts";

/**
 * Typing indicators: ephemeral, never stored. A client sends `typing` while the user
 * types (again every few seconds while they go on) and `paused` when they stop; the
 * other members' sockets and streams show it until `expiresInMs` passes without a
 * renewal, a `paused`, or a message from that user.
 */
export const TypingState = z.enum(["typing", "paused"]);
export type TypingState = z.infer<typeof TypingState>;

/**
 * Client -> server, chat socket. Answered with a TypingResult; a `typing` within
 * `Limits.typingIntervalMs` of the last one forwarded is not forwarded again.
 */
export const TypingFrame = z.strictObject({ type: z.literal("typing"), id: ClientChosenId, state: TypingState });
export type TypingFrame = z.infer<typeof TypingFrame>;

/** Client -> server, device stream: `typing` in one chat of the account. */
export const StreamTypingFrame = TypingFrame.extend({ chatId: ChatId }).strict();
export type StreamTypingFrame = z.infer<typeof StreamTypingFrame>;

/** The reply to `typing`: whether the other members were told (false: throttled, or nothing changed). */
export const TypingResult = z.object({ forwarded: z.boolean() });
export type TypingResult = z.infer<typeof TypingResult>;

/** Server -> client: a member of `chatId` is typing, or stopped. */
export const TypingNotice = z.object({
  type: z.literal("typing"),
  chatId: ChatId,
  userId: UserId,
  state: TypingState,
  /** Show it no longer than this (ms) unless renewed. */
  expiresInMs: z.number().int().nonnegative(),
});
export type TypingNotice = z.infer<typeof TypingNotice>;
