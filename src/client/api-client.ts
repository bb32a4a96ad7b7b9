import {
  AddMembersResult,
  BlockList,
  ChangeResult,
  Chat,
  ChatList,
  ChatSummary,
  InvitationList,
  DeviceList,
  ErrorResponse,
  HistoryPage,
  Me,
  MessageStatus,
  ReceiptResult,
  Presence,
  OtpResponse,
  SendResult,
  TokenResponse,
  UserLookupResponse,
  type ChatSettingsPatch,
  type CreateChatRequest,
  type ErrorBody,
  type MemberRole,
  type ProfilePatch,
  type UpdateChatRequest,
  type SendMessageRequest,
} from "../protocol/index.ts";
import type { z } from "zod";

/** A failed API call: the HTTP status and the server's error body. */
export class ApiError extends Error {
  readonly status: number;
  readonly body: ErrorBody;
  constructor(status: number, body: ErrorBody) {
    super(`${status} ${body.code}: ${body.message}`);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
  get code(): ErrorBody["code"] {
    return this.body.code;
  }
}

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

  constructor(options: ApiClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#session = options.session ?? null;
    if (this.#session) this.#expiresAt = tokenExpiry(this.#session.credentials);
    this.#fetch = options.fetch ?? ((input, init) => fetch(input, init));
    this.#headers = options.headers;
    this.#onSession = options.onSession;
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
      const shared = typeof this.#headers === "function" ? this.#headers() : this.#headers;
      for (const extra of [shared, options.headers]) for (const [name, value] of Object.entries(extra ?? {})) headers.set(name, value);
      const token = withSession ? await this.accessToken() : typeof options.auth === "string" ? options.auth : "";
      if (token) headers.set("authorization", `Bearer ${token}`);
      const init: RequestInit = { method, headers };
      if (body !== undefined) init.body = body;
      return this.#fetch(`${this.baseUrl}${path}`, init);
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

async function errorOf(response: Response): Promise<ApiError> {
  const parsed = ErrorResponse.safeParse(await response.json().catch(() => null));
  if (parsed.success) return new ApiError(response.status, parsed.data.error);
  return new ApiError(response.status, { code: "internal", message: `HTTP ${response.status}`, retryable: response.status >= 500 });
}

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

/** `?a=1&b=2` from the defined values, or "" when there are none. */
function queryString(query: Record<string, string | number | undefined>): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) if (value !== undefined) params.set(key, String(value));
  return params.size > 0 ? `?${params}` : "";
}
