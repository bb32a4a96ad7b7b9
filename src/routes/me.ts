import { Hono } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { userObject } from "../lib/stubs.ts";
import { jsonBody, queryParams } from "../lib/validate.ts";
import { requireAuth } from "../middleware/auth.ts";
import { HiddenQuery, ProfilePatch, type HiddenPage, type Me } from "../protocol/index.ts";

/** The caller's own profile, and the messages it deleted for itself. */
export const meRoutes = new Hono<AppEnv>()
  .use(requireAuth)
  .get("/", async (c) => {
    const me: Me = await userObject(c.env, c.get("caller").userId).me();
    return c.json(me);
  })
  .get("/hidden", async (c) => {
    const query = queryParams(c, HiddenQuery);
    const page: HiddenPage = await userObject(c.env, c.get("caller").userId).hiddenPage(query);
    return c.json(page);
  })
  .patch("/", async (c) => {
    const patch = await jsonBody(c, ProfilePatch);
    const me: Me = await userObject(c.env, c.get("caller").userId).updateProfile(patch);
    return c.json(me);
  });
