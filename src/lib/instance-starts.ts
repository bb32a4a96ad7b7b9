/**
 * How many times each Durable Object class was constructed in this isolate. A
 * constructor runs only when an object starts (first use, or waking after eviction
 * or hibernation), so the count tells tests and the benchmark whether a heartbeat
 * woke an object or whether it was really evicted.
 */
const starts = new Map<string, number>();

export function countInstanceStart(className: string): void {
  starts.set(className, (starts.get(className) ?? 0) + 1);
}

export function instanceStarts(className: string): number {
  return starts.get(className) ?? 0;
}
