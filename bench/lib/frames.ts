/**
 * Cheap reading of the frames a benchmark client receives most: an `events` frame
 * holding one live message. At 100k deliveries/s a full JSON.parse of every frame is
 * a large share of the client's single core, so the hot path reads the two fields it
 * needs (seq, clientId) straight from the bytes and falls back to JSON.parse (and the
 * protocol schemas, see ChatSocket) for anything else.
 */

const EVENTS_PREFIX = Buffer.from('{"type":"events",');
const MESSAGE_EVENT = Buffer.from('{"type":"message","seq":');
const CLIENT_ID = Buffer.from('"clientId":"');
const LIVE_SUFFIX = Buffer.from('],"more":false}');
const QUOTE = 0x22;
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;

export type LiveMessage = { seq: number; clientId: string };

/**
 * The seq and clientId of a live `events` frame with exactly one message event, or
 * null when the frame is anything else (the caller then parses it fully).
 */
export function scanLiveMessage(data: Buffer): LiveMessage | null {
  if (data.length < 64 || data.compare(EVENTS_PREFIX, 0, EVENTS_PREFIX.length, 0, EVENTS_PREFIX.length) !== 0) return null;
  if (data.compare(LIVE_SUFFIX, 0, LIVE_SUFFIX.length, data.length - LIVE_SUFFIX.length) !== 0) return null;
  const eventAt = data.indexOf(MESSAGE_EVENT, EVENTS_PREFIX.length);
  if (eventAt < 0) return null;
  let position = eventAt + MESSAGE_EVENT.length;
  let seq = 0;
  let digits = 0;
  for (; position < data.length; position++) {
    const byte = data[position]!;
    if (byte < DIGIT_0 || byte > DIGIT_9) break;
    seq = seq * 10 + (byte - DIGIT_0);
    digits++;
  }
  if (digits === 0) return null;
  const idAt = data.indexOf(CLIENT_ID, position);
  if (idAt < 0) return null;
  const idStart = idAt + CLIENT_ID.length;
  const idEnd = data.indexOf(QUOTE, idStart);
  if (idEnd < 0) return null;
  // A second message in the same frame: let the full parser handle it.
  if (data.indexOf(MESSAGE_EVENT, idEnd) >= 0) return null;
  return { seq, clientId: data.toString("latin1", idStart, idEnd) };
}
