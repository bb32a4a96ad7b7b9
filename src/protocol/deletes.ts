import { z } from "zod";
import { ChatId, ClientChosenId } from "./chats.ts";
import { Seq } from "./events.ts";
import { Limits } from "./limits.ts";

/**
 * Deleting messages. For everyone: the message becomes a tombstone for every member
 * and a `message.deleted` event enters the chat's log. For me: the message is hidden
 * for the caller's account only, on all its devices (`hidden` frames, GET /api/me/hidden).
 */
export const DeleteScope = z.enum(["everyone", "me"]);
export type DeleteScope = z.infer<typeof DeleteScope>;

/** Chat socket, client -> server: delete the message at `seq`. */
export const DeleteFrame = z.strictObject({
  type: z.literal("delete"),
  id: ClientChosenId,
  seq: Seq.min(1),
  for: DeleteScope,
});
export type DeleteFrame = z.infer<typeof DeleteFrame>;

/** Device stream, client -> server: the same, naming the chat. */
export const StreamDeleteFrame = DeleteFrame.extend({ chatId: ChatId });
export type StreamDeleteFrame = z.infer<typeof StreamDeleteFrame>;

/** DELETE /api/chats/:chatId/messages/:seq?for=everyone|me */
export const DeleteQuery = z.strictObject({ for: DeleteScope });
export type DeleteQuery = z.infer<typeof DeleteQuery>;

/** The answer to a delete for everyone. Deleting again answers the same, with `duplicate: true`. */
export const DeletedForEveryone = z.object({
  for: z.literal("everyone"),
  chatId: ChatId,
  seq: Seq,
  /** The seq of the `message.deleted` event. */
  deletedSeq: Seq,
  duplicate: z.boolean(),
});
export type DeletedForEveryone = z.infer<typeof DeletedForEveryone>;

/** One message an account hid for itself, numbered by the account (`hiddenNo` 1, 2, 3…). */
export const HiddenMessage = z.object({
  hiddenNo: z.number().int().positive(),
  chatId: ChatId,
  seq: Seq,
  hiddenAt: z.number().int(),
});
export type HiddenMessage = z.infer<typeof HiddenMessage>;

/** The answer to a delete for me. Hiding again answers the same entry, with `duplicate: true`. */
export const DeletedForMe = HiddenMessage.extend({ for: z.literal("me"), duplicate: z.boolean() });
export type DeletedForMe = z.infer<typeof DeletedForMe>;

export const DeleteResult = z.discriminatedUnion("for", [DeletedForEveryone, DeletedForMe]);
export type DeleteResult = z.infer<typeof DeleteResult>;

/**
 * Device stream, server -> client: messages the account hid, in `hiddenNo` order. Sent
 * live to every stream of the account when a device hides one (no `after`), and after
 * `resume` for those after the device's `hiddenSince`: pages, `more: true` until the
 * last, one per `sync`, each with `after`, the hiddenNo it continues from (the page
 * holds every entry after it up to its last). No live frame reaches a stream before
 * its last page: the pages hold what was hidden meanwhile. Only a page with `after`
 * may move a device's hidden cursor over a gap; a live entry moves it only when it is
 * the next number.
 */
export const HiddenFrame = z.object({
  type: z.literal("hidden"),
  entries: z.array(HiddenMessage).max(Limits.maxHiddenPageSize),
  more: z.boolean(),
  after: z.number().int().nonnegative().optional(),
});
export type HiddenFrame = z.infer<typeof HiddenFrame>;

/** GET /api/me/hidden?after=&limit= */
export const HiddenQuery = z.strictObject({
  after: z.string().regex(/^\d{1,15}$/, "must be a number").transform(Number).default(0),
  limit: z
    .string()
    .regex(/^\d{1,4}$/, "must be a number")
    .transform(Number)
    .pipe(z.number().int().min(1).max(Limits.maxHiddenPageSize))
    .default(Limits.maxHiddenPageSize),
});
export type HiddenQuery = z.infer<typeof HiddenQuery>;

/** A page of GET /api/me/hidden: entries after `after`, and the account's latest `hiddenNo`. */
export const HiddenPage = z.object({
  entries: z.array(HiddenMessage),
  hasMore: z.boolean(),
  headHiddenNo: z.number().int().nonnegative(),
});
export type HiddenPage = z.infer<typeof HiddenPage>;
