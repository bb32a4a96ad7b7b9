import { Hono } from "hono";
import { issueAccessToken } from "../auth/access-token.ts";
import type { AppEnv } from "../lib/app-env.ts";
import { AppError } from "../lib/app-error.ts";
import { configFrom } from "../lib/config.ts";
import { isMintedId } from "../lib/minted-id.ts";
import { unwrap } from "../lib/result.ts";
import { phoneObject, userObject } from "../lib/stubs.ts";
import { jsonBody } from "../lib/validate.ts";
import { requireAuth } from "../middleware/auth.ts";
import { clientIp, enforceRateLimit } from "../middleware/rate-limit.ts";
import { otpSenderFor } from "../otp/sender.ts";
import { LoginRequest, OtpRequest, RefreshRequest, type OtpResponse, type TokenResponse } from "../protocol/index.ts";
import { userIdOfRefreshToken, type IssuedDevice } from "../user/devices.ts";

/** Answers that carry a secret (a code in development, tokens) must not be kept by any cache. */
const NO_STORE = { "Cache-Control": "no-store" };

/** Phone + OTP login, token refresh and logout. */
export const authRoutes = new Hono<AppEnv>()
  .post("/otp", async (c) => {
    const requester = clientIp(c.req.raw.headers);
    await enforceRateLimit(c.env.OTP_IP_LIMITER, requester);
    const { phone } = await jsonBody(c, OtpRequest);
    const config = configFrom(c.env);
    // A misconfigured sender fails before a code is issued. A code the provider then
    // fails to deliver still counts against the number's limits: failures must not
    // become a way around them.
    const sender = otpSenderFor(config);
    const issued = unwrap(await phoneObject(c.env, phone).requestCode(phone, requester));
    await sender.send(phone, issued.code);
    // The same answer whether or not the number has an account.
    const body: OtpResponse = {
      sent: true,
      expiresInSeconds: issued.expiresInSeconds,
      resendAfterSeconds: issued.resendAfterSeconds,
      attemptId: issued.attemptId,
    };
    if (config.devMode) body.devCode = issued.code;
    return c.json(body, 201, NO_STORE);
  })

  .post("/auth/login", async (c) => {
    await enforceRateLimit(c.env.LOGIN_IP_LIMITER, clientIp(c.req.raw.headers));
    const { phone, code, attemptId, deviceName } = await jsonBody(c, LoginRequest);
    const { accountId } = unwrap(await phoneObject(c.env, phone).verifyCode(phone, attemptId, code));
    const user = userObject(c.env, accountId);
    const me = await user.ensureAccount(accountId, phone);
    const issued = await user.createDevice(deviceName ?? describeClient(c.req.header("user-agent")));
    return c.json(await tokenResponse(c.env, me, issued), 200, NO_STORE);
  })

  .post("/auth/refresh", async (c) => {
    await enforceRateLimit(c.env.LOGIN_IP_LIMITER, clientIp(c.req.raw.headers));
    const { refreshToken } = await jsonBody(c, RefreshRequest);
    const userId = userIdOfRefreshToken(refreshToken);
    // A token naming an account this server never issued is refused without waking an object.
    if (!userId || !(await isMintedId(configFrom(c.env).hmacSecret, "u", userId))) {
      throw new AppError("invalid_refresh_token", 401, "unknown refresh token", { retryable: false });
    }
    const user = userObject(c.env, userId);
    const issued = unwrap(await user.rotateRefreshToken(userId, refreshToken));
    // A retry within the grace period gets the same pair: the access token is issued at the first rotation's time.
    return c.json(await tokenResponse(c.env, await user.me(), issued, issued.issuedAt), 200, NO_STORE);
  })

  .post("/auth/logout", requireAuth, async (c) => {
    const { userId, deviceId } = c.get("caller");
    unwrap(await userObject(c.env, userId).revokeDevice(deviceId));
    return c.body(null, 204);
  });

async function tokenResponse(env: Env, me: TokenResponse["user"], issued: IssuedDevice, issuedAt = Date.now()): Promise<TokenResponse> {
  const config = configFrom(env);
  return {
    credentials: await issueAccessToken(config, me.userId, issued.device.deviceId, issuedAt),
    expiresIn: config.accessTokenTtlSeconds,
    refreshToken: issued.refreshToken,
    user: me,
    device: issued.device,
  };
}

/** A short device name from the User-Agent when the client gives none. */
function describeClient(userAgent: string | undefined): string {
  // The same rules as a name the client gives (no control or bidi characters, NFC).
  const name = LoginRequest.shape.deviceName.safeParse(userAgent?.slice(0, 64));
  return name.success && name.data ? name.data : "Unnamed device";
}
