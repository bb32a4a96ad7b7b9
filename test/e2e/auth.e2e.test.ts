import { createServer, type IncomingMessage } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiClient, ApiError } from "../../src/client/index.ts";
import { loggedInClient, uniquePhone } from "./support/clients.ts";
import { freePort, startDevServer, type DevServer } from "./support/dev-server.ts";

describe("login through wrangler dev (development mode)", () => {
  let server: DevServer;
  beforeAll(async () => {
    server = await startDevServer({ DEV_MODE: "true", OTP_SENDER: "console" });
  });
  afterAll(() => server?.stop());

  it("a Node client logs in, sees its profile and devices, refreshes and logs out", async () => {
    const api = await loggedInClient(server.url, "node e2e");
    const me = await api.me();
    expect(me.phone).toMatch(/^\+1415[2-9]\d{6}$/);
    const renamed = await api.updateProfile({ displayName: "E2E" });
    expect(renamed.displayName).toBe("E2E");
    const { devices } = await api.devices();
    expect(devices).toEqual([expect.objectContaining({ name: "node e2e", current: true })]);
    const before = api.session!.refreshToken;
    await api.refresh();
    expect(api.session!.refreshToken).not.toBe(before);
    expect((await api.me()).userId).toBe(me.userId);
    const saved = api.session!;
    await api.logout();
    const stale = new ApiClient({ baseUrl: server.url, session: saved });
    await expect(stale.me()).rejects.toMatchObject({ status: 401, code: "device_revoked" });
  });

  it("bad input gets JSON errors with stable codes", async () => {
    const api = new ApiClient({ baseUrl: server.url });
    await expect(api.requestOtp("12345")).rejects.toBeInstanceOf(ApiError);
    await expect(api.requestOtp("12345")).rejects.toMatchObject({ status: 400, code: "validation_failed" });
    await expect(api.login({ phone: uniquePhone(), code: "000000", attemptId: "A".repeat(22) })).rejects.toMatchObject({ status: 401, code: "invalid_code" });
  });
});

describe("login through wrangler dev with the production OTP path", () => {
  let server: DevServer;
  let hook: ReturnType<typeof createServer>;
  const delivered: { to: string; code: string; authorization: string | undefined }[] = [];
  const UNDELIVERABLE = uniquePhone();

  beforeAll(async () => {
    const port = await freePort();
    hook = createServer((request: IncomingMessage, response) => {
      let body = "";
      request.on("data", (chunk) => (body += chunk));
      request.on("end", () => {
        const { to, code } = JSON.parse(body) as { to: string; code: string };
        if (to === UNDELIVERABLE) return void response.writeHead(500).end();
        delivered.push({ to, code, authorization: request.headers.authorization });
        response.writeHead(202).end();
      });
    });
    await new Promise<void>((resolve) => hook.listen(port, "127.0.0.1", resolve));
    server = await startDevServer({
      OTP_SENDER: "webhook",
      OTP_WEBHOOK_URL: `http://127.0.0.1:${port}/sms`,
      OTP_WEBHOOK_TOKEN: "sms-adapter-token",
      JWT_SECRET: "e2e-jwt-secret-0123456789abcdef0123456789",
      HMAC_SECRET: "e2e-hmac-secret-0123456789abcdef012345678",
      MEDIA_URL_SECRET: "e2e-media-secret-0123456789abcdef01234567",
    });
  });
  afterAll(async () => {
    await server?.stop();
    hook?.close();
  });

  it("sends the code to the SMS webhook, never in the response, and the code logs in", async () => {
    const api = new ApiClient({ baseUrl: server.url });
    const phone = uniquePhone();
    const otp = await api.requestOtp(phone);
    expect(otp).not.toHaveProperty("devCode");
    expect(delivered).toEqual([{ to: phone, code: expect.stringMatching(/^\d{6}$/), authorization: "Bearer sms-adapter-token" }]);
    const session = await api.login({ phone, code: delivered[0]!.code, attemptId: otp.attemptId });
    expect(session.user.phone).toBe(phone);
  });

  it("reports a provider failure as 503 unavailable", async () => {
    const api = new ApiClient({ baseUrl: server.url });
    await expect(api.requestOtp(UNDELIVERABLE)).rejects.toMatchObject({ status: 503, code: "unavailable" });
  });
});
