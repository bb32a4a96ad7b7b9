import { describeError, log } from "../lib/log.ts";
import { CloseCode } from "../protocol/close-codes.ts";
import type { ErrorBody, ServerFrame, StreamServerFrame } from "../protocol/index.ts";

/** Writing frames to and closing sockets, the same way for every object that holds them. */

export function sendFrame(ws: WebSocket, frame: ServerFrame | StreamServerFrame): void {
  sendText(ws, JSON.stringify(frame));
}

/** An `events` frame from events already serialized (a catch-up page), without parsing them again. */
export function sendEventsFrame(ws: WebSocket, chatId: string, eventsJson: string[], more: boolean): void {
  sendText(ws, eventsFrameText(chatId, eventsJson, more));
}

export function eventsFrameText(chatId: string, eventsJson: string[], more: boolean): string {
  return `{"type":"events","chatId":${JSON.stringify(chatId)},"events":[${eventsJson.join(",")}],"more":${more}}`;
}

export function sendErrorFrame(ws: WebSocket, error: ErrorBody): void {
  sendFrame(ws, { type: "error", error });
}

export function sendText(ws: WebSocket, text: string): void {
  try {
    ws.send(text);
  } catch (error) {
    // The socket closed under us; its close handler cleans up.
    log.warn("send on a closed socket", describeError(error));
  }
}

export function closeQuietly(ws: WebSocket, code: number, reason: string): void {
  try {
    ws.close(code, reason);
  } catch {
    // Already closed.
  }
}

/** Answers a client's close (1005 and 1006 are reserved and cannot be sent back). */
export function answerClose(ws: WebSocket, code: number): void {
  closeQuietly(ws, code === 1005 || code === 1006 ? CloseCode.normal : code, "closed");
}
