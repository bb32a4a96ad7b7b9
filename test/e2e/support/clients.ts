import { ApiClient } from "../../../src/client/index.ts";

let counter = 0;
export function uniquePhone(): string {
  counter += 1;
  return `+1666${String(process.pid % 10_000).padStart(4, "0")}${String(Date.now() % 1000).padStart(3, "0")}${String(counter).padStart(2, "0")}`.slice(0, 16);
}

/** Logs a new user in through the running server, with the development code. */
export async function loggedInClient(baseUrl: string, deviceName = "e2e"): Promise<ApiClient> {
  const api = new ApiClient({ baseUrl });
  const phone = uniquePhone();
  const otp = await api.requestOtp(phone);
  if (!otp.devCode) throw new Error("the development server returned no devCode");
  await api.login(phone, otp.devCode, deviceName);
  return api;
}
