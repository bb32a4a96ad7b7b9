/**
 * What every scenario module provides, and the context it runs in. A scenario runs
 * once per target and returns plain figures (they go into the JSON report as is);
 * `rows` then turns the figures of both targets into table rows with verdicts.
 */
import type { Parameters } from "../scenarios.ts";
import type { Target, TargetName } from "../targets/target.ts";
import { ChatSocket, closeAll, integrityOf, mapPool, type BenchUser, type ChatSocketOptions } from "../client.ts";
import { ClientCpuMeter, CpuMeter, round, type ProcessCpu } from "./process-stats.ts";
import { CpuProfiler, type ProfileSummary } from "./cpu-profile.ts";
import { sleep, waitUntil } from "./open-loop.ts";

export type RunContext = {
  params: Parameters;
  quick: boolean;
  /** A message body of params.bodyBytes ASCII bytes. */
  body: string;
  /** A clientId prefix never used before in this run (clientIds are idempotency keys per device). */
  nextTag: (hint: string) => string;
  log: (message: string) => void;
  /** performance.now() after which the run must wrap up. */
  deadline: number;
  /** With --profile: where CPU profiles of the Worker's measured phases go. */
  profileDirectory: string | null;
};

export type TableRow = {
  metric: string;
  workerd: string;
  bare: string;
  /** workerd relative to bare ws, when both ran (e.g. "0.45x" of the throughput). */
  ratio: string;
  target: string;
  /** "n/c": measured, but too noisy to decide (the notes say why). */
  verdict: "OK" | "MISS" | "n/c" | "";
};

export type FiguresByTarget<F> = Partial<Record<TargetName, F>>;

export interface Scenario<F> {
  readonly name: string;
  readonly title: string;
  /** Targets it makes sense on; the bare server has no history, accounts or eviction. */
  readonly targets: readonly TargetName[];
  run(target: Target, context: RunContext): Promise<F>;
  rows(figures: FiguresByTarget<F>, context: RunContext): TableRow[];
  /** Said in the output and the report (skips, shortened phases, what was not proven). */
  notes?(figures: FiguresByTarget<F>, context: RunContext): string[];
}

/** CPU of the client and of the server processes over one measured phase. */
export type CpuFigures = {
  /** The benchmark client's own CPU in cores (it has one JS thread: >= 0.9 means client-bound). */
  clientCores: number;
  clientBound: boolean;
  /** Per server process: cores used, of which in the kernel (syscalls, I/O), and its busiest thread. */
  server: Record<string, ProcessCpu>;
};

export const CLIENT_BOUND_CORES = 0.9;

/**
 * Server CPU seconds over one measured phase: utime + stime of every server process
 * (for wrangler dev its user runtime and its local proxy; for bare ws the one Node
 * process). A record without per-process seconds falls back to cores x wall time.
 * Unlike latency, this barely moves when other work shares the cores.
 */
export function serverCpuSeconds(cpu: CpuFigures & { wallMs?: number }): number {
  let total = 0;
  for (const process of Object.values(cpu.server)) {
    total += Number.isFinite(process.seconds) ? process.seconds : process.cores * ((cpu.wallMs ?? Number.NaN) / 1000);
  }
  return total;
}

/** Server CPU µs per unit of work done in the phase (a round trip, a delivered copy); NaN when none was done. */
export function serverCpuMicrosPer(cpu: CpuFigures & { wallMs?: number }, units: number): number {
  return units > 0 ? round((serverCpuSeconds(cpu) * 1e6) / units, 1) : Number.NaN;
}

let profiledPhases = 0;

/**
 * Wraps one measured phase: wall time, client and server CPU, and with --profile a
 * CPU profile of the Worker's isolate (started before the clock, so its start-up
 * cost is not in the phase; sampling itself costs the server a little CPU).
 */
export class PhaseMeter {
  readonly #client = new ClientCpuMeter();
  readonly #server: CpuMeter;
  readonly #target: Target;
  readonly #context: RunContext;
  readonly #phase: string;
  #profiler: CpuProfiler | null = null;
  #profileError = "";
  #startedAt = 0;

  constructor(target: Target, context: RunContext, phase: string) {
    this.#server = new CpuMeter(target.processes);
    this.#target = target;
    this.#context = context;
    this.#phase = phase;
  }

