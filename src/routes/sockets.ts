import { Hono, type Context } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { AppError } from "../lib/app-error.ts";
import { failureOf } from "../lib/failure.ts";
import { ForwardedIdentity } from "../lib/forwarded-identity.ts";
import { chatRoomObject, userObject } from "../lib/stubs.ts";
import { authenticateSocket, verifyToken } from "../middleware/auth.ts";
import { chatIdParam } from "./chats.ts";
import { refuseUpgrade } from "../lib/upgrade-response.ts";

/** The two WebSocket endpoints. The object that keeps a socket answers with the `chat.v1` subprotocol when offered. */
export const socketRoutes = new Hono<AppEnv>()
  /**
   * `GET /chat`: the device stream, every chat of the account on one socket. The Worker
   * verifies the token's signature; the account's object checks the device and keeps
   * the socket (hibernatable).
   */
  .get("/chat", (c) =>
    forwardUpgrade(c, "stream upgrade", async (headers) => {
      const caller = await verifyToken(c.env, headers);
      return { identity: caller, object: userObject(c.env, caller.userId) };
    }),
  )
  /**
   * `GET /chat/:chatId`: a chat socket. The Worker verifies the token and the device;
   * the chat's object checks membership and keeps the socket (hibernatable).
   */
  .get("/chat/:chatId", (c) =>
    forwardUpgrade(c, "socket upgrade", async (headers) => {
      const chatId = await chatIdParam(c.env, c.req.param("chatId"));
      return { identity: await authenticateSocket(c.env, headers, chatId), object: chatRoomObject(c.env, chatId) };
    }),
  );

/**
 * Hands an upgrade to the object that keeps the socket, with the identity the Worker
 * verified in headers it overwrites (whatever the client sent). A refusal is told in
 * an error frame and a close code, the only answer a browser can read.
 */
async function forwardUpgrade(
  c: Context<AppEnv>,
  during: string,
  route: (headers: Headers) => Promise<{ identity: ForwardedIdentity; object: { fetch(request: Request): Promise<Response> } }>,
): Promise<Response> {
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    throw new AppError("validation_failed", 426, "this endpoint takes a WebSocket upgrade", { retryable: false });
  }
  try {
    const { identity, object } = await route(c.req.raw.headers);
    const headers = new Headers(c.req.raw.headers);
    ForwardedIdentity.write(headers, identity);
    return await object.fetch(new Request(c.req.raw, { headers }));
  } catch (error) {
    return refuseUpgrade(c.req.raw.headers, failureOf(error, { requestId: c.get("requestId"), during }).error);
  }
}
