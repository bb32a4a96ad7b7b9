import { Hono } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { AppError } from "../lib/app-error.ts";
import { configFrom } from "../lib/config.ts";
import { isMintedId } from "../lib/minted-id.ts";
import { phoneObject, userObject } from "../lib/stubs.ts";
import { parseWith, queryParams } from "../lib/validate.ts";
import { requireAuth } from "../middleware/auth.ts";
import { enforceRateLimit } from "../middleware/rate-limit.ts";
import { UserId, UserLookupQuery, type Profile, type UserLookupResponse } from "../protocol/index.ts";

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
  });

async function requireProfile(env: Env, userId: string | null): Promise<Profile> {
  // An id this server never minted has no account: answered without waking an object.
  const known = userId !== null && (await isMintedId(configFrom(env).hmacSecret, "u", userId));
  const profile = known ? await userObject(env, userId).publicProfile() : null;
  if (!profile) throw new AppError("not_found", 404, "no user with that number or id", { retryable: false });
  return profile;
}
