import { z } from "zod";
import { Limits, bodyFitsLimit } from "./limits.ts";
import { UserId } from "./auth.ts";
import { ChatEvent, ChatKind, MemberRole, Seq } from "./events.ts";
import { longText, nameText, text } from "./text.ts";
import { Attachments, MediaKind } from "./media.ts";

/** Direct chat ids are derived from the pair (`d_`), group ids are random (`g_`). */
export const ChatId = z.string().regex(/^[dg]_[A-Za-z0-9_-]{22,43}$/, "not a chat id");
export type ChatId = z.infer<typeof ChatId>;

/** A client-chosen id: frame ids and message clientIds. Well-formed, compared exactly. */
export const ClientChosenId = text().min(1).max(Limits.maxIdLength);

/** Any well-formed text, stored and returned exactly as sent (never normalised). */
export const MessageBody = text()
  .min(1, "must not be empty")
  .refine(bodyFitsLimit, `must be at most ${Limits.maxBodyBytes} bytes of UTF-8`);

/** POST /api/chats */
export const CreateChatRequest = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("direct"), peerId: UserId }),
  z.strictObject({
    kind: z.enum(["group", "broadcast"]),
    name: nameText(Limits.maxChatNameLength),
    description: longText(Limits.maxChatDescriptionLength).optional(),
    /** The other initial members; the creator is added as admin. */
    memberIds: z.array(UserId).max(Limits.maxGroupMembers - 1).default([]),
  }),
]);
export type CreateChatRequest = z.infer<typeof CreateChatRequest>;

export const ChatMember = z.object({
  userId: UserId,
  role: MemberRole,
  /** The seq of the event that made them a member: they see events from there on. */
  joinedSeq: Seq,
});
export type ChatMember = z.infer<typeof ChatMember>;

/** GET /api/chats/:chatId, and 201/200 from POST /api/chats. */
export const Chat = z.object({
  chatId: ChatId,
  kind: ChatKind,
  name: z.string(),
  description: z.string(),
  createdBy: UserId,
  createdAt: z.number().int(),
  members: z.array(ChatMember),
  /** The seq of the chat's latest event. */
  headSeq: Seq,
});
export type Chat = z.infer<typeof Chat>;

/** Whether the account is in the chat: `member`, or how it stopped being one. */
export const ChatMembership = z.enum(["member", "left", "removed"]);
export type ChatMembership = z.infer<typeof ChatMembership>;

/**
 * The latest message a member can see, as a chat list shows it under the chat's name.
 * `body` is exactly as stored (the server never reads it: it may be ciphertext).
 */
export const LastMessage = z.object({
  seq: Seq,
  senderId: UserId,
  /** The text, or the caption of its files; absent for files without one and once deleted. */
  body: z.string().optional(),
  /** What the message carries, one kind per file (a list draws "Photo", "Document"). */
  attachments: z.array(MediaKind).optional(),
  /** The message was deleted for everyone: the list shows it as deleted. */
  deleted: z.literal(true).optional(),
  /**
   * This account deleted the message for itself ("delete for me"): the entry keeps no
   * content of it (no `body`, no `attachments`), on every device of the account.
   */
  hidden: z.literal(true).optional(),
  createdAt: z.number().int(),
});
export type LastMessage = z.infer<typeof LastMessage>;

/**
 * One entry of GET /api/chats: what a chat list draws. Kept by the account's own
 * object and brought up to date by the chat after every change (see the fan-out in
 * docs/architecture.md), so it may trail the chat by a moment, never go backwards.
 */
export const ChatSummary = z.object({
  chatId: ChatId,
  kind: ChatKind,
  /** The group name; for a direct chat, empty (clients show the peer's profile). */
  name: z.string(),
  /** For a direct chat, the other member. */
  peerId: UserId.optional(),
  /** When this account first got the chat in its list. */
  addedAt: z.number().int(),
  /** The chat's latest seq this account knows of (for a former member: the event that ended it). */
  headSeq: Seq,
  memberCount: z.number().int().nonnegative(),
  /** When the chat's latest event was stored (ms): the list's order, newest first. */
  lastActivityAt: z.number().int(),
  membership: ChatMembership,
  /** The latest message this account can see (for a former member: within its periods); absent when there is none. */
  lastMessage: LastMessage.optional(),
  /** How far this account has read (POST /api/chats/:chatId/read, or its own latest message); never moves back. */
  readSeq: Seq,
  /** Messages after `readSeq` up to `headSeq`, the account's own and membership events never included. */
  unreadCount: z.number().int().nonnegative(),
  /**
   * How far the account's own messages have gone, as in a `receipts` frame: those up to
   * `deliveredUpTo` are DELIVERED, up to `seenUpTo` SEEN, later ones SENT.
   */
  deliveredUpTo: Seq,
  seenUpTo: Seq,
  /** The account's own settings (PUT /api/chats/:chatId/settings), the same on every device. */
  pinned: z.boolean(),
  /** Notifications are muted until this time (ms); absent when not muted. A time past means not muted. */
  mutedUntil: z.number().int().nonnegative().optional(),
  archived: z.boolean(),
});
export type ChatSummary = z.infer<typeof ChatSummary>;

