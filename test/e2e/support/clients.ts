import { ApiClient, type ApiClientOptions } from "../../../src/client/index.ts";

/** Where this run's phone numbers start: +1 415 NXX XXXX, with NXX from 200 to 999. */
let counter = Math.floor(Math.random() * 7_000_000);
/** A valid phone number (libphonenumber's metadata) not used before in this run. */
export function uniquePhone(): string {
  counter += 1;
  const exchange = 200 + (Math.floor(counter / 10_000) % 800);
  return `+1415${exchange}${String(counter % 10_000).padStart(4, "0")}`;
}

/**
 * Logs a new user in through the running server, with the development code. Tests
 * that log in many users give each a `clientAddress` (sent as `CF-Connecting-IP`,
 * which `wrangler dev` passes through), as many people behind many addresses would:
 * the per-address login limits then apply to each on its own.
 */
export async function loggedInClient(baseUrl: string, deviceName = "e2e", clientAddress?: string): Promise<ApiClient> {
  return logIn(clientOptions(baseUrl, clientAddress), uniquePhone(), deviceName);
}

/**
 * Logs `phone` in with the development code: a new account, or a new device of an
 * existing one (the server must allow another code that soon: `OTP_RESEND_SECONDS=0`).
 */
export async function logIn(options: ApiClientOptions, phone: string, deviceName = "e2e"): Promise<ApiClient> {
  const api = new ApiClient(options);
  const otp = await api.requestOtp(phone);
  if (!otp.devCode) throw new Error("the development server returned no devCode");
  await api.login({ phone, code: otp.devCode, attemptId: otp.attemptId, deviceName });
  return api;
}

/** The options of a client speaking for `clientAddress` (see loggedInClient). */
export function clientOptions(baseUrl: string, clientAddress?: string): ApiClientOptions {
  return clientAddress ? { baseUrl, headers: { "cf-connecting-ip": clientAddress } } : { baseUrl };
}
