import { z } from "zod";

/**
 * Every error the API or a socket can report. Codes are stable: clients switch on
 * them, so a code is never renamed or reused for another meaning.
 */
export const ErrorCode = z.enum([
  // request shape
  "invalid_json",
  "unsupported_media_type",
  "validation_failed",
  "too_large",
  "not_found",
  // auth
  "unauthorized",
  "invalid_token",
  "token_expired",
  "device_revoked",
  "invalid_code",
  "code_expired",
  "too_many_attempts",
  "invalid_refresh_token",
  "refresh_token_reused",
  "rate_limited",
  // chats
  "forbidden",
  "chat_not_found",
  "not_a_member",
  "admins_only",
  "invalid_member",
  "invalid_reply",
  "invalid_cursor",
  "idempotency_conflict",
  "too_many_pinned",
  // deletes
  "delete_window_passed",
  "too_many_hidden",
  // media
  "length_required",
  "invalid_attachment",
  "too_many_uploads",
  "range_not_satisfiable",
  "invalid_signature",
  // membership
  "not_a_group",
  "group_full",
  "member_not_found",
  "no_change",
  "last_admin",
  "blocked",
  // sockets
  "unknown_frame",
  "binary_not_supported",
  // server
  "misconfigured",
  "unavailable",
  "internal",
]);
export type ErrorCode = z.infer<typeof ErrorCode>;

/** The error object, the same in a REST body and in a socket reply. */
export const ErrorBody = z.object({
  code: ErrorCode,
  message: z.string(),
  /** True when the same request may succeed later unchanged (rate limits, restarts). */
  retryable: z.boolean(),
  /** For `rate_limited`: how long to wait before trying again. */
  retryAfterMs: z.number().int().nonnegative().optional(),
  /** For `validation_failed`: which fields were wrong. */
  issues: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
});
export type ErrorBody = z.infer<typeof ErrorBody>;

/** Every 4xx/5xx REST response has this body. */
export const ErrorResponse = z.object({ error: ErrorBody });
export type ErrorResponse = z.infer<typeof ErrorResponse>;
