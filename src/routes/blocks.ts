import { Hono } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { AppError } from "../lib/app-error.ts";
import { configFrom } from "../lib/config.ts";
import { unwrap } from "../lib/result.ts";
import { chatRoomObject, userObject } from "../lib/stubs.ts";
import { requireAuth } from "../middleware/auth.ts";
import type { BlockList } from "../protocol/index.ts";
import { directChatId, memberIdParam } from "./chats.ts";

/**
 * The accounts the caller blocked. A blocked account cannot open a direct chat with
 * the caller, send in their direct chat (nor can the caller, until unblocking), or add
 * the caller to a group; each is refused with `blocked`.
 */
export const blockRoutes = new Hono<AppEnv>()
  .use(requireAuth)
  .get("/", async (c) => {
    const body: BlockList = await userObject(c.env, c.get("caller").userId).listBlocks();
    return c.json(body);
  })
  .put("/:userId", async (c) => {
    const { userId } = c.get("caller");
    const target = await blockTarget(c.env, userId, c.req.param("userId"));
    if ((await userObject(c.env, target).publicProfile()) === null) throw new AppError("not_found", 404, "no such user", { retryable: false });
    unwrap(await userObject(c.env, userId).block(target));
    // Their direct chat, if it exists, refuses sends from now on.
    await chatRoomObject(c.env, await directChatId(configFrom(c.env).hmacSecret, userId, target)).setBlock(userId, target, true);
    return c.body(null, 204);
  })
  .delete("/:userId", async (c) => {
    const { userId } = c.get("caller");
    const target = await blockTarget(c.env, userId, c.req.param("userId"));
    await userObject(c.env, userId).unblock(target);
    await chatRoomObject(c.env, await directChatId(configFrom(c.env).hmacSecret, userId, target)).setBlock(userId, target, false);
    return c.body(null, 204);
  });

async function blockTarget(env: Env, callerId: string, raw: string | undefined): Promise<string> {
  const target = await memberIdParam(env, raw);
  if (target === callerId) throw new AppError("invalid_member", 400, "you cannot block yourself", { retryable: false });
  return target;
}
