/** Fixed protocol limits. Deployment-tunable limits live in the Worker's vars. */
export const Limits = {
  /** UTF-8 bytes of a message body (exact: bodies are well-formed Unicode). */
  maxBodyBytes: 64 * 1024,
  /** UTF-16 code units of a client-chosen id (frame id, clientId). */
  maxIdLength: 64,
  /**
   * UTF-16 code units of a group's name, a description, a display name and an
   * about, each counted after NFC normalisation and trimming.
   */
  maxChatNameLength: 128,
  maxChatDescriptionLength: 2048,
  maxDisplayNameLength: 64,
  maxAboutLength: 256,
  /** Members of a group, the creator included. */
  maxGroupMembers: 1024,
  /** Accounts one request may add to a group. */
  maxMembersPerAdd: 256,
  /** Accounts one account may block. */
  maxBlockedUsers: 1000,
  /** Group invitations an account keeps waiting; a new one beyond this drops the oldest. */
  maxPendingInvitations: 100,
  /** An invitation not accepted within this long (7 days) expires. */
  invitationTtlMs: 7 * 24 * 3_600_000,
  /** Chats one account may have pinned at once. */
  maxPinnedChats: 3,
  /** Events per history page and per catch-up page. */
  maxPageSize: 200,
  /**
   * Bytes of event JSON (UTF-8) per history page and per catch-up page. A page always
   * holds at least one event, so a page exceeds this only when its one event does.
   */
  maxPageBytes: 256 * 1024,
  /** Chats per page of GET /api/chats: the default and the most a client may ask for. */
  defaultChatListPageSize: 50,
  maxChatListPageSize: 200,
  /** Chats one `resume` frame may list. */
  maxStreamCursors: 10_000,
  /**
   * Members of a chat whose events the device stream carries; a bigger chat sends its
   * `chat` entry (merged, at the account fan-out's pace) and the client fetches history.
   */
  maxStreamedChatMembers: 256,
  /**
   * Frames one device may send on its streams per second, in bursts of
   * `streamFrameBurst`; beyond that a frame is answered `rate_limited` (with
   * `retryAfterMs`) and not handled.
   */
  streamFramesPerSecond: 50,
  streamFrameBurst: 200,
  /**
   * Members of a chat up to which a message's status comes with the detail per
   * recipient (times delivered and seen); bigger chats answer the aggregate only.
   */
  maxReceiptDetailMembers: 256,
  /**
   * Watermark advances kept per member and kind (delivered, seen) for those times: a
   * message covered by an older advance reports the time of the oldest one kept.
   */
  receiptAdvancesKept: 32,
  /** A typing indicator shows this long (ms) unless renewed; clients renew about every half of it. */
  typingExpiresMs: 6_000,
  /** A member's `typing` is forwarded at most once per this interval (ms) per chat; more are answered `forwarded: false`. */
  typingIntervalMs: 2_000,
  /** Device streams one device may have open; opening another closes its oldest (close code 4010). */
  maxStreamsPerDevice: 2,
  /** Entries of one `presence.subscribe` frame (the people on the device's screen). */
  maxPresenceWatches: 64,
  /**
   * How long a presence subscription lasts: the client sends it again before then
   * (the SDK every three quarters of it) or its pushes stop.
   */
  presenceLeaseMs: 60_000,
  /** Accounts one account keeps presence leases for; a new one beyond this drops the one that ends first. */
  maxPresenceWatchers: 1024,
  /** `presence.subscribe` frames one device may send per minute, in bursts of `presenceSubscribeBurst`; beyond it `rate_limited`. */
  presenceSubscribesPerMinute: 30,
  presenceSubscribeBurst: 10,
  /**
   * The least time (ms) between two rounds of presence pushes of one account: changes
   * in between are pushed together, as the latest presence, so flipping the app's state
   * in a loop reaches its watchers at most once a second.
   */
  presencePushIntervalMs: 1_000,
  /** Sockets one device may have open on one chat; opening another closes its oldest (close code 4010). */
  maxSocketsPerDevicePerChat: 4,
  /**
   * A socket frame (in characters) or REST body (in bytes) larger than this is refused
   * before it is parsed. JSON escaping can make a valid 64 KiB body up to 6 times
   * longer (`\u0000` for each control character), so this leaves room for that.
   */
  maxFrameBytes: 6 * 64 * 1024 + 4096,
  /** Files one message may carry (its body is then their caption). */
  maxAttachmentsPerMessage: 10,
  /** Characters of an attachment's base64 thumbnail (about 12 KB of image). */
  maxThumbnailChars: 16 * 1024,
  /** UTF-16 code units of an attachment's file name. */
  maxMediaNameLength: 255,
  /** An upload not attached to a message within this long (24 h) is deleted. */
  pendingUploadTtlMs: 24 * 3_600_000,
  /** Uploads one member may have waiting (not yet attached) in one chat. */
  maxPendingUploadsPerMember: 32,
  /** Bytes of a profile picture (an image: JPEG, PNG, GIF, WebP, HEIC or AVIF). */
  maxAvatarBytes: 5 * 1024 * 1024,
  /** The longest a signed media URL is valid (10 minutes). */
  maxSignedUrlTtlMs: 10 * 60_000,
  /** Messages one account may have hidden ("delete for me"), across its chats. */
  maxHiddenMessages: 50_000,
  /** Entries per page of hidden messages (a `hidden` frame, GET /api/me/hidden). */
  maxHiddenPageSize: 500,
} as const;

/**
 * UTF-8 bytes of a string: 1 to 3 per code unit of the Basic Multilingual Plane, 4 per
 * surrogate pair. Exact for well-formed text, which is all a body can be; an unpaired
 * surrogate counts 3 bytes, as U+FFFD, the most a UTF-8 encoder writes for it.
 */
export function utf8ByteLength(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      bytes += 4;
      i += 1;
    } else bytes += 3;
  }
  return bytes;
}

/** Whether a body is within maxBodyBytes of UTF-8, counting only when it could matter. */
export function bodyFitsLimit(text: string): boolean {
  if (text.length * 3 <= Limits.maxBodyBytes) return true; // at most 3 bytes per UTF-16 unit
  if (text.length > Limits.maxBodyBytes) return false; // at least 1 byte per UTF-16 unit
  return utf8ByteLength(text) <= Limits.maxBodyBytes;
}
