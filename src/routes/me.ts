import { Hono } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { userObject } from "../lib/stubs.ts";
import { jsonBody } from "../lib/validate.ts";
import { requireAuth } from "../middleware/auth.ts";
import { ProfilePatch, type Me } from "../protocol/index.ts";

/** The caller's own profile. */
export const meRoutes = new Hono<AppEnv>()
  .use(requireAuth)
  .get("/", async (c) => {
    const me: Me = await userObject(c.env, c.get("caller").userId).me();
    return c.json(me);
  })
  .patch("/", async (c) => {
    const patch = await jsonBody(c, ProfilePatch);
    const me: Me = await userObject(c.env, c.get("caller").userId).updateProfile(patch);
    return c.json(me);
  });
