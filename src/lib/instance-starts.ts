/**
 * How many times each Durable Object class was constructed in this isolate. A
 * constructor runs only when an object starts (first use, or waking after eviction
 * or hibernation), so the count tells tests and the benchmark whether a heartbeat
 * woke an object or whether it was really evicted.
 *
 * The counts live on globalThis under a registered symbol so that a debugger can read
 * them with one `Runtime.evaluate` (the benchmark does), without enabling breakpoints:
 * an attached debugger slows the very starts being measured.
 */
const STARTS = Symbol.for("edgechat.instanceStarts");

type Global = typeof globalThis & { [STARTS]?: Record<string, number> };
const starts: Record<string, number> = ((globalThis as Global)[STARTS] ??= {});

export function countInstanceStart(className: string): void {
  starts[className] = (starts[className] ?? 0) + 1;
}

export function instanceStarts(className: string): number {
  return starts[className] ?? 0;
}
