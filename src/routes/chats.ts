import { Hono } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { AppError } from "../lib/app-error.ts";
import { configFrom } from "../lib/config.ts";
import { hmacSha256 } from "../lib/crypto.ts";
import { isMintedId, mintId, requireMintedChatId } from "../lib/minted-id.ts";
import { unwrap } from "../lib/result.ts";
import { chatRoomObject, userObject } from "../lib/stubs.ts";
import { jsonBody, parseWith, queryParams } from "../lib/validate.ts";
import { requireAuth } from "../middleware/auth.ts";
import {
  AddMembersRequest,
  ChatId,
  ChatListQuery,
  ChatSettingsPatch,
  CreateChatRequest,
  HistoryQuery,
  MarkReadRequest,
  DeliveredRequest,
  MessageSeqParam,
  type MessageStatus,
  type ReceiptResult,
  SendMessageRequest,
  SetRoleRequest,
  UpdateChatRequest,
  UserId,
  type AddMembersResult,
  type ChangeResult,
  type ChatList,
  type ChatSummary,
} from "../protocol/index.ts";
import { refuseAdds } from "../chat-room/add-refusals.ts";
import { enforceRateLimit } from "../middleware/rate-limit.ts";
import type { CreateChatInput } from "../chat-room/chat-room.ts";

/** Chats: creation, the caller's list (read positions and settings), details, history and the REST send. */
export const chatRoutes = new Hono<AppEnv>()
  .use(requireAuth)
  .post("/", async (c) => {
    const { userId } = c.get("caller");
    // Per account: creating chats in bulk (each adding people without asking) is abuse.
    await enforceRateLimit(c.env.CHAT_CREATE_LIMITER, userId);
    const request = await jsonBody(c, CreateChatRequest);
    const input = await creationInput(c.env, userId, request);
    const { chat, created } = unwrap(await chatRoomObject(c.env, input.chatId).create(input));
    return c.json(chat, created ? 201 : 200);
  })
  .get("/", async (c) => {
    const query = queryParams(c, ChatListQuery);
    const body: ChatList = await userObject(c.env, c.get("caller").userId).listChats(query);
    return c.json(body);
  })
  .post("/:chatId/read", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const { seq } = await jsonBody(c, MarkReadRequest);
    // Through the account's own object: it stores the entry and syncs the account's other devices.
    const summary: ChatSummary = unwrap(await userObject(c.env, c.get("caller").userId).markRead(chatId, seq));
    return c.json(summary);
  })
  .post("/:chatId/delivered", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const { seq } = await jsonBody(c, DeliveredRequest);
    const result: ReceiptResult = unwrap(await chatRoomObject(c.env, chatId).reportDelivered(c.get("caller").userId, seq));
    return c.json(result);
  })
  .get("/:chatId/messages/:seq/status", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const seq = parseWith(MessageSeqParam, c.req.param("seq"));
    const status: MessageStatus = unwrap(await chatRoomObject(c.env, chatId).messageStatus(c.get("caller").userId, seq));
    return c.json(status);
  })
  .put("/:chatId/settings", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const patch = await jsonBody(c, ChatSettingsPatch);
    const summary: ChatSummary = unwrap(await userObject(c.env, c.get("caller").userId).updateChatSettings(chatId, patch));
    return c.json(summary);
  })
  .get("/:chatId", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    return c.json(unwrap(await chatRoomObject(c.env, chatId).getChat(c.get("caller").userId)));
  })
  .get("/:chatId/messages", async (c) => {
    // Per account: each page is bounded, and so is how many pages a minute one account reads.
    await enforceRateLimit(c.env.HISTORY_LIMITER, c.get("caller").userId);
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const query = queryParams(c, HistoryQuery);
    // Already the JSON text of a HistoryPage (serialized once, in the chat's object).
    const page = unwrap(await chatRoomObject(c.env, chatId).history(c.get("caller").userId, query));
    return c.body(page, 200, { "content-type": "application/json" });
  })
  .post("/:chatId/messages", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const input = await jsonBody(c, SendMessageRequest);
    const result = unwrap(await chatRoomObject(c.env, chatId).send(c.get("caller"), input));
    return c.json(result, result.duplicate ? 200 : 201);
  })
  .patch("/:chatId", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const patch = await jsonBody(c, UpdateChatRequest);
    const result: ChangeResult = unwrap(await chatRoomObject(c.env, chatId).update(c.get("caller").userId, patch));
    return c.json(result);
  })
  .post("/:chatId/members", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const { userIds } = await jsonBody(c, AddMembersRequest);
    await requireMintedUserIds(c.env, userIds);
    const result: AddMembersResult = unwrap(await chatRoomObject(c.env, chatId).addMembers(c.get("caller").userId, userIds));
    return c.json(result, result.added.length > 0 ? 201 : 200);
  })
  .delete("/:chatId/members/:userId", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const userId = await memberIdParam(c.env, c.req.param("userId"));
    const result: ChangeResult = unwrap(await chatRoomObject(c.env, chatId).removeMember(c.get("caller").userId, userId));
    return c.json(result);
  })
  .put("/:chatId/members/:userId/role", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const userId = await memberIdParam(c.env, c.req.param("userId"));
    const { role } = await jsonBody(c, SetRoleRequest);
    const result: ChangeResult = unwrap(await chatRoomObject(c.env, chatId).setRole(c.get("caller").userId, userId, role));
    return c.json(result);
  })
  .post("/:chatId/leave", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const result: ChangeResult = unwrap(await chatRoomObject(c.env, chatId).leave(c.get("caller").userId));
    return c.json(result);
  });

