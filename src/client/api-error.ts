import { ErrorResponse, type ErrorBody } from "../protocol/index.ts";

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

/** The ApiError of a failed response: its error body, or one made from the status when the body is unreadable. */
export async function errorOf(response: Response): Promise<ApiError> {
  const parsed = ErrorResponse.safeParse(await response.json().catch(() => null));
  if (parsed.success) return new ApiError(response.status, parsed.data.error);
  return new ApiError(response.status, { code: "internal", message: `HTTP ${response.status}`, retryable: response.status >= 500 });
}
