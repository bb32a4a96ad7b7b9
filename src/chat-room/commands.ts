import type { ClientFrame, SendMessageRequest, SendResult, SyncResult } from "../protocol/index.ts";
import type { Outcome } from "../lib/result.ts";
import { attempt } from "../lib/result.ts";
import type { Sender } from "./event-log.ts";
import type { SessionState } from "./sessions.ts";

/** Answers a client frame; called exactly once, possibly after the frame's turn (sends). */
export type Respond<T> = (outcome: Outcome<T>) => void;

/** What a command handler may ask of its room. */
export interface RoomCommands {
  /** Queues a message for the next group commit; `respond` gets the SENT ack or the error. */
  enqueueSend(sender: Sender, input: SendMessageRequest, respond: Respond<SendResult>): void;
  /** Sends the socket its next catch-up page (nothing once it is live); returns its cursor. */
  sendNextPage(ws: WebSocket, session: SessionState): number;
}

type Handler<K extends ClientFrame["type"]> = (
  room: RoomCommands,
  ws: WebSocket,
  session: SessionState,
  frame: Extract<ClientFrame, { type: K }>,
  respond: Respond<unknown>,
) => void;

/** One handler per client frame type: a frame type without a handler fails to compile. */
export const commands: { [K in ClientFrame["type"]]: Handler<K> } = {
  send(room, _ws, session, { clientId, body, replyToSeq }, respond) {
    const input = replyToSeq === undefined ? { clientId, body } : { clientId, body, replyToSeq };
    room.enqueueSend({ userId: session.userId, deviceId: session.deviceId }, input, respond);
  },

  sync(room, ws, session, _frame, respond) {
    respond(attempt((): SyncResult => ({ cursor: room.sendNextPage(ws, session) })));
  },
};
