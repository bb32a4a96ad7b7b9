import type { ClientFrame, SendResult, SyncResult } from "../protocol/index.ts";
import type { Sender } from "./event-log.ts";
import type { SessionState } from "./sessions.ts";

/** What a command handler may ask of its room. */
export interface RoomCommands {
  sendMessage(sender: Sender, input: Omit<Extract<ClientFrame, { type: "send" }>, "type" | "id">): SendResult;
  /** Sends the socket its next catch-up page (nothing once it is live); returns its cursor. */
  sendNextPage(ws: WebSocket, session: SessionState): number;
}

type Handler<K extends ClientFrame["type"]> = (
  room: RoomCommands,
  ws: WebSocket,
  session: SessionState,
  frame: Extract<ClientFrame, { type: K }>,
) => unknown;

/** One handler per client frame type: a frame type without a handler fails to compile. */
export const commands: { [K in ClientFrame["type"]]: Handler<K> } = {
  send(room, _ws, session, { clientId, body, replyToSeq }): SendResult {
    const input = replyToSeq === undefined ? { clientId, body } : { clientId, body, replyToSeq };
    return room.sendMessage({ userId: session.userId, deviceId: session.deviceId }, input);
  },

  sync(room, ws, session): SyncResult {
    return { cursor: room.sendNextPage(ws, session) };
  },
};
