import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { requestId } from "hono/request-id";
import type { AppEnv } from "./lib/app-env.ts";
import { AppError } from "./lib/app-error.ts";
import { failureOf } from "./lib/failure.ts";
import { log } from "./lib/log.ts";
import { Limits, type ErrorResponse } from "./protocol/index.ts";
import { authRoutes } from "./routes/auth.ts";
import { chatRoutes } from "./routes/chats.ts";
import { invitationRoutes } from "./routes/invitations.ts";
import { blockRoutes } from "./routes/blocks.ts";
import { deviceRoutes } from "./routes/devices.ts";
import { meRoutes } from "./routes/me.ts";
import { chatMediaRoutes, isUploadRoute } from "./routes/media.ts";
import { signedMediaRoutes } from "./routes/signed-media.ts";
import { ownAvatarRoutes } from "./routes/avatars.ts";
import { userAvatarRoutes } from "./routes/user-avatars.ts";
import { socketRoutes } from "./routes/sockets.ts";
import { userRoutes } from "./routes/users.ts";

/** The HTTP API. Every error leaves through `onError` as `{error: {code, message, retryable}}`. */
export const app = new Hono<AppEnv>();

app.use(requestId());
app.use(async (c, next) => {
  await next();
  // A socket upgrade's 101 is the runtime's: its headers may be immutable, and no
  // browser sniffs it. Everything else, errors and 404s included, gets the header.
  if (c.res.status === 101 || c.res.webSocket) return;
  try {
    c.res.headers.set("X-Content-Type-Options", "nosniff");
  } catch {
    // Immutable headers (a response fetched from an object): setting c.res copies it.
    c.res = new Response(c.res.body, c.res);
    c.res.headers.set("X-Content-Type-Options", "nosniff");
  }
});
app.use(async (c, next) => {
  const started = Date.now();
  await next();
  log.info("request", {
    requestId: c.get("requestId"),
    method: c.req.method,
    path: c.req.path,
    status: c.res.status,
    ms: Date.now() - started,
  });
});
const jsonBodyLimit = bodyLimit({
  maxSize: Limits.maxFrameBytes,
  onError: () => {
    throw new AppError("too_large", 413, `request bodies are at most ${Limits.maxFrameBytes} bytes`, { retryable: false });
  },
});
// Uploads stream files into R2 and check their own Content-Length limits before reading.
app.use("/api/*", (c, next) => (isUploadRoute(c.req.method, c.req.path) ? next() : jsonBodyLimit(c, next)));

app.get("/healthz", (c) => c.json({ ok: true }));
app.route("/api", authRoutes);
app.route("/api/me", meRoutes);
app.route("/api/me/avatar", ownAvatarRoutes);
app.route("/api/devices", deviceRoutes);
app.route("/api/users", userRoutes);
app.route("/api/users", userAvatarRoutes);
app.route("/api/chats", chatRoutes);
app.route("/api/chats/:chatId/media", chatMediaRoutes);
app.route("/api/invitations", invitationRoutes);
app.route("/api/blocks", blockRoutes);
app.route("/media", signedMediaRoutes);
app.route("/", socketRoutes);

app.notFound((c) => {
  const body: ErrorResponse = { error: { code: "not_found", message: "no such endpoint", retryable: false } };
  return c.json(body, 404);
});

app.onError((error, c) => {
  const { status, error: body } = failureOf(error, { requestId: c.get("requestId") });
  const response: ErrorResponse = { error: body };
  // The body's retryAfterMs, for clients and proxies that read only the standard header.
  const headers = body.retryAfterMs === undefined ? undefined : { "Retry-After": String(retryAfterSeconds(body.retryAfterMs)) };
  return c.json(response, status, headers);
});

/** `Retry-After` is whole seconds: rounded up, and at least 1 so that 0 never means "now". */
export function retryAfterSeconds(retryAfterMs: number): number {
  return Math.max(1, Math.ceil(retryAfterMs / 1000));
}
