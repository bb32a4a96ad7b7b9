import type { ErrorCode } from "./errors.ts";

/**
 * WebSocket close codes the server uses. 4000-4499: do not reconnect with the same
 * credentials (the client must change something first). 4500-4999 and the standard
 * 1001/1011/1012/1013: reconnect with backoff and resume from the last seq.
 */
export const CloseCode = {
  /** Normal close, answered to a client's own close. */
  normal: 1000,
  /** The server is going away (deploy, restart). Reconnect. */
  goingAway: 1001,
  /**
   * The token is missing, invalid or expired. Also closes an open socket when the token
   * it opened with expires (reason `token_expired`). Refresh the token, then reconnect.
   */
  unauthorized: 4001,
  /** The socket request was malformed (for example `?after=` not a seq, or beyond the head). Fix it first. */
  badRequest: 4400,
  /**
   * The user is not a member of this chat: never was, or is no longer. Also closes
   * every socket of a member when they are removed (reason `removed`, after the
   * `member.removed` event) or leave (reason `left`). Do not reconnect.
   */
  notAMember: 4003,
  /** The chat does not exist. Do not reconnect. */
  chatNotFound: 4004,
  /** This device was revoked (logged out elsewhere). Log in again. */
  deviceRevoked: 4009,
  /**
   * This device opened more sockets on this chat than allowed; this, its oldest, was
   * closed. Do not reconnect automatically (another tab or a newer connection has it).
   */
  tooManySockets: 4010,
  /** The server could not serve the socket right now. Reconnect with backoff. */
  tryAgain: 4500,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/**
 * The close code a refused socket gets for each error. A table over every ErrorCode,
 * so a new code must be given its close code (and so its reconnect rule) to compile.
 */
const closeCodes: Record<ErrorCode, CloseCode> = {
  unauthorized: CloseCode.unauthorized,
  invalid_token: CloseCode.unauthorized,
  token_expired: CloseCode.unauthorized,
  device_revoked: CloseCode.deviceRevoked,
  not_a_member: CloseCode.notAMember,
  forbidden: CloseCode.notAMember,
  chat_not_found: CloseCode.chatNotFound,
  validation_failed: CloseCode.badRequest,
  invalid_cursor: CloseCode.badRequest,
  // Not refusals of a socket today; if one ever is, the client retries with backoff.
  invalid_json: CloseCode.tryAgain,
  unsupported_media_type: CloseCode.tryAgain,
  too_large: CloseCode.tryAgain,
  not_found: CloseCode.tryAgain,
  invalid_code: CloseCode.tryAgain,
  code_expired: CloseCode.tryAgain,
  too_many_attempts: CloseCode.tryAgain,
  invalid_refresh_token: CloseCode.tryAgain,
  refresh_token_reused: CloseCode.tryAgain,
  rate_limited: CloseCode.tryAgain,
  admins_only: CloseCode.tryAgain,
  invalid_member: CloseCode.tryAgain,
  invalid_reply: CloseCode.tryAgain,
  idempotency_conflict: CloseCode.tryAgain,
  too_many_pinned: CloseCode.tryAgain,
  delete_window_passed: CloseCode.tryAgain,
  too_many_hidden: CloseCode.tryAgain,
  length_required: CloseCode.tryAgain,
  invalid_attachment: CloseCode.tryAgain,
  too_many_uploads: CloseCode.tryAgain,
  range_not_satisfiable: CloseCode.tryAgain,
  invalid_signature: CloseCode.tryAgain,
  not_a_group: CloseCode.tryAgain,
  group_full: CloseCode.tryAgain,
  member_not_found: CloseCode.tryAgain,
  no_change: CloseCode.tryAgain,
  last_admin: CloseCode.tryAgain,
  blocked: CloseCode.tryAgain,
  unknown_frame: CloseCode.tryAgain,
  binary_not_supported: CloseCode.tryAgain,
  misconfigured: CloseCode.tryAgain,
  unavailable: CloseCode.tryAgain,
  internal: CloseCode.tryAgain,
};

/** The close code a refused socket gets for an error. */
export function closeCodeForError(code: ErrorCode): CloseCode {
  return closeCodes[code];
}

/** Whether a client should reconnect (with backoff) after a close with this code. */
export function shouldReconnect(code: number): boolean {
  if (code >= 4000 && code < 4500) return false;
  return true;
}
