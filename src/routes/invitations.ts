import { Hono } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { AppError } from "../lib/app-error.ts";
import { unwrap } from "../lib/result.ts";
import { chatRoomObject, userObject } from "../lib/stubs.ts";
import { requireAuth } from "../middleware/auth.ts";
import type { ChangeResult, InvitationList } from "../protocol/index.ts";
import { chatIdParam } from "./chats.ts";

/** Group invitations waiting for the caller (see the `groupAdd` setting on /api/me). */
export const invitationRoutes = new Hono<AppEnv>()
  .use(requireAuth)
  .get("/", async (c) => {
    const body: InvitationList = await userObject(c.env, c.get("caller").userId).listInvitations();
    return c.json(body);
  })
  .post("/:chatId/accept", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const { userId } = c.get("caller");
    // Both must hold it: the account's list (it expires there) and the chat (it may
    // have been withdrawn or declined); the list entry goes once the chat accepted.
    if (!(await userObject(c.env, userId).hasInvitation(chatId))) throw new AppError("not_found", 404, "no such invitation", { retryable: false });
    const result: ChangeResult = unwrap(await chatRoomObject(c.env, chatId).acceptInvitation(userId));
    await userObject(c.env, userId).takeInvitation(chatId);
    return c.json(result, 201);
  })
  .post("/:chatId/decline", async (c) => {
    const chatId = await chatIdParam(c.env, c.req.param("chatId"));
    const { userId } = c.get("caller");
    unwrap(await userObject(c.env, userId).takeInvitation(chatId));
    await chatRoomObject(c.env, chatId).declineInvitation(userId);
    return c.body(null, 204);
  });
