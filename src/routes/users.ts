import { Hono } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { AppError } from "../lib/app-error.ts";
import { configFrom } from "../lib/config.ts";
import { isMintedId } from "../lib/minted-id.ts";
import { phoneObject, userObject } from "../lib/stubs.ts";
import { parseWith, queryParams } from "../lib/validate.ts";
import { requireAuth } from "../middleware/auth.ts";
import { enforceRateLimit } from "../middleware/rate-limit.ts";
import { PresenceQuery, UserId, UserLookupQuery, type Presence, type Profile, type UserLookupResponse } from "../protocol/index.ts";
import { unwrap } from "../lib/result.ts";

/** Finding other people: by phone number (to start a chat) and by id (to show a sender). */
export const userRoutes = new Hono<AppEnv>()
  .use(requireAuth)
  .get("/lookup", async (c) => {
    // Limited per account: looking numbers up one by one must not enumerate the user base.
    await enforceRateLimit(c.env.LOOKUP_LIMITER, c.get("caller").userId);
    const { phone } = queryParams(c, UserLookupQuery);
    const accountId = await phoneObject(c.env, phone).accountId();
    const body: UserLookupResponse = { user: await requireProfile(c.env, accountId) };
    return c.json(body);
  })
  .get("/:userId", async (c) => {
    await enforceRateLimit(c.env.LOOKUP_LIMITER, c.get("caller").userId);
    const userId = parseWith(UserId, c.req.param("userId"));
    const body: UserLookupResponse = { user: await requireProfile(c.env, userId) };
    return c.json(body);
  })
  .get("/:userId/presence", async (c) => {
    // Per account, a budget of its own (polling presence must not use up lookups).
    await enforceRateLimit(c.env.PRESENCE_LIMITER, c.get("caller").userId);
    // Only someone who shares `chatId` with the caller: the caller's account checks the
    // chat in its own list, then the user's account in its list. A stranger, a made-up
    // id and a chat either side left are all `not_found`, and no chat is woken.
    const userId = parseWith(UserId, c.req.param("userId"));
    const { chatId } = queryParams(c, PresenceQuery);
    if (!(await isMintedId(configFrom(c.env).hmacSecret, "u", userId))) throw strangerError();
    const presence: Presence = unwrap(await userObject(c.env, c.get("caller").userId).presenceOf(userId, chatId));
    return c.json(presence);
  });

function strangerError(): AppError {
  return new AppError("not_found", 404, "no such user in that chat", { retryable: false });
}

async function requireProfile(env: Env, userId: string | null): Promise<Profile> {
  // An id this server never minted has no account: answered without waking an object.
  const known = userId !== null && (await isMintedId(configFrom(env).hmacSecret, "u", userId));
  const profile = known ? await userObject(env, userId).publicProfile() : null;
  if (!profile) throw new AppError("not_found", 404, "no user with that number or id", { retryable: false });
  return profile;
}
