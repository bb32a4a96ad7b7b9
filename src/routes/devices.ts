import { Hono } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { unwrap } from "../lib/result.ts";
import { userObject } from "../lib/stubs.ts";
import { parseWith } from "../lib/validate.ts";
import { requireAuth } from "../middleware/auth.ts";
import { DeviceId, type DeviceList } from "../protocol/index.ts";

/** The caller's logged-in devices. */
export const deviceRoutes = new Hono<AppEnv>()
  .use(requireAuth)
  .get("/", async (c) => {
    const { userId, deviceId } = c.get("caller");
    const body: DeviceList = { devices: await userObject(c.env, userId).listDevices(deviceId) };
    return c.json(body);
  })
  .delete("/:deviceId", async (c) => {
    const deviceId = parseWith(DeviceId, c.req.param("deviceId"));
    unwrap(await userObject(c.env, c.get("caller").userId).revokeDevice(deviceId));
    return c.body(null, 204);
  });
