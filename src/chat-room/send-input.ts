import type { SendMessageRequest } from "../protocol/index.ts";

/**
 * A send frame's message fields as the chat stores them: the frame's own fields (type,
 * id, chatId) dropped, and absent fields left out rather than set to undefined, so the
 * request hash a retry is compared with is the same whichever path the send took.
 */
export function sendInput(fields: SendMessageRequest): SendMessageRequest {
  const input: SendMessageRequest = { clientId: fields.clientId };
  if (fields.body !== undefined) input.body = fields.body;
  if (fields.attachments !== undefined) input.attachments = fields.attachments;
  if (fields.replyToSeq !== undefined) input.replyToSeq = fields.replyToSeq;
  return input;
}
