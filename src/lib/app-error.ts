import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ErrorBody, ErrorCode } from "../protocol/errors.ts";

/**
 * The one error type routes and objects throw. `src/app.ts` turns it into
 * `{error: {...}}` JSON; socket handlers turn it into a reply or an error frame.
 * Anything else thrown is logged and answered as `internal`.
 */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: ContentfulStatusCode;
  readonly retryable: boolean;
  readonly retryAfterMs: number | undefined;
  readonly issues: ErrorBody["issues"];

  constructor(
    code: ErrorCode,
    status: ContentfulStatusCode,
    message: string,
    extra: { retryable?: boolean; retryAfterMs?: number; issues?: ErrorBody["issues"] } = {},
  ) {
    super(message);
    this.name = "AppError";
    this.code = code;
    this.status = status;
    this.retryable = extra.retryable ?? (status === 429 || status === 503);
    this.retryAfterMs = extra.retryAfterMs;
    this.issues = extra.issues;
  }

  toBody(): ErrorBody {
    const body: ErrorBody = { code: this.code, message: this.message, retryable: this.retryable };
    if (this.retryAfterMs !== undefined) body.retryAfterMs = this.retryAfterMs;
    if (this.issues) body.issues = this.issues;
    return body;
  }

  /** Errors cross Durable Object RPC as plain data; this rebuilds them on the other side. */
  static fromBody(body: ErrorBody, status: ContentfulStatusCode): AppError {
    return new AppError(body.code, status, body.message, body);
  }
}

export const internalErrorBody: ErrorBody = {
  code: "internal",
  message: "internal error",
  retryable: true,
};

/** Maps a zod failure to `validation_failed` with each field's problem. */
export function validationError(issues: { path: PropertyKey[]; message: string }[]): AppError {
  const listed = issues.slice(0, 20).map((issue) => ({
    path: issue.path.map(String).join("."),
    message: issue.message,
  }));
  const summary = listed.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join("; ");
  return new AppError("validation_failed", 400, summary || "invalid input", { issues: listed });
}
