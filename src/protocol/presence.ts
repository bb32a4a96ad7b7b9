import { z } from "zod";
import { UserId } from "./auth.ts";
import { ChatId, ClientChosenId } from "./chats.ts";
import { Limits } from "./limits.ts";

/**
 * Presence on the device stream (docs/protocol.md §8.6): whether someone is online and
 * when they last were. Only people who share a chat see each other's presence; the
 * watcher names the chat they share.
 */

/** Whether the app is on screen (`foreground`) or not; a stream starts in the foreground. */
export const AppState = z.enum(["foreground", "background"]);
export type AppState = z.infer<typeof AppState>;

/**
 * One account's presence. `online`: a device of the account has a stream in the
 * foreground whose last heartbeat is younger than twice the server's heartbeat
 * interval. `lastSeenAt` (ms): the last time it was online; only when offline, and
 * never when either side hides last seen or it was never online.
 */
export const Presence = z.object({
  userId: UserId,
  online: z.boolean(),
  lastSeenAt: z.number().int().nonnegative().optional(),
});
export type Presence = z.infer<typeof Presence>;

/** Someone to watch and the chat the watcher shares with them. */
export const PresenceWatch = z.strictObject({ userId: UserId, chatId: ChatId });
export type PresenceWatch = z.infer<typeof PresenceWatch>;

/** Client -> server: the app went to the foreground or the background (this stream only). */
export const PresenceStateFrame = z.strictObject({
  type: z.literal("presence.state"),
  id: ClientChosenId,
  state: AppState,
});
export type PresenceStateFrame = z.infer<typeof PresenceStateFrame>;

/** The reply to `presence.state`. */
export const PresenceStateResult = z.object({ state: AppState });
export type PresenceStateResult = z.infer<typeof PresenceStateResult>;

/**
 * Client -> server: the people on the device's screen. Replaces this stream's watch
 * list (an empty list unsubscribes) for `leaseMs`; send it again before then to keep
 * receiving `presence` frames.
 */
export const PresenceSubscribeFrame = z.strictObject({
  type: z.literal("presence.subscribe"),
  id: ClientChosenId,
  watch: z.array(PresenceWatch).max(Limits.maxPresenceWatches),
});
export type PresenceSubscribeFrame = z.infer<typeof PresenceSubscribeFrame>;

/** The reply to `presence.subscribe`: the presence of each allowed user now, and who was refused. */
export const PresenceSubscribeResult = z.object({
  presence: z.array(Presence),
  /** Listed users who share no such chat with the caller (or have no account, or blocked the caller, or are the caller). */
  refused: z.array(UserId),
  /** How long the subscription lasts without being sent again. */
  leaseMs: z.number().int().positive(),
});
export type PresenceSubscribeResult = z.infer<typeof PresenceSubscribeResult>;

/** Server -> client: a watched user's presence changed. */
export const PresenceFrame = z.object({ type: z.literal("presence"), presence: Presence });
export type PresenceFrame = z.infer<typeof PresenceFrame>;

/** GET /api/users/:userId/presence?chatId=... : the chat the caller shares with the user. */
export const PresenceQuery = z.strictObject({ chatId: ChatId });
export type PresenceQuery = z.infer<typeof PresenceQuery>;
