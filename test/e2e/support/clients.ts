import { ApiClient } from "../../../src/client/index.ts";

/** Where this run's phone numbers start: +1 415 NXX XXXX, with NXX from 200 to 999. */
let counter = Math.floor(Math.random() * 7_000_000);
/** A valid phone number (libphonenumber's metadata) not used before in this run. */
export function uniquePhone(): string {
  counter += 1;
  const exchange = 200 + (Math.floor(counter / 10_000) % 800);
  return `+1415${exchange}${String(counter % 10_000).padStart(4, "0")}`;
}

/** Logs a new user in through the running server, with the development code. */
export async function loggedInClient(baseUrl: string, deviceName = "e2e"): Promise<ApiClient> {
  const api = new ApiClient({ baseUrl });
  const phone = uniquePhone();
  const otp = await api.requestOtp(phone);
  if (!otp.devCode) throw new Error("the development server returned no devCode");
  await api.login({ phone, code: otp.devCode, attemptId: otp.attemptId, deviceName });
  return api;
}
