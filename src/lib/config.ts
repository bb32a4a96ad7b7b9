import { z } from "zod";
import { AppError } from "./app-error.ts";
import { log } from "./log.ts";

/**
 * Every setting the deployment can change, read from the Worker's vars and secrets
 * (wrangler.toml [vars], `.dev.vars`, `wrangler secret put`). Documented in the
 * README's Configuration section; defaults here are the production defaults.
 */
const intVar = (fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER) =>
  z.coerce.number().int().min(min).max(max).default(fallback);

/**
 * The largest multipart upload a deployment may allow: R2's 10,000 parts of at most
 * 95 MiB each (`partSizeFor` in src/routes/media.ts grows the 8 MiB part by whole MiB
 * past 78 GiB), so that every part fits in the 100 MB a Workers request may carry.
 * 996,147,200,000 bytes (about 928 GiB).
 */
export const MAX_MULTIPART_UPLOAD_BYTES = 10_000 * 95 * 1024 * 1024;

const EnvSettings = z.object({
  DEV_MODE: z
    .enum(["true", "false", ""])
    .optional()
    .transform((value) => value === "true"),
  JWT_SECRET: z.string().optional(),
  HMAC_SECRET: z.string().optional(),
  OTP_SENDER: z.enum(["console", "webhook"]).default("webhook"),
  OTP_WEBHOOK_URL: z.string().default(""),
  OTP_WEBHOOK_TOKEN: z.string().optional(),
  ACCESS_TOKEN_TTL_SECONDS: intVar(900, 30, 900),
  OTP_TTL_SECONDS: intVar(300, 30, 3600),
  OTP_MAX_ATTEMPTS: intVar(5, 1, 20),
  OTP_RESEND_SECONDS: intVar(30, 0, 3600),
  OTP_MAX_RESEND_SECONDS: intVar(900, 0, 86400),
  OTP_MAX_PER_HOUR: intVar(5, 1, 1000),
  OTP_MAX_PER_DAY: intVar(10, 1, 10000),
  SEND_RATE_PER_SECOND: intVar(20, 1, 100000),
  SEND_BURST: intVar(60, 1, 100000),
  ACCOUNT_SEND_RATE_PER_SECOND: intVar(30, 1, 100000),
  ACCOUNT_SEND_BURST: intVar(120, 1, 100000),
  CATCH_UP_PAGE_SIZE: intVar(200, 1, 200),
  FAN_OUT_INTERVAL_MS: intVar(5_000, 0, 60_000),
  HEARTBEAT_MS: intVar(30_000, 100, 300_000),
  NOTIFY_WEBHOOK_URL: z.string().default(""),
  NOTIFY_WEBHOOK_SECRET: z.string().optional(),
  NOTIFY_AFTER_MS: intVar(10_000, 0, 3_600_000),
  MEDIA_URL_SECRET: z.string().optional(),
  MEDIA_MAX_BYTES: intVar(25 * 1024 * 1024, 1024, 100 * 1024 * 1024),
  MEDIA_MAX_MULTIPART_BYTES: intVar(2 * 1024 * 1024 * 1024, 1024, MAX_MULTIPART_UPLOAD_BYTES),
  DELETE_WINDOW_MS: intVar(48 * 3_600_000, 0, 365 * 24 * 3_600_000),
});

export type Config = {
  devMode: boolean;
  jwtSecret: string;
  hmacSecret: string;
  otp: {
    sender: "console" | "webhook";
    webhookUrl: string;
    webhookToken: string | undefined;
    ttlSeconds: number;
    maxAttempts: number;
    /** The first interval between two codes to one number; it doubles with each code of a streak… */
    resendSeconds: number;
    /** …up to this. */
    maxResendSeconds: number;
    /** Codes per requester (client address key) per number per rolling hour and day. */
    maxPerHour: number;
    maxPerDay: number;
  };
  accessTokenTtlSeconds: number;
  /** Per sender per chat. */
  send: { ratePerSecond: number; burst: number };
  /** Per account, across all its chats. */
  accountSend: { ratePerSecond: number; burst: number };
  /** Events per catch-up page. */
  catchUpPageSize: number;
  /** The least time between two rounds of a chat's fan-out to its members' accounts. */
  fanOutIntervalMs: number;
  /**
   * How often device streams send their heartbeat; a stream silent for twice this long
   * counts as offline, and presence sweeps run this often while someone watches.
   */
  heartbeatMs: number;
  /** Offline notifications for a push bridge (src/user/offline-notifications.ts); null: off. */
  notify: NotifySettings | null;
  media: {
    /**
     * Keys signed download URLs (HMAC-SHA256 over media, chat and expiry). Null when
     * not set in production: signed URLs are then refused as `misconfigured`, and
     * everything else (downloads with a bearer token included) works.
     */
    urlSecret: string | null;
    /** The largest single upload (bytes); a request body is at most 100 MB on Workers. */
    maxBytes: number;
    /** The largest multipart upload (bytes). */
    maxMultipartBytes: number;
  };
  /** How long after sending a sender may delete a message for everyone (ms). */
  deleteWindowMs: number;
};

