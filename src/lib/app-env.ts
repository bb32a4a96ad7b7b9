import type { RequestIdVariables } from "hono/request-id";

/** The verified caller of an authenticated request. */
export type Caller = { userId: string; deviceId: string };

export type AppEnv = {
  Bindings: Env;
  Variables: RequestIdVariables & { caller: Caller };
};
