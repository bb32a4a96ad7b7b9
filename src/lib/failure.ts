import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ErrorBody } from "../protocol/errors.ts";
import { AppError, internalErrorBody } from "./app-error.ts";
import { describeError, log } from "./log.ts";

/** An error as a client sees it: the status of a REST answer and the body of any answer. */
export type Failure = { ok: false; status: ContentfulStatusCode; error: ErrorBody };

/**
 * The one place that decides what a client is told about an error, whichever way it
 * leaves (a REST response, a socket reply or error frame, a refused upgrade, an RPC
 * outcome). An AppError is itself; a Hono 4xx is `validation_failed`; anything else is
 * logged with `context` and answered as `internal`, never with its message or stack.
 */
export function failureOf(error: unknown, context: Record<string, unknown> = {}): Failure {
  if (error instanceof AppError) {
    if (error.status >= 500) log.error("request failed", { ...context, code: error.code, error: error.message });
    return { ok: false, status: error.status, error: error.toBody() };
  }
  if (error instanceof HTTPException && error.status < 500) {
    return { ok: false, status: error.status as ContentfulStatusCode, error: { code: "validation_failed", message: error.message || "bad request", retryable: false } };
  }
  log.error("unhandled error", { ...context, ...describeError(error) });
  return { ok: false, status: 500, error: internalErrorBody };
}
