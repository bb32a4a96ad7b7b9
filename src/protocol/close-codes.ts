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
  /** The user is not a member of this chat (never was, or was removed). Do not reconnect. */
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

/** The close code a refused socket gets for an error (see ErrorCode). */
export function closeCodeForError(code: string): CloseCode {
  switch (code) {
    case "unauthorized":
    case "invalid_token":
    case "token_expired":
      return CloseCode.unauthorized;
    case "device_revoked":
      return CloseCode.deviceRevoked;
    case "not_a_member":
    case "forbidden":
      return CloseCode.notAMember;
    case "chat_not_found":
      return CloseCode.chatNotFound;
    case "validation_failed":
    case "invalid_cursor":
      return CloseCode.badRequest;
    default:
      return CloseCode.tryAgain;
  }
}

/** Whether a client should reconnect (with backoff) after a close with this code. */
export function shouldReconnect(code: number): boolean {
  if (code >= 4000 && code < 4500) return false;
  return true;
}