export type NotifySettings = {
  /** Where the webhook is POSTed (http or https). */
  webhookUrl: string;
  /** Keys the body's HMAC-SHA256 signature. */
  webhookSecret: string;
  /** How long a message may go without reaching any device of a recipient before they are notified. */
  afterMs: number;
};

// Known only to development: anyone could forge tokens with it, so it is refused
// unless DEV_MODE is on.
const DEV_SECRET = "edgechat-development-only-secret-do-not-deploy";
const MIN_SECRET_LENGTH = 32;

const cache = new WeakMap<object, Config>();

/** Reads and checks the environment once per isolate. Fails closed on a missing secret. */
export function configFrom(env: object): Config {
  const cached = cache.get(env);
  if (cached) return cached;
  const parsed = EnvSettings.safeParse(env);
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw misconfigured(`invalid configuration: ${detail}`);
  }
  const settings = parsed.data;
  const secret = (name: "JWT_SECRET" | "HMAC_SECRET" | "NOTIFY_WEBHOOK_SECRET" | "MEDIA_URL_SECRET"): string => {
    const value = settings[name];
    if (value && value.length >= MIN_SECRET_LENGTH) return value;
    if (settings.DEV_MODE) return `${DEV_SECRET}:${name}`;
    throw misconfigured(
      `${name} is ${value ? `shorter than ${MIN_SECRET_LENGTH} characters` : "not set"}: ` +
        `set it with \`wrangler secret put ${name}\` (or in .dev.vars for local runs)`,
    );
  };
  const config: Config = {
    devMode: settings.DEV_MODE,
    jwtSecret: secret("JWT_SECRET"),
    hmacSecret: secret("HMAC_SECRET"),
    otp: {
      sender: settings.OTP_SENDER,
      webhookUrl: settings.OTP_WEBHOOK_URL,
      webhookToken: settings.OTP_WEBHOOK_TOKEN,
      ttlSeconds: settings.OTP_TTL_SECONDS,
      maxAttempts: settings.OTP_MAX_ATTEMPTS,
      resendSeconds: settings.OTP_RESEND_SECONDS,
      maxResendSeconds: settings.OTP_MAX_RESEND_SECONDS,
      maxPerHour: settings.OTP_MAX_PER_HOUR,
      maxPerDay: settings.OTP_MAX_PER_DAY,
    },
    accessTokenTtlSeconds: settings.ACCESS_TOKEN_TTL_SECONDS,
    send: { ratePerSecond: settings.SEND_RATE_PER_SECOND, burst: settings.SEND_BURST },
    accountSend: { ratePerSecond: settings.ACCOUNT_SEND_RATE_PER_SECOND, burst: settings.ACCOUNT_SEND_BURST },
    catchUpPageSize: settings.CATCH_UP_PAGE_SIZE,
    fanOutIntervalMs: settings.FAN_OUT_INTERVAL_MS,
    heartbeatMs: settings.HEARTBEAT_MS,
    // Off unless a URL is set; then the secret is required like the others.
    notify: settings.NOTIFY_WEBHOOK_URL
      ? { webhookUrl: webhookUrl(settings.NOTIFY_WEBHOOK_URL), webhookSecret: secret("NOTIFY_WEBHOOK_SECRET"), afterMs: settings.NOTIFY_AFTER_MS }
      : null,
    media: {
      urlSecret: settings.MEDIA_URL_SECRET || settings.DEV_MODE ? secret("MEDIA_URL_SECRET") : null,
      maxBytes: settings.MEDIA_MAX_BYTES,
      maxMultipartBytes: settings.MEDIA_MAX_MULTIPART_BYTES,
    },
    deleteWindowMs: settings.DELETE_WINDOW_MS,
  };
  if (config.devMode) log.warn("development mode is on: OTP codes are returned in responses");
  cache.set(env, config);
  return config;
}

/** An absolute http(s) URL, or misconfigured. */
function webhookUrl(value: string): string {
  let url: URL | null = null;
  try {
    url = new URL(value);
  } catch {
    // reported below
  }
  if (url?.protocol !== "https:" && url?.protocol !== "http:") throw misconfigured("NOTIFY_WEBHOOK_URL must be an http or https URL");
  return value;
}

function misconfigured(message: string): AppError {
  log.error("misconfigured", { detail: message });
  return new AppError("misconfigured", 500, message, { retryable: false });
}