/** A user id from the path: malformed is 400 `validation_failed`, one never minted 400 `invalid_member`. */
export async function memberIdParam(env: Env, raw: string | undefined): Promise<string> {
  const userId = parseWith(UserId, raw);
  await requireMintedUserIds(env, [userId]);
  return userId;
}

async function creationInput(env: Env, creatorId: string, request: CreateChatRequest): Promise<CreateChatInput> {
  const secret = configFrom(env).hmacSecret;
  if (request.kind === "direct") {
    if (request.peerId === creatorId) throw new AppError("invalid_member", 400, "a direct chat needs another user", { retryable: false });
    await requireMintedUserIds(env, [request.peerId]);
    const [policy, blockingPeer] = await Promise.all([
      userObject(env, request.peerId).addPolicy(creatorId),
      userObject(env, creatorId).isBlocking(request.peerId),
    ]);
    refuseAdds([request.peerId], [policy]);
    if (blockingPeer) throw new AppError("blocked", 403, "you blocked this user: unblock them first", { retryable: false });
    return {
      chatId: await directChatId(secret, creatorId, request.peerId),
      kind: "direct",
      name: "",
      description: "",
      creatorId,
      memberIds: [request.peerId],
      inviteIds: [],
    };
  }
  const candidates = [...new Set(request.memberIds)].filter((id) => id !== creatorId);
  await requireMintedUserIds(env, candidates);
  // Each account says whether this creator may add it (or must invite it instead).
  const policies = await Promise.all(candidates.map((id) => userObject(env, id).addPolicy(creatorId)));
  refuseAdds(candidates, policies);
  return {
    chatId: await mintId(secret, "g"),
    kind: request.kind,
    name: request.name,
    description: request.description ?? "",
    creatorId,
    memberIds: candidates.filter((_, index) => policies[index] === "allow"),
    inviteIds: candidates.filter((_, index) => policies[index] === "invite"),
  };
}

/**
 * The same pair always gets the same direct chat, and nobody can compute the id of
 * a pair's chat without the server's secret.
 */
export async function directChatId(secret: string, a: string, b: string): Promise<string> {
  const [first, second] = a < b ? [a, b] : [b, a];
  const digest = await hmacSha256(secret, `direct-chat\n${first}\n${second}`);
  return mintId(secret, "d", digest.slice(0, 16));
}

/** A chat id from the path: malformed is 400, one this server never minted is 404 (no object is woken). */
export async function chatIdParam(env: Env, raw: string | undefined): Promise<string> {
  const chatId = parseWith(ChatId, raw);
  await requireMintedChatId(configFrom(env).hmacSecret, chatId);
  return chatId;
}

/** Ids this server never minted are refused by their tag, with no object woken. */
export async function requireMintedUserIds(env: Env, userIds: string[]): Promise<void> {
  const secret = configFrom(env).hmacSecret;
  const minted = await Promise.all(userIds.map((id) => isMintedId(secret, "u", id)));
  const forged = userIds.filter((_, index) => !minted[index]);
  if (forged.length > 0) {
    throw new AppError("invalid_member", 400, `no account for ${forged.slice(0, 5).join(", ")}`, { retryable: false });
  }
}
