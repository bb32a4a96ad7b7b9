/**
 * Open-loop load: message i is due at `start + i / rate`, whatever the server is
 * doing. Latency is measured from that intended time, so a server that stalls
 * cannot hide its delay by slowing the client down (coordinated omission).
 */
import { LatencyRecorder } from "./latency.ts";

export type OpenLoopOptions = {
  count: number;
  ratePerSecond: number;
  /** Sends message `index`; `intendedAt` is its due time on the performance.now() clock. */
  send: (index: number, intendedAt: number) => void;
  /**
   * Finish the last millisecond before each send on setImmediate instead of a timer
   * (timers have 1 ms granularity). Costs client CPU, so only for low-rate latency runs.
   */
  precise?: boolean;
  /** Give up when the client falls this far behind its own schedule. */
  maxLagMs?: number;
};

export type OpenLoopResult = {
  sent: number;
  startedAt: number;
  /** How late the client itself was in sending (actual - intended): the client's own noise floor. */
  sendLag: LatencyRecorder;
  /** True when the client fell more than maxLagMs behind and stopped early. */
  abandoned: boolean;
};

export function runOpenLoop(options: OpenLoopOptions): Promise<OpenLoopResult> {
  const { count, ratePerSecond, send, precise = false, maxLagMs = 5_000 } = options;
  const intervalMs = 1000 / ratePerSecond;
  const startedAt = performance.now() + 1; // a moment to return to the caller first
  const sendLag = new LatencyRecorder();
  let next = 0;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      try {
        const now = performance.now();
        // Everything already due goes out now, in order, each with its own intended time.
        while (next < count) {
          const intendedAt = startedAt + next * intervalMs;
          if (intendedAt > now) break;
          if (now - intendedAt > maxLagMs) {
            resolve({ sent: next, startedAt, sendLag, abandoned: true });
            return;
          }
          send(next, intendedAt);
          sendLag.recordMs(performance.now() - intendedAt);
          next++;
        }
        if (next >= count) {
          resolve({ sent: next, startedAt, sendLag, abandoned: false });
          return;
        }
        const waitMs = startedAt + next * intervalMs - performance.now();
        if (precise && waitMs < 1.5) setImmediate(tick);
        else setTimeout(tick, precise ? Math.max(0, Math.floor(waitMs - 1)) : Math.max(0, waitMs));
      } catch (error) {
        reject(error);
      }
    };
    setTimeout(tick, 1);
  });
}

/** Resolves when `done()` is true, polling; resolves false at the deadline. */
export async function waitUntil(done: () => boolean, timeoutMs: number, pollMs = 10): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!done()) {
    if (performance.now() >= deadline) return false;
    await sleep(pollMs);
  }
  return true;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
