/**
 * When each chat's fan-out last brought every member's account to a head: the last
 * `KEPT` records of this isolate, newest last. Kept on globalThis under a registered
 * symbol, like the instance-start counts, so the benchmark reads them with one
 * `Runtime.evaluate` through the inspector and measures the lag from a message's
 * store time to the moment every account knew it, on the server's own clock.
 */
const DONE = Symbol.for("edgechat.fanOutDone");
const KEPT = 4096;

export type FanOutDone = { chatId: string; headSeq: number; at: number };

type Global = typeof globalThis & { [DONE]?: FanOutDone[] };
const records: FanOutDone[] = ((globalThis as Global)[DONE] ??= []);

export function recordFanOutDone(chatId: string, headSeq: number, at: number): void {
  records.push({ chatId, headSeq, at });
  if (records.length > KEPT) records.splice(0, records.length - KEPT);
}
