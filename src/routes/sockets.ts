import { Hono } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { AppError } from "../lib/app-error.ts";
import { ForwardedIdentity, WS_SUBPROTOCOL } from "../lib/forwarded-identity.ts";
import { chatRoomObject } from "../lib/stubs.ts";
import { parseWith } from "../lib/validate.ts";
import { authenticate } from "../middleware/auth.ts";
import { ChatId, CloseCode, type ErrorFrame } from "../protocol/index.ts";

/**
 * `GET /chat/:chatId`: a chat socket. The Worker verifies the token and forwards the
 * raw upgrade to the chat's object, which checks membership and keeps the socket
 * (hibernatable). The object answers with the `chat.v1` subprotocol when offered.
 */
export const socketRoutes = new Hono<AppEnv>().get("/chat/:chatId", async (c) => {
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    throw new AppError("validation_failed", 426, "this endpoint takes a WebSocket upgrade", { retryable: false });
  }
  const chatId = parseWith(ChatId, c.req.param("chatId"));
  let caller;
  try {
    caller = await authenticate(c.env, c.req.raw.headers);
  } catch (error) {
    if (error instanceof AppError && error.status === 401) return refuseUpgrade(c.req.raw.headers, error);
    throw error;
  }
  const headers = new Headers(c.req.raw.headers);
  ForwardedIdentity.write(headers, caller); // overwrites anything the client sent
  return chatRoomObject(c.env, chatId).fetch(new Request(c.req.raw, { headers }));
});

/**
 * A browser cannot read the status of a failed upgrade (it only sees 1006), so an
 * auth failure is told through an error frame and a close code instead.
 */
function refuseUpgrade(requestHeaders: Headers, error: AppError): Response {
  const [client, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
  server.accept();
  const frame: ErrorFrame = { type: "error", error: error.toBody() };
  server.send(JSON.stringify(frame));
  server.close(error.code === "device_revoked" ? CloseCode.deviceRevoked : CloseCode.unauthorized, error.code);
  const headers = new Headers();
  if (ForwardedIdentity.offeredSubprotocol(requestHeaders)) headers.set("Sec-WebSocket-Protocol", WS_SUBPROTOCOL);
  return new Response(null, { status: 101, webSocket: client, headers });
}
