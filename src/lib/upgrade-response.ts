import { closeCodeForError, type ErrorBody, type ErrorFrame } from "../protocol/index.ts";
import { ForwardedIdentity, WS_SUBPROTOCOL } from "./forwarded-identity.ts";

/** The 101 answer to an upgrade, echoing `chat.v1` when offered (browsers drop it otherwise). */
export function upgradeResponse(requestHeaders: Headers, client: WebSocket): Response {
  const headers = new Headers();
  if (ForwardedIdentity.offeredSubprotocol(requestHeaders)) headers.set("Sec-WebSocket-Protocol", WS_SUBPROTOCOL);
  return new Response(null, { status: 101, webSocket: client, headers });
}

/**
 * Refuses an upgrade after accepting it: one error frame, then a close code. A
 * browser cannot read the status of a failed upgrade (it only sees 1006, which
 * means "reconnect"), so this is the only way to tell it why.
 */
export function refuseUpgrade(requestHeaders: Headers, error: ErrorBody): Response {
  const [client, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
  server.accept();
  const frame: ErrorFrame = { type: "error", error };
  server.send(JSON.stringify(frame));
  server.close(closeCodeForError(error.code), error.code);
  return upgradeResponse(requestHeaders, client);
}
