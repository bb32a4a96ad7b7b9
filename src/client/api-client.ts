import {
  AddMembersResult,
  BlockList,
  ChangeResult,
  Chat,
  ChatList,
  ChatSummary,
  InvitationList,
  DeleteResult,
  DeviceList,
  HiddenPage,
  HistoryPage,
  Me,
  MessageStatus,
  ReceiptResult,
  Presence,
  OtpResponse,
  SendResult,
  SignedMediaUrl,
  TokenResponse,
  UploadResult,
  UserLookupResponse,
  type ChatSettingsPatch,
  type CreateChatRequest,
  type DeleteScope,
  type MemberRole,
  type ProfilePatch,
  type UpdateChatRequest,
  type SendMessageRequest,
} from "../protocol/index.ts";
import { z } from "zod";
import { ApiError, errorOf } from "./api-error.ts";
import { DEFAULT_SINGLE_UPLOAD_LIMIT, mediaBlob, uploadBody, uploadMedia, type MediaData, type UploadOptions } from "./media-upload.ts";

export { ApiError };

export type ApiClientOptions = {
  /** For example `https://chat.example.com` or `http://localhost:8787`. */
  baseUrl: string;
  /** A session saved from an earlier login. */
  session?: TokenResponse;
  /** Called whenever tokens change (login, refresh), so the app can persist them. */
  onSession?: (session: TokenResponse | null) => void;
  /** The fetch to call instead of the global one (a wrapper, or a Worker's own `fetch` in tests). */
  fetch?: typeof fetch;
  /**
   * Headers sent with every request, for example `CF-Connecting-IP` when the client
   * speaks for another address (a trusted proxy, a test). A function is called anew
   * for each request.
   */
  headers?: Record<string, string> | (() => Record<string, string>);
  /**
   * Files larger than this (bytes) are uploaded in parts (`uploadMedia`). Default 25 MiB,
   * the server's default `MEDIA_MAX_BYTES`; set it to the deployment's value.
   */
  singleUploadLimit?: number;
};

/** One request through `ApiClient.request`. */
export type ApiRequestOptions = {
  /** Sent as JSON. */
  body?: unknown;
  /** Sent as it is (labelled JSON unless `headers` name another content type): for bodies made by hand. */
  rawBody?: string;
  /**
   * The bearer token. By default the session's, refreshed when about to expire and
   * once more when the server answers `token_expired`; a string sends that token as it
   * is; false sends none.
   */
  auth?: boolean | string;
  /** Headers for this request only, over the client's. */
  headers?: Record<string, string>;
  /**
   * Bytes to send as they are (an upload), labelled `application/octet-stream` unless
   * `headers` name a type. A function, called for each attempt: a stream can be read once.
   */
  bytes?: () => BodyInit;
  signal?: AbortSignal;
  /** The fetch for this request only (an upload that reports its progress). */
  fetch?: typeof fetch;
};

export type LoginOptions = {
  phone: string;
  /** The code the SMS brought. */
  code: string;
  /** From the `requestOtp` answer that sent the code. */
  attemptId: string;
  /** Shown in the device list. */
  deviceName?: string;
};

/** Refresh this long before the access token expires. */
const REFRESH_MARGIN_MS = 30_000;

/** A signed media URL is used again until this long before it expires (or a quarter of its life, if shorter). */
const SIGNED_URL_MARGIN_MS = 60_000;
/** Signed URLs kept; beyond it the oldest is dropped. */
const SIGNED_URLS_KEPT = 500;

const AvatarResult = z.object({ avatarId: z.string() });

/**
 * The REST half of the SDK: login, tokens (refreshed before they expire), profile,
 * devices, chats and history. Responses are validated against the protocol schemas.
 */
