/** The wire protocol: zod schemas only, shared by the server, the SDK, the tests and the benchmark. */
export * from "./errors.ts";
export * from "./close-codes.ts";
export * from "./limits.ts";
export * from "./auth.ts";
export * from "./media.ts";
export * from "./events.ts";
export * from "./chats.ts";
export * from "./membership.ts";
export * from "./frames.ts";
export * from "./stream.ts";
export * from "./receipts.ts";
export * from "./typing.ts";
export * from "./presence.ts";
export * from "./notifications.ts";
export * from "./deletes.ts";
