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
import { ChatId, ChatListQuery, CreateChatRequest, HistoryQuery, SendMessageRequest, type ChatList } from "../protocol/index.ts";
import { enforceRateLimit } from "../middleware/rate-limit.ts";
import type { CreateChatInput } from "../chat-room/chat-room.ts";

/** Chats: creation, the caller's list, details, history and the REST send. */
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
  });

async function creationInput(env: Env, creatorId: string, request: CreateChatRequest): Promise<CreateChatInput> {
  if (request.kind === "direct") {
    if (request.peerId === creatorId) throw new AppError("invalid_member", 400, "a direct chat needs another user", { retryable: false });
    await requireAccounts(env, [request.peerId]);
    return {
      chatId: await directChatId(configFrom(env).hmacSecret, creatorId, request.peerId),
      kind: "direct",
      name: "",
      description: "",
      creatorId,
      memberIds: [request.peerId],
    };
  }
  const memberIds = [...new Set(request.memberIds)].filter((id) => id !== creatorId);
  await requireAccounts(env, memberIds);
  return {
    chatId: await mintId(configFrom(env).hmacSecret, "g"),
    kind: request.kind,
    name: request.name,
    description: request.description ?? "",
    creatorId,
    memberIds,
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

/**
 * Every id must be an account. Made-up ids are refused by their tag, with no object
 * woken; the rest are asked (in parallel) whether their account exists.
 */
async function requireAccounts(env: Env, userIds: string[]): Promise<void> {
  const secret = configFrom(env).hmacSecret;
  const minted = await Promise.all(userIds.map((id) => isMintedId(secret, "u", id)));
  const forged = userIds.filter((_, index) => !minted[index]);
  if (forged.length > 0) {
    throw new AppError("invalid_member", 400, `no account for ${forged.slice(0, 5).join(", ")}`, { retryable: false });
  }
  const profiles = await Promise.all(userIds.map((id) => userObject(env, id).publicProfile()));
  const missing = userIds.filter((_, index) => profiles[index] === null);
  if (missing.length > 0) {
    throw new AppError("invalid_member", 400, `no account for ${missing.slice(0, 5).join(", ")}`, { retryable: false });
  }
}
