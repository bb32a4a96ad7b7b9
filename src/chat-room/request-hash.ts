import { createHash } from "node:crypto";
import type { SendMessageRequest } from "../protocol/index.ts";

/**
 * What identifies a send request apart from its clientId: its content, hashed. A retry
 * of a stored message is recognised by this hash rather than by the stored content, so
 * the original ack stays the answer even once a delete has removed the body.
 * Synchronous (node:crypto), so the send path keeps storing a batch in one turn.
 */
export function requestHash(input: Pick<SendMessageRequest, "body" | "replyToSeq" | "attachments">): string {
  // A JSON array: unambiguous whatever the body holds (quotes, separators, any text).
  // Attachments are appended only when present, so text messages hash as they always have.
  const fields: unknown[] = [input.body ?? null, input.replyToSeq ?? null];
  if (input.attachments !== undefined) fields.push(input.attachments);
  return createHash("sha256").update(JSON.stringify(fields)).digest("base64url");
}
