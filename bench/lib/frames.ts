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

const STREAM_EVENTS_PREFIX = Buffer.from('{"type":"events","chatId":"');
const FIRST_MESSAGE = Buffer.from('","events":[{"type":"message","seq":');
/** Between two events of one frame (a quote inside a string is escaped, so this never occurs in a body). */
const NEXT_EVENT = Buffer.from('},{"type":"');

export type StreamLiveMessage = LiveMessage & { chatId: string };

/**
 * The chat, seq and clientId of an `events` frame whose only event is a message, as a
 * device stream receives them live, or null for anything else (a frame of several
 * events, which a busy chat's pushes often are, is parsed in full by the caller).
 */
export function scanStreamMessage(data: Buffer): StreamLiveMessage | null {
  if (data.length < 96 || data.compare(STREAM_EVENTS_PREFIX, 0, STREAM_EVENTS_PREFIX.length, 0, STREAM_EVENTS_PREFIX.length) !== 0) return null;
  if (data.compare(LIVE_SUFFIX, 0, LIVE_SUFFIX.length, data.length - LIVE_SUFFIX.length) !== 0) return null;
  const chatEnd = data.indexOf(QUOTE, STREAM_EVENTS_PREFIX.length);
  if (chatEnd < 0 || data.compare(FIRST_MESSAGE, 0, FIRST_MESSAGE.length, chatEnd, chatEnd + FIRST_MESSAGE.length) !== 0) return null;
  let position = chatEnd + FIRST_MESSAGE.length;
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
  if (data.indexOf(NEXT_EVENT, idEnd) >= 0) return null;
  return { chatId: data.toString("latin1", STREAM_EVENTS_PREFIX.length, chatEnd), seq, clientId: data.toString("latin1", idStart, idEnd) };
}
