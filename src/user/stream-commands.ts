import type {
  AppState,
  ChatSummary,
  DeleteResult,
  DeleteScope,
  MessageStatus,
  PresenceStateResult,
  PresenceSubscribeResult,
  PresenceWatch,
  ReceiptResult,
  ResumeResult,
  SendMessageRequest,
  SendResult,
  StreamClientFrame,
  StreamSyncResult,
  TypingResult,
  TypingState,
} from "../protocol/index.ts";
import { attempt } from "../lib/result.ts";
import type { CommandTable, Respond } from "../sockets/frame-dispatch.ts";
import type { ResumeSince, StreamSession } from "./device-streams.ts";
import { sendInput } from "../chat-room/send-input.ts";

/** What a device stream's frame handlers may ask of the account. */
export interface StreamCommands {
  /** Plans the device's catch-up; `respond` gets the plan, then the pages follow. */
  resume(ws: WebSocket, session: StreamSession, cursors: Record<string, number>, since: ResumeSince, respond: Respond<ResumeResult>): void;
  /** The client processed a catch-up batch. */
  sync(ws: WebSocket): StreamSyncResult;
  /** Forwards a message to the chat (same idempotency and ack as on a chat socket). */
  send(session: StreamSession, chatId: string, input: SendMessageRequest, respond: Respond<SendResult>): void;
  /** Marks the chat read up to `seq` for the account (every device's unread count follows). */
  read(chatId: string, seq: number, respond: Respond<ChatSummary>): void;
  /** A device of the account received the chat up to `seq`. */
  delivered(chatId: string, seq: number, respond: Respond<ReceiptResult>): void;
  /** The status of one of the account's own messages. */
  status(chatId: string, seq: number, respond: Respond<MessageStatus>): void;
  /** Passes a typing indicator to the chat's other members. */
  typing(chatId: string, state: TypingState, respond: Respond<TypingResult>): void;
  /** Deletes a message of one of the account's chats for everyone, or hides it for the account. */
  deleteMessage(chatId: string, seq: number, scope: DeleteScope, respond: Respond<DeleteResult>): void;
  /** This stream's app went to the foreground or the background (presence). */
  appState(ws: WebSocket, state: AppState): PresenceStateResult;
  /** Replaces the people this stream watches; `respond` gets their presence and the refusals. */
  watchPresence(ws: WebSocket, watch: PresenceWatch[], respond: Respond<PresenceSubscribeResult>): void;
}

/** One handler per device stream frame type. */
export const streamCommands: CommandTable<StreamCommands, StreamSession, StreamClientFrame> = {
  resume(account, ws, session, { cursors, receiptsSince, hiddenSince }, respond) {
    account.resume(ws, session, cursors, { receipts: receiptsSince, hidden: hiddenSince }, respond);
  },

  sync(account, ws, _session, _frame, respond) {
    respond(attempt(() => account.sync(ws)));
  },

  send(account, _ws, session, { chatId, clientId, body, attachments, replyToSeq }, respond) {
    account.send(session, chatId, sendInput({ clientId, body, attachments, replyToSeq }), respond);
  },

  read(account, _ws, _session, { chatId, seq }, respond) {
    account.read(chatId, seq, respond);
  },

  delivered(account, _ws, _session, { chatId, seq }, respond) {
    account.delivered(chatId, seq, respond);
  },

  status(account, _ws, _session, { chatId, seq }, respond) {
    account.status(chatId, seq, respond);
  },

  typing(account, _ws, _session, { chatId, state }, respond) {
    account.typing(chatId, state, respond);
  },

  delete(account, _ws, _session, { chatId, seq, for: scope }, respond) {
    account.deleteMessage(chatId, seq, scope, respond);
  },

  "presence.state"(account, ws, _session, { state }, respond) {
    respond(attempt(() => account.appState(ws, state)));
  },

  "presence.subscribe"(account, ws, _session, { watch }, respond) {
    account.watchPresence(ws, watch, respond);
  },
};
