import { Hono } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { AppError } from "../lib/app-error.ts";
import { failureOf } from "../lib/failure.ts";
import { ForwardedIdentity } from "../lib/forwarded-identity.ts";
import { chatRoomObject } from "../lib/stubs.ts";
import { authenticateSocket } from "../middleware/auth.ts";
import { chatIdParam } from "./chats.ts";
import { refuseUpgrade } from "../lib/upgrade-response.ts";

/**
 * `GET /chat/:chatId`: a chat socket. The Worker verifies the token and forwards the
 * raw upgrade to the chat's object, which checks membership and keeps the socket
 * (hibernatable). The object answers with the `chat.v1` subprotocol when offered.
 */
export const socketRoutes = new Hono<AppEnv>().get("/chat/:chatId", async (c) => {
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    throw new AppError("validation_failed", 426, "this endpoint takes a WebSocket upgrade", { retryable: false });
  }
  try {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const caller = await authenticateSocket(c.env, c.req.raw.headers, chatId);
    const headers = new Headers(c.req.raw.headers);
    ForwardedIdentity.write(headers, caller); // overwrites anything the client sent
    return await chatRoomObject(c.env, chatId).fetch(new Request(c.req.raw, { headers }));
  } catch (error) {
    return refuseUpgrade(c.req.raw.headers, failureOf(error, { requestId: c.get("requestId"), during: "socket upgrade" }).error);
  }
});