export class ApiClient {
  readonly baseUrl: string;
  #session: TokenResponse | null;
  #expiresAt = 0;
  #refreshing: Promise<TokenResponse> | null = null;
  readonly #fetch: typeof fetch;
  readonly #headers: ApiClientOptions["headers"];
  readonly #onSession: ((session: TokenResponse | null) => void) | undefined;
  readonly #customFetch: boolean;
  readonly #singleUploadLimit: number;
  /** Signed media URLs by `chatId/mediaId`, with when they were asked for (oldest first). */
  readonly #signedUrls = new Map<string, SignedMediaUrl & { askedAt: number }>();
  /** Signed URLs being asked for: callers at the same time share one request. */
  readonly #signing = new Map<string, Promise<SignedMediaUrl>>();

  constructor(options: ApiClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#session = options.session ?? null;
    if (this.#session) this.#expiresAt = tokenExpiry(this.#session.credentials);
    this.#fetch = options.fetch ?? ((input, init) => fetch(input, init));
    this.#headers = options.headers;
    this.#onSession = options.onSession;
    this.#customFetch = options.fetch !== undefined;
    this.#singleUploadLimit = options.singleUploadLimit ?? DEFAULT_SINGLE_UPLOAD_LIMIT;
  }

  get session(): TokenResponse | null {
    return this.#session;
  }

  /**
   * Sends a login code to `phone`. Keep the answer's `attemptId`: the code works only
   * together with it (`login`). `resendAfterSeconds` is how long until another code
   * may be requested for this number.
   */
  requestOtp(phone: string): Promise<OtpResponse> {
    return this.#call("POST", "/api/otp", OtpResponse, { body: { phone }, auth: false });
  }

  /** Trades the code of one `requestOtp` (with that answer's `attemptId`) for tokens. */
  async login(request: LoginOptions): Promise<TokenResponse> {
    const { phone, code, attemptId, deviceName } = request;
    const body = deviceName ? { phone, code, attemptId, deviceName } : { phone, code, attemptId };
    return this.#adopt(await this.#call("POST", "/api/auth/login", TokenResponse, { body, auth: false }));
  }

  /** A valid access token, refreshed first when it is about to expire. */
  async accessToken(): Promise<string> {
    if (!this.#session) throw new Error("not logged in");
    if (Date.now() > this.#expiresAt - REFRESH_MARGIN_MS) await this.refresh();
    return this.#session.credentials;
  }

  /** Trades the refresh token for new tokens; concurrent callers share one request. */
  refresh(): Promise<TokenResponse> {
    const session = this.#session;
    if (!session) return Promise.reject(new Error("not logged in"));
    this.#refreshing ??= this.#call("POST", "/api/auth/refresh", TokenResponse, {
      body: { refreshToken: session.refreshToken },
      auth: false,
    })
      .then((next) => this.#adopt(next))
      .finally(() => {
        this.#refreshing = null;
      });
    return this.#refreshing;
  }

  async logout(): Promise<void> {
    await this.#call("POST", "/api/auth/logout", null);
    this.#session = null;
    this.#onSession?.(null);
  }

  me = () => this.#call("GET", "/api/me", Me);
  updateProfile = (patch: ProfilePatch) => this.#call("PATCH", "/api/me", Me, { body: patch });
  devices = () => this.#call("GET", "/api/devices", DeviceList);
  revokeDevice = (deviceId: string) => this.#call("DELETE", `/api/devices/${encodeURIComponent(deviceId)}`, null);
  lookupUser = (phone: string) => this.#call("GET", `/api/users/lookup?phone=${encodeURIComponent(phone)}`, UserLookupResponse);
  /** A user's presence, for someone who shares `chatId` with them (else `not_found`); for a live view, DeviceStream.watchPresence. */
  presence = (userId: string, chatId: string) =>
    this.#call("GET", `/api/users/${encodeURIComponent(userId)}/presence${queryString({ chatId })}`, Presence);
  createChat = (request: CreateChatRequest) => this.#call("POST", "/api/chats", Chat, { body: request });
  /**
   * A page of the caller's chats, latest activity first; pass the page's `nextCursor` for
   * the next. `archived`: only the archived chats (true) or only the others (false).
   */
  chats(query: { limit?: number; cursor?: string; archived?: boolean } = {}): Promise<ChatList> {
    const { archived, ...rest } = query;
    return this.#call("GET", `/api/chats${queryString({ ...rest, archived: archived === undefined ? undefined : String(archived) })}`, ChatList);
  }
  /** The caller read the chat up to `seq` (on this device); answers the chat's entry with its new unread count. */
  markRead = (chatId: string, seq: number) => this.#call("POST", `${chatPath(chatId)}/read`, ChatSummary, { body: { seq } });
  /** Pins, mutes (until a time in ms; null unmutes) or archives a chat, for all the caller's devices. */
  /** A device of the caller has the chat up to `seq` (DELIVERED; the SDK's streams report it by themselves). */
  reportDelivered = (chatId: string, seq: number) => this.#call("POST", `${chatPath(chatId)}/delivered`, ReceiptResult, { body: { seq } });
  /** The status of one of the caller's own messages, with the detail per recipient in chats up to 256 members. */
  messageStatus = (chatId: string, seq: number) => this.#call("GET", `${chatPath(chatId)}/messages/${seq}/status`, MessageStatus);
  updateChatSettings = (chatId: string, patch: ChatSettingsPatch) => this.#call("PUT", `${chatPath(chatId)}/settings`, ChatSummary, { body: patch });
  chat = (chatId: string) => this.#call("GET", `/api/chats/${encodeURIComponent(chatId)}`, Chat);

  history(chatId: string, query: { before?: number; after?: number; limit?: number } = {}): Promise<HistoryPage> {
    return this.#call("GET", `/api/chats/${encodeURIComponent(chatId)}/messages${queryString(query)}`, HistoryPage);
  }

  /** The REST send: for bots and for chats that are not open. Idempotent by clientId. */
  sendMessage(chatId: string, message: SendMessageRequest): Promise<SendResult> {
    return this.#call("POST", `/api/chats/${encodeURIComponent(chatId)}/messages`, SendResult, { body: message });
  }

  /**
   * Deletes the message at `seq`: for everyone (its sender within the delete window, or
   * a group admin) or for the caller only. A delete for me answers the hidden entry:
   * give it to `cursors.hide([...])` when no DeviceStream or ChatConnection made the call.
   */
  deleteMessage = (chatId: string, seq: number, scope: DeleteScope) =>
    this.#call("DELETE", `${chatPath(chatId)}/messages/${seq}${queryString({ for: scope })}`, DeleteResult);

  /** A page of the messages the caller hid for itself, after `hiddenNo` `after` (at most 500 a page). */
  hiddenMessages = (after = 0, limit?: number) => this.#call("GET", `/api/me/hidden${queryString({ after, limit })}`, HiddenPage);

  // ---- Media ----

  /**
   * Uploads a file to a chat for a message (attach it with `sendMessage` within 24 h).
   * Files larger than `singleUploadLimit` go in parts, one after another; a part that
   * fails for a moment is sent again (up to 5 tries, with backoff), and any other
   * failure or `signal` aborts the whole upload on the server too. `onProgress(sent,
   * total)` is called as the bytes go (per part for a large file), up to `total`. What
   * the file is (`kind`, `contentType`) comes from its bytes, not from `contentType`.
   *
   * @example
   * const upload = await api.uploadMedia(chatId, file, { name: file.name, onProgress: (sent, total) => bar(sent / total) });
   * await stream.sendMessage(chatId, { attachments: [{ mediaId: upload.mediaId, name: file.name }] });
   */
  uploadMedia(chatId: string, data: MediaData, options: UploadOptions = {}): Promise<UploadResult> {
    return uploadMedia(
      { call: (method, path, schema, request) => this.#call(method, path, schema, request), customFetch: this.#customFetch, singleUploadLimit: this.#singleUploadLimit },
      chatPath(chatId),
      data,
      options,
    );
  }

  /**
   * A URL of a chat's file for an `<img>`, `<video>` or link, valid for a few minutes
   * (absolute, signed: no token needed). Kept and given again until shortly before it
   * expires, so a list of pictures asks once per file.
   */
  mediaUrl(chatId: string, mediaId: string): Promise<SignedMediaUrl> {
    const key = `${chatId}/${mediaId}`;
    const known = this.#signedUrls.get(key);
    if (known && Date.now() < known.expiresAt - Math.min(SIGNED_URL_MARGIN_MS, (known.expiresAt - known.askedAt) / 4)) {
      return Promise.resolve({ url: known.url, expiresAt: known.expiresAt });
    }
    let asking = this.#signing.get(key);
    if (!asking) {
      const askedAt = Date.now();
      asking = this.#call("POST", `${chatPath(chatId)}/media/${encodeURIComponent(mediaId)}/url`, SignedMediaUrl)
        .then((signed) => {
          const url = new URL(signed.url, `${this.baseUrl}/`).toString();
          this.#signedUrls.delete(key);
          this.#signedUrls.set(key, { url, expiresAt: signed.expiresAt, askedAt });
          if (this.#signedUrls.size > SIGNED_URLS_KEPT) this.#signedUrls.delete(this.#signedUrls.keys().next().value!);
          return { url, expiresAt: signed.expiresAt };
        })
        .finally(() => this.#signing.delete(key));
      this.#signing.set(key, asking);
    }
    return asking;
  }

  /**
   * A chat's file, with the token (status 200, or 206 for a `range` of bytes, `end`
   * inclusive). Rejects with an ApiError when refused (`not_found`, `range_not_satisfiable`).
   */
  async downloadMedia(chatId: string, mediaId: string, options: { range?: { start: number; end?: number }; signal?: AbortSignal } = {}): Promise<Response> {
    const headers: Record<string, string> = {};
    if (options.range) headers.range = `bytes=${options.range.start}-${options.range.end ?? ""}`;
    const request: ApiRequestOptions = { headers };
    if (options.signal) request.signal = options.signal;
    const response = await this.request("GET", `${chatPath(chatId)}/media/${encodeURIComponent(mediaId)}`, request);
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  /** Sets the caller's profile picture (a JPEG, PNG or WebP, as bytes). */
  async setAvatar(data: MediaData, options: { contentType?: string; signal?: AbortSignal } = {}): Promise<{ avatarId: string }> {
    const blob = mediaBlob(data);
    const request: ApiRequestOptions = uploadBody(blob, options.contentType);
    if (options.signal) request.signal = options.signal;
    return this.#call("PUT", "/api/me/avatar", AvatarResult, request);
  }

  removeAvatar = () => this.#call("DELETE", "/api/me/avatar", null);

  /**
   * Where a user's profile picture is (fetched with the token: see `downloadAvatar`).
   * `chatId`: a chat shared with that user, required for anyone's picture but one's own.
   */
  avatarUrl(userId: string, chatId?: string): string {
    return `${this.baseUrl}${avatarPath(userId, chatId)}`;
  }

  /**
   * A user's profile picture, or null when they have none (or share no `chatId` with the
   * caller). `chatId` is required for anyone's picture but one's own (400 without it).
   */
  async downloadAvatar(userId: string, chatId?: string): Promise<Response | null> {
    const response = await this.request("GET", avatarPath(userId, chatId));
    if (response.status === 404) return null;
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  // ---- Membership (groups and broadcast chats) ----

  /** Renames or describes a chat (admins). */
  updateChat = (chatId: string, patch: UpdateChatRequest) => this.#call("PATCH", chatPath(chatId), ChangeResult, { body: patch });
  /** Adds accounts (admins); those whose setting asks first get an invitation instead. */
  addMembers = (chatId: string, userIds: string[]) => this.#call("POST", `${chatPath(chatId)}/members`, AddMembersResult, { body: { userIds } });
  /** Removes a member (admins): their sockets on the chat close with 4003. */
  removeMember = (chatId: string, userId: string) => this.#call("DELETE", `${chatPath(chatId)}/members/${encodeURIComponent(userId)}`, ChangeResult);
  setRole = (chatId: string, userId: string, role: MemberRole) =>
    this.#call("PUT", `${chatPath(chatId)}/members/${encodeURIComponent(userId)}/role`, ChangeResult, { body: { role } });
  leaveChat = (chatId: string) => this.#call("POST", `${chatPath(chatId)}/leave`, ChangeResult);
  invitations = () => this.#call("GET", "/api/invitations", InvitationList);
  acceptInvitation = (chatId: string) => this.#call("POST", `/api/invitations/${encodeURIComponent(chatId)}/accept`, ChangeResult);
  declineInvitation = (chatId: string) => this.#call("POST", `/api/invitations/${encodeURIComponent(chatId)}/decline`, null);

  // ---- Blocks ----

  blocks = () => this.#call("GET", "/api/blocks", BlockList);
  block = (userId: string) => this.#call("PUT", `/api/blocks/${encodeURIComponent(userId)}`, null);
  unblock = (userId: string) => this.#call("DELETE", `/api/blocks/${encodeURIComponent(userId)}`, null);

  /** The WebSocket URL of a chat, resuming after `after` when given. */
  socketUrl(chatId: string, after?: number): string {
    const url = new URL(`${this.baseUrl}/chat/${encodeURIComponent(chatId)}`);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (after !== undefined) url.searchParams.set("after", String(after));
    return url.toString();
  }

  #adopt(session: TokenResponse): TokenResponse {
    this.#session = session;
    this.#expiresAt = tokenExpiry(session.credentials);
    this.#onSession?.(session);
    return session;
  }

  /**
   * One request to the API, answered with the Response as it is, whatever its status:
   * for callers that need the status or the headers. The typed methods are built on it.
   */
  async request(method: string, path: string, options: ApiRequestOptions = {}): Promise<Response> {
    const withSession = options.auth === undefined || options.auth === true;
    const body = options.rawBody ?? (options.body === undefined ? undefined : JSON.stringify(options.body));
    const send = async () => {
      const headers = new Headers();
      if (body !== undefined) headers.set("content-type", "application/json");
      if (options.bytes) headers.set("content-type", "application/octet-stream");
      const shared = typeof this.#headers === "function" ? this.#headers() : this.#headers;
      for (const extra of [shared, options.headers]) for (const [name, value] of Object.entries(extra ?? {})) headers.set(name, value);
      const token = withSession ? await this.accessToken() : typeof options.auth === "string" ? options.auth : "";
      if (token) headers.set("authorization", `Bearer ${token}`);
      const init: RequestInit = { method, headers };
      if (body !== undefined) init.body = body;
      if (options.bytes) {
        init.body = options.bytes();
        // A stream body needs this in fetch (the request is sent while it is read).
        if (init.body instanceof ReadableStream) (init as RequestInit & { duplex: "half" }).duplex = "half";
      }
      if (options.signal) init.signal = options.signal;
      return (options.fetch ?? this.#fetch)(`${this.baseUrl}${path}`, init);
    };
    const response = await send();
    if (response.status !== 401 || !withSession || !this.#session) return response;
    const error = await errorOf(response.clone());
    if (error.body.code !== "token_expired") return response;
    await this.refresh();
    return send();
  }

  async #call<T>(method: string, path: string, schema: z.ZodType<T> | null, options: ApiRequestOptions = {}): Promise<T> {
    const response = await this.request(method, path, options);
    if (!response.ok) throw await errorOf(response);
    if (schema === null) return undefined as T;
    return schema.parse(await response.json());
  }
}

const chatPath = (chatId: string) => `/api/chats/${encodeURIComponent(chatId)}`;

/** The `exp` of a JWS, in ms (0 if unreadable: then it is refreshed on first use). */
function tokenExpiry(token: string): number {
  try {
    const payload = token.split(".")[1] ?? "";
    const json = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/"))) as { exp?: number };
    return (json.exp ?? 0) * 1000;
  } catch {
    return 0;
  }
}

/** The path of a user's picture, with the shared chat when one is named. */
function avatarPath(userId: string, chatId: string | undefined): string {
  return `/api/users/${encodeURIComponent(userId)}/avatar${queryString({ chatId })}`;
}

/** `?a=1&b=2` from the defined values, or "" when there are none. */
function queryString(query: Record<string, string | number | undefined>): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) if (value !== undefined) params.set(key, String(value));
  return params.size > 0 ? `?${params}` : "";
}
