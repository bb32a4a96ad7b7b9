/**
 * What the benchmark reads about server processes from /proc: the process tree (to
 * find workerd under wrangler), CPU time (to show which process is saturated) and
 * resident memory (for the idle-socket slope). Linux only, like the machine the
 * targets were set for.
 */
import { readFileSync, readdirSync } from "node:fs";

const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ: 100 on every Linux architecture Node supports

/** The command line of a process, or "" when it is gone. */
export function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ").trim();
  } catch {
    return "";
  }
}

/** Direct children of a process (from every thread's `children` list). */
export function childPids(pid: number): number[] {
  const children = new Set<number>();
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  for (const tid of tasks) {
    try {
      for (const child of readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8").trim().split(/\s+/)) {
        if (child) children.add(Number(child));
      }
    } catch {
      // thread exited while we looked
    }
  }
  return [...children];
}

/** Every descendant of a process, breadth first. */
export function descendantPids(pid: number): number[] {
  const found: number[] = [];
  const queue = [pid];
  while (queue.length > 0 && found.length < 10_000) {
    const next = queue.shift()!;
    for (const child of childPids(next)) {
      found.push(child);
      queue.push(child);
    }
  }
  return found;
}

/** User + system CPU seconds a process has used so far (NaN when it is gone). */
export function cpuSeconds(pid: number): number {
  const { user, system } = cpuSplit(pid);
  return user + system;
}

/** User and system (kernel: syscalls, I/O) CPU seconds of a process so far. */
export function cpuSplit(pid: number): { user: number; system: number } {
  try {
    const [user, system] = userAndSystemTicks(readFileSync(`/proc/${pid}/stat`, "utf8"));
    return { user: user / CLOCK_TICKS_PER_SECOND, system: system / CLOCK_TICKS_PER_SECOND };
  } catch {
    return { user: Number.NaN, system: Number.NaN };
  }
}

/** CPU seconds per thread, to see whether one thread (the JS thread) is the limit. */
export function threadCpuSeconds(pid: number): Map<number, number> {
  const threads = new Map<number, number>();
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        threads.set(Number(tid), ticksOfStat(readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8")) / CLOCK_TICKS_PER_SECOND);
      } catch {
        // thread exited
      }
    }
  } catch {
    // process exited
  }
  return threads;
}

function ticksOfStat(stat: string): number {
  const [user, system] = userAndSystemTicks(stat);
  return user + system;
}

function userAndSystemTicks(stat: string): [number, number] {
  // The command name (field 2) may hold spaces: split after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  return [Number(fields[11]), Number(fields[12])];
}

/** Resident memory in KiB (VmRSS), NaN when the process is gone. */
export function residentKiB(pid: number): number {
  try {
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Open file descriptors of a process (NaN when it cannot be read). */
export function openDescriptors(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return Number.NaN;
  }
}

/** The soft limit on open files of a running process, from /proc/<pid>/limits. */
export function openFileLimit(pid: number): number {
  try {
    const match = /^Max open files\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/limits`, "utf8"));
    return match ? Number(match[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

export type ServerProcess = { role: string; pid: number };

/**
 * CPU used by each server process (and its busiest thread) between `start()` and
 * `stop()`, as a fraction of one core. A value near 1.0 for a busiest thread means
 * that thread was the bottleneck. `seconds` is the same CPU time (utime + stime) in
 * CPU seconds, not rounded through `cores`, for the per-message cost.
 */
export type ProcessCpu = { cores: number; systemCores: number; busiestThreadCores: number; seconds: number };

export class CpuMeter {
  readonly #processes: readonly ServerProcess[];
  #startedAt = 0;
  #before = new Map<number, { user: number; system: number }>();
  #threadsBefore = new Map<number, Map<number, number>>();

  constructor(processes: readonly ServerProcess[]) {
    this.#processes = processes;
  }

  start(): void {
    this.#startedAt = performance.now();
    for (const { pid } of this.#processes) {
      this.#before.set(pid, cpuSplit(pid));
      this.#threadsBefore.set(pid, threadCpuSeconds(pid));
    }
  }

  stop(): Record<string, ProcessCpu> {
    const seconds = (performance.now() - this.#startedAt) / 1000;
    const result: Record<string, ProcessCpu> = {};
    for (const { role, pid } of this.#processes) {
      const now = cpuSplit(pid);
      const before = this.#before.get(pid) ?? { user: Number.NaN, system: Number.NaN };
      const system = now.system - before.system;
      const used = now.user - before.user + system;
      const threadsBefore = this.#threadsBefore.get(pid) ?? new Map<number, number>();
      let busiest = 0;
      for (const [tid, threadSeconds] of threadCpuSeconds(pid)) busiest = Math.max(busiest, threadSeconds - (threadsBefore.get(tid) ?? 0));
      result[role] = { cores: round(used / seconds, 2), systemCores: round(system / seconds, 2), busiestThreadCores: round(busiest / seconds, 2), seconds: round(used, 2) };
    }
    return result;
  }
}

/** The benchmark client's own CPU (process.cpuUsage), as a fraction of one core. */
export class ClientCpuMeter {
  #startedAt = 0;
  #before: NodeJS.CpuUsage = process.cpuUsage();

  start(): void {
    this.#startedAt = performance.now();
    this.#before = process.cpuUsage();
  }

  /** Fraction of one core: the client runs on one JS thread, so near 1.0 means client-bound. */
  stop(): number {
    const used = process.cpuUsage(this.#before);
    const elapsedUs = (performance.now() - this.#startedAt) * 1000;
    return round((used.user + used.system) / elapsedUs, 2);
  }
}

export function round(value: number, digits = 2): number {
  if (!Number.isFinite(value)) return value;
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}
