/** The TypeScript SDK. It depends on the protocol schemas only, never on server code. */
export { ApiClient, ApiError, type ApiClientOptions, type ApiRequestOptions, type LoginOptions } from "./api-client.ts";
export { DEFAULT_SINGLE_UPLOAD_LIMIT, type MediaData, type UploadOptions } from "./media-upload.ts";
export { type MessageDeletion } from "./message-deletes.ts";
export { type HiddenEntries } from "./hidden-messages.ts";
export { DeviceStream, StreamRequestError, streamUrl, type DeviceStreamOptions } from "./device-stream.ts";
export { PresenceWatcher, type PresenceTransport } from "./presence-watch.ts";
export { ChatConnection, type ChatConnectionOptions, type ConnectionStatus } from "./chat-connection.ts";
export {
  CursorStore,
  MemoryCursorStorage,
  WebStorageCursorStorage,
  type AcceptOptions,
  type CursorStorage,
  type WebStorageLike,
} from "./cursor-store.ts";
export {
  ConnectionLost,
  MemoryOutboxStorage,
  Outbox,
  SendError,
  WebStorageOutboxStorage,
  type OutboxMessage,
  type OutboxOptions,
  type OutgoingMessage,
  type OutboxStorage,
  type SendTransport,
} from "./outbox.ts";
export { DeliveryReports, DELIVERY_REPORT_INTERVAL_MS, DELIVERY_REPORTS_PER_SECOND } from "./delivery-reports.ts";
export { ReceiptBook, type ChatReceipts } from "./receipt-book.ts";
export { TypingIndicators, TypingReporter } from "./typing.ts";
export * from "../protocol/index.ts";
