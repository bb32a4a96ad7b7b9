/**
 * CPU profiles of the Worker's isolate (`--profile`): V8's sampling profiler through
 * the inspector, started and stopped around a measured phase. The raw profile is
 * saved as .cpuprofile (open it in Chrome DevTools) and summarized into the report:
 * where the JS thread spent its time, by function (self and inclusive).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CdpSession } from "./cdp.ts";
import { round } from "./process-stats.ts";

type CallFrame = { functionName: string; url: string; lineNumber: number; columnNumber: number };
type ProfileNode = { id: number; callFrame: CallFrame; hitCount?: number; children?: number[] };
export type CpuProfile = { nodes: ProfileNode[]; startTime: number; endTime: number; samples?: number[]; timeDeltas?: number[] };

/** `percent` is the share of samples (workerd samples unevenly, so no times are derived). */
export type ProfileEntry = { function: string; samples: number; percent: number };
export type ProfileSummary = {
  file: string;
  sampledMs: number;
  samples: number;
  /** Share of samples where the isolate ran no JS (waiting for I/O or events). */
  idlePercent: number;
  garbageCollectorPercent: number;
  topSelf: ProfileEntry[];
  topInclusive: ProfileEntry[];
};

const SAMPLING_INTERVAL_US = 250;

export class CpuProfiler {
  readonly #session: CdpSession;

  private constructor(session: CdpSession) {
    this.#session = session;
  }

  static async start(inspectorPort: number): Promise<CpuProfiler> {
    const session = await CdpSession.connect(inspectorPort);
    try {
      await session.call("Profiler.enable");
      await session.call("Profiler.setSamplingInterval", { interval: SAMPLING_INTERVAL_US });
      await session.call("Profiler.start");
    } catch (error) {
      session.terminate();
      throw error;
    }
    return new CpuProfiler(session);
  }

  /** Stops, saves the profile under `directory` and returns its summary. */
  async stop(directory: string, name: string): Promise<ProfileSummary> {
    try {
      const { profile } = (await this.#session.call("Profiler.stop", {}, 60_000)) as { profile: CpuProfile };
      await this.#session.call("Profiler.disable").catch(() => undefined);
      mkdirSync(directory, { recursive: true });
      const file = join(directory, `${name}.cpuprofile`);
      writeFileSync(file, JSON.stringify(profile));
      return summarize(profile, file);
    } finally {
      this.#session.close();
    }
  }
}

/** Self and inclusive time per function (name + file:line), the top 12 of each. */
export function summarize(profile: CpuProfile, file: string): ProfileSummary {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const samples = profile.samples ?? [];
  const totalMs = (profile.endTime - profile.startTime) / 1000;
  const label = (frame: CallFrame) => {
    const file = frame.url.split("/").pop() || frame.url || "native";
    return `${frame.functionName || "(anonymous)"} ${file}:${frame.lineNumber + 1}`;
  };
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let idle = 0;
  let gc = 0;
  for (const id of samples) {
    const node = byId.get(id);
    if (!node) continue;
    const name = node.callFrame.functionName;
    if (name === "(idle)") idle++;
    if (name === "(garbage collector)") gc++;
    const key = label(node.callFrame);
    self.set(key, (self.get(key) ?? 0) + 1);
    // Each function once per sample, however often it recurs on the stack.
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const frame = byId.get(at)!.callFrame;
      if (frame.functionName === "(root)") continue;
      const frameKey = label(frame);
      if (seen.has(frameKey)) continue;
      seen.add(frameKey);
      inclusive.set(frameKey, (inclusive.get(frameKey) ?? 0) + 1);
    }
  }
  const top = (counts: Map<string, number>) =>
    [...counts.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 12)
      .map(([fn, count]) => ({ function: fn, samples: count, percent: round((100 * count) / Math.max(1, samples.length), 1) }));
  return {
    file,
    sampledMs: round(totalMs, 0),
    samples: samples.length,
    idlePercent: round((100 * idle) / Math.max(1, samples.length), 1),
    garbageCollectorPercent: round((100 * gc) / Math.max(1, samples.length), 1),
    topSelf: top(self),
    topInclusive: top(inclusive),
  };
}
