import { createHash } from "node:crypto";
import type { SendMessageRequest } from "../protocol/index.ts";

/**
 * What identifies a send request apart from its clientId: its content, hashed. A retry
 * of a stored message is recognised by this hash rather than by the stored content, so
 * the original ack stays the answer even once a delete has removed the body.
 * Synchronous (node:crypto), so the send path keeps storing a batch in one turn.
 */
export function requestHash(input: Pick<SendMessageRequest, "body" | "replyToSeq">): string {
  // A JSON array: unambiguous whatever the body holds (quotes, separators, any text).
  return createHash("sha256").update(JSON.stringify([input.body, input.replyToSeq ?? null])).digest("base64url");
}
