/** Fixed protocol limits. Deployment-tunable limits live in the Worker's vars. */
export const Limits = {
  /** UTF-8 bytes of a message body. */
  maxBodyBytes: 64 * 1024,
  /** Characters of a client-chosen id (frame id, clientId). */
  maxIdLength: 64,
  /** A group's name. */
  maxChatNameLength: 128,
  maxChatDescriptionLength: 2048,
  maxDisplayNameLength: 64,
  maxAboutLength: 256,
  /** Members of a group, the creator included. */
  maxGroupMembers: 1024,
  /** Events per history page and per catch-up page. */
  maxPageSize: 200,
  /**
   * A socket frame (in characters) or REST body (in bytes) larger than this is refused
   * before it is parsed. JSON escaping can make a valid 64 KiB body up to 6 times
   * longer (`\u0000` for each control character), so this leaves room for that.
   */
  maxFrameBytes: 6 * 64 * 1024 + 4096,
} as const;

const encoder = new TextEncoder();
/** Whether a body is within maxBodyBytes of UTF-8, encoding only when it could matter. */
export function bodyFitsLimit(text: string): boolean {
  if (text.length * 3 <= Limits.maxBodyBytes) return true; // at most 3 bytes per UTF-16 unit
  if (text.length > Limits.maxBodyBytes) return false;
  return encoder.encode(text).length <= Limits.maxBodyBytes;
}