  async start(): Promise<void> {
    if (this.#context.profileDirectory && this.#target.inspectorPort !== undefined) {
      try {
        this.#profiler = await CpuProfiler.start(this.#target.inspectorPort);
      } catch (error) {
        this.#profileError = error instanceof Error ? error.message : String(error);
      }
    }
    this.#startedAt = performance.now();
    this.#client.start();
    this.#server.start();
  }

  async stop(): Promise<CpuFigures & { wallMs: number; profile?: ProfileSummary | string }> {
    const clientCores = this.#client.stop();
    const figures: CpuFigures & { wallMs: number; profile?: ProfileSummary | string } = {
      wallMs: round(performance.now() - this.#startedAt, 1),
      clientCores,
      clientBound: clientCores >= CLIENT_BOUND_CORES,
      server: this.#server.stop(),
    };
    if (this.#profiler) {
      const name = `${String(++profiledPhases).padStart(2, "0")}-${this.#phase}`;
      figures.profile = await this.#profiler.stop(this.#context.profileDirectory!, name).catch((error: unknown) => `profile failed: ${String(error)}`);
    } else if (this.#profileError) {
      figures.profile = `profile failed: ${this.#profileError}`;
    }
    return figures;
  }
}

/**
 * Opens sockets `concurrency` at a time and waits until each is ready or failed.
 * Used for setup (not measured): the connect storm has its own, all-at-once opener.
 */
export async function openSockets(
  specs: readonly { url: string; user: BenchUser; options?: Partial<ChatSocketOptions> }[],
  concurrency = 100,
  timeoutMs = 30_000,
): Promise<ChatSocket[]> {
  const sockets = await mapPool(specs, concurrency, async (spec) => {
    const socket = new ChatSocket({ ...spec.options, url: spec.url, user: spec.user });
    await waitUntil(() => socket.isReady || socket.failure !== null, timeoutMs, 5);
    return socket;
  });
  const { failures, failureSamples } = integrityOf(sockets);
  if (failures > 0 || sockets.some((s) => !s.isReady)) {
    await closeAll(sockets);
    throw new Error(`could not open ${failures} of ${sockets.length} sockets: ${failureSamples.join("; ")}`);
  }
  return sockets;
}

/**
 * Waits (workerd only) until the objects that setup woke have been evicted, so that
 * their eviction does not land in the measurement (see params.settleAfterSetupMs).
 * Sockets opened in setup may hibernate meanwhile: callers warm up after this.
 */
export async function settleAfterSetup(target: Target, context: RunContext): Promise<void> {
  const ms = context.params.settleAfterSetupMs;
  if (target.name !== "workerd" || ms <= 0 || performance.now() + ms > context.deadline) return;
  context.log(`    ${target.name}: ${ms / 1000} s quiet after setup (objects woken by setup get evicted)`);
  await sleep(ms);
}

/** Parses `<tag>.<index>` clientIds; -1 when the tag is another phase's. */
export function indexInPhase(clientId: string, tagDot: string): number {
  if (!clientId.startsWith(tagDot)) return -1;
  return Number(clientId.slice(tagDot.length));
}

// ---------------------------------------------------------------------------
// Formatting

export const ms = (value: number | undefined): string => (value === undefined || !Number.isFinite(value) ? "-" : `${fmt(value)} ms`);
export const micros = (value: number | undefined): string => (value === undefined || !Number.isFinite(value) ? "-" : `${fmt(value)} µs`);
export const perSecond = (value: number | undefined): string => (value === undefined || !Number.isFinite(value) ? "-" : `${fmt(value)}/s`);

export function fmt(value: number): string {
  if (!Number.isFinite(value)) return "-";
  const abs = Math.abs(value);
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : 3;
  return value.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

/** How workerd compares with bare ws: "2.1x" slower for times, "0.45x" of the rate for throughputs. */
export function ratio(workerd: number | undefined, bare: number | undefined): string {
  if (workerd === undefined || bare === undefined || !Number.isFinite(workerd) || !Number.isFinite(bare) || bare === 0) return "";
  return `${fmt(round(workerd / bare, 2))}x`;
}

export const verdict = (ok: boolean | undefined): "OK" | "MISS" | "" => (ok === undefined ? "" : ok ? "OK" : "MISS");
