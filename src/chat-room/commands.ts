import type { ClientFrame, DeleteResult, DeleteScope, MessageStatus, ReceiptResult, SendMessageRequest, SendResult, SyncResult, TypingResult, TypingState } from "../protocol/index.ts";
import type { Outcome } from "../lib/result.ts";
import type { ReceiptKind } from "./receipts.ts";
import { attempt } from "../lib/result.ts";
import type { CommandTable, Respond } from "../sockets/frame-dispatch.ts";
import type { Sender } from "./event-log.ts";
import type { SessionState } from "./sessions.ts";
import { sendInput } from "./send-input.ts";

/** What a command handler may ask of its room. */
export interface RoomCommands {
  /** Queues a message for the next group commit; `respond` gets the SENT ack or the error. */
  enqueueSend(sender: Sender, input: SendMessageRequest, respond: Respond<SendResult>): void;
  /** Sends the socket its next catch-up page (nothing once it is live); returns its cursor. */
  sendNextPage(ws: WebSocket, session: SessionState): number;
  /** Merges a delivered or seen report into the user's watermarks. */
  receipt(userId: string, kind: ReceiptKind, seq: number): ReceiptResult;
  /** The status of one of the user's own messages. */
  status(userId: string, seq: number): Outcome<MessageStatus>;
  /** Passes a typing indicator to the other members (throttled, never stored). */
  typing(userId: string, state: TypingState): Outcome<TypingResult>;
  /** Deletes a message for everyone, or hides it for the user's account (`respond` once the account answered). */
  deleteMessage(userId: string, seq: number, scope: DeleteScope, respond: Respond<DeleteResult>): void;
}

/** One handler per chat socket frame type. */
export const commands: CommandTable<RoomCommands, SessionState, ClientFrame> = {
  send(room, _ws, session, { clientId, body, attachments, replyToSeq }, respond) {
    room.enqueueSend({ userId: session.userId, deviceId: session.deviceId }, sendInput({ clientId, body, attachments, replyToSeq }), respond);
  },

  sync(room, ws, session, _frame, respond) {
    respond(attempt((): SyncResult => ({ cursor: room.sendNextPage(ws, session) })));
  },

  delivered(room, _ws, session, { seq }, respond) {
    respond(attempt(() => room.receipt(session.userId, "delivered", seq)));
  },

  read(room, _ws, session, { seq }, respond) {
    respond(attempt(() => room.receipt(session.userId, "seen", seq)));
  },

  status(room, _ws, session, { seq }, respond) {
    respond(room.status(session.userId, seq));
  },

  typing(room, _ws, session, { state }, respond) {
    respond(room.typing(session.userId, state));
  },

  delete(room, _ws, session, { seq, for: scope }, respond) {
    room.deleteMessage(session.userId, seq, scope, respond);
  },
};