/**
 * What a chat tells a member's account: a ChatSummary without what only the account
 * knows (when it got the chat, and its own settings).
 */
export type ChatIndexUpdate = Omit<ChatSummary, "addedAt" | "pinned" | "mutedUntil" | "archived">;

/** POST /api/chats/:chatId/read: the caller has read up to `seq` (merged by max). */
export const MarkReadRequest = z.strictObject({ seq: Seq.min(1) });
export type MarkReadRequest = z.infer<typeof MarkReadRequest>;

/**
 * PUT /api/chats/:chatId/settings: the account's own settings for one chat, at least
 * one of them. `mutedUntil` is a time in ms (a far-future time mutes for good); null unmutes.
 */
export const ChatSettingsPatch = z
  .strictObject({
    pinned: z.boolean().optional(),
    mutedUntil: z.number().int().nonnegative().nullable().optional(),
    archived: z.boolean().optional(),
  })
  .refine((patch) => patch.pinned !== undefined || patch.mutedUntil !== undefined || patch.archived !== undefined, {
    message: "give pinned, mutedUntil or archived",
  });
export type ChatSettingsPatch = z.infer<typeof ChatSettingsPatch>;

/** A page size in a query string: digits, 1 to `max`, `fallback` when absent. */
function pageLimitParam(max: number, fallback: number) {
  return z.string().regex(/^\d{1,4}$/, "must be a number").transform(Number).pipe(z.number().int().min(1).max(max)).default(fallback);
}

/** Where the next page of GET /api/chats starts (`<lastActivityAt>.<chatId>`): opaque to clients. */
export const ChatListCursor = z.string().regex(/^\d{1,15}\.[dg]_[A-Za-z0-9_-]{22,43}$/, "not a chat list cursor");

/** GET /api/chats?limit=&cursor=&archived= */
export const ChatListQuery = z.strictObject({
  limit: pageLimitParam(Limits.maxChatListPageSize, Limits.defaultChatListPageSize),
  cursor: ChatListCursor.optional(),
  /** Only the archived chats (`true`) or only the others (`false`); absent: all. */
  archived: z.enum(["true", "false"]).transform((value) => value === "true").optional(),
});
export type ChatListQuery = z.infer<typeof ChatListQuery>;

/** A page of the caller's chats, newest first; `nextCursor` (when present) fetches the next page. */
export const ChatList = z.object({ chats: z.array(ChatSummary), nextCursor: ChatListCursor.optional() });
export type ChatList = z.infer<typeof ChatList>;

/**
 * The fields of a message to send: text, files uploaded to this chat (then `body` is
 * their caption), or both. The frames that carry them extend these fields, then check
 * `hasContent` (an object with a refinement cannot be extended).
 */
export const SendMessageFields = z.strictObject({
  clientId: ClientChosenId,
  body: MessageBody.optional(),
  attachments: Attachments.optional(),
  replyToSeq: Seq.min(1).optional(),
});

/** A message has text, files, or both. */
export function hasContent(message: { body?: string | undefined; attachments?: unknown[] | undefined }): boolean {
  return message.body !== undefined || message.attachments !== undefined;
}
export const contentRequired = { message: "give a body, attachments or both", path: ["body"] };

/** POST /api/chats/:chatId/messages (and the `send` frame's payload). */
export const SendMessageRequest = SendMessageFields.refine(hasContent, contentRequired);
export type SendMessageRequest = z.infer<typeof SendMessageRequest>;

/** The SENT acknowledgement. A retry of the same clientId returns the original. */
export const SendResult = z.object({
  seq: Seq,
  messageId: z.string(),
  createdAt: z.number().int(),
  /** True when this clientId had already been stored: nothing new was written. */
  duplicate: z.boolean(),
});
export type SendResult = z.infer<typeof SendResult>;

/** A seq in a query string: digits only (no empty value, sign, exponent or fraction). */
const optionalSeqParam = z
  .string()
  .regex(/^\d{1,15}$/, "must be a seq (digits)")
  .transform(Number)
  .optional();
/** GET /api/chats/:chatId/messages?before=&after=&limit= (before and after exclusive). */
export const HistoryQuery = z
  .strictObject({
    before: optionalSeqParam,
    after: optionalSeqParam,
    limit: pageLimitParam(Limits.maxPageSize, 50),
  })
  .refine((q) => q.before === undefined || q.after === undefined, {
    message: "give before or after, not both",
  });
export type HistoryQuery = z.infer<typeof HistoryQuery>;

/**
 * A page of the event log in ascending seq. With `after` (or nothing: the latest
 * page), `hasMore` says whether events newer than the page exist for `after`, older
 * ones for `before`.
 */
export const HistoryPage = z.object({
  events: z.array(ChatEvent),
  hasMore: z.boolean(),
  headSeq: Seq,
});
export type HistoryPage = z.infer<typeof HistoryPage>;
