/**
 * `npm run bench` (full) and `npm run bench -- --quick` (reduced, under 60 s).
 *
 * Starts the Worker under wrangler dev and the bare ws baseline, logs users in,
 * runs every scenario against both, prints a table with OK/MISS per target and
 * writes a JSON report to bench/results/. Everything is bounded: each wait has a
 * timeout and a watchdog ends the whole run after params.runTimeoutMs.
 *
 * Options: --quick, --only=name1,name2 (scenario names, see SCENARIOS), --profile
 * (CPU profiles of the Worker during each measured phase, saved next to the report;
 * sampling costs the server some CPU, so profiled figures are not for comparison), --help.
 */
import { cpus, freemem, loadavg, release, totalmem, type as osType } from "node:os";
import { readdirSync } from "node:fs";
import { parseArgs } from "node:util";
import { parametersFor, Targets, usersNeeded } from "./scenarios.ts";
import { formatTable, verdictCounts, writeReport, type ScenarioReport } from "./report.ts";
import { commandLine, descendantPids } from "./lib/process-stats.ts";
import { sleep } from "./lib/open-loop.ts";
import type { RunContext, Scenario } from "./lib/scenario.ts";
import { startBareServer } from "./targets/bare-server.ts";
import { packageVersion, WranglerDevTarget } from "./targets/wrangler-dev.ts";
import { learnWorkerContext } from "./lib/instance-start-probe.ts";
import type { Target } from "./targets/target.ts";
import { oneToOneClosedLoop, oneToOneLatency } from "./scenarios/one-to-one.ts";
import { fanOut100, fanOut1000, manyChats } from "./scenarios/fan-out.ts";
import { connectStorm, idleSockets } from "./scenarios/connections.ts";
import { history } from "./scenarios/history.ts";
import { media } from "./scenarios/media.ts";
import { reconnectHerd } from "./scenarios/reconnect-herd.ts";
import { wakeAfterEviction } from "./scenarios/wake-after-eviction.ts";
import { accountFanOut } from "./scenarios/account-fan-out.ts";
import { streamGroup, streamOneToOne, streamReconnect, streamStorm } from "./scenarios/device-streams.ts";
import { groupReceipts, receiptLatency } from "./scenarios/receipts.ts";
import { presenceChurn } from "./scenarios/presence.ts";

/** In the order of the issue's table, which is the order of the printed table. */
const SCENARIOS: Scenario<any>[] = [
  oneToOneLatency,
  oneToOneClosedLoop,
  fanOut100,
  fanOut1000,
  manyChats,
  connectStorm,
  idleSockets,
  history,
  media,
  reconnectHerd,
  accountFanOut,
  streamReconnect,
  streamOneToOne,
  streamGroup,
  streamStorm,
  receiptLatency,
  groupReceipts,
  presenceChurn,
  wakeAfterEviction,
];

/**
 * In the order of running. Idle sockets first: resident memory only ever reaches new
 * highs (memory of evicted objects is not given back), so after the load scenarios
 * the runtime sits on a high-water mark that hides the sockets' own growth. Eviction
 * last: its debugger probe must not touch the other figures.
 */
const RUN_ORDER: Scenario<any>[] = [idleSockets, ...SCENARIOS.filter((s) => s !== idleSockets)];

/** Kept back from the run's time budget for stopping the servers and writing the report. */
const WRAP_UP_MS = 4_000;

const { values: options } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    profile: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
  strict: true,
});
if (options.help) {
  console.log(`usage: npm run bench [-- --quick] [-- --profile] [-- --only=${SCENARIOS.map((s) => s.name).join(",")}]`);
  process.exit(0);
}

const mode = options.quick ? "quick" : "full";
const params = parametersFor(mode);
const only = options.only ? new Set(options.only.split(",").map((s) => s.trim())) : null;
for (const name of only ?? []) {
  if (!SCENARIOS.some((s) => s.name === name)) throw new Error(`unknown scenario ${name}; known: ${SCENARIOS.map((s) => s.name).join(", ")}`);
}
const selected = RUN_ORDER.filter((s) => !only || only.has(s.name));

const startedAtDate = new Date();
const runStartedAt = performance.now();
const log = (message: string) => process.stderr.write(`[bench ${((performance.now() - runStartedAt) / 1000).toFixed(1).padStart(5)}s] ${message}\n`);
const targets: Target[] = [];
const scenarioReports: ScenarioReport[] = [];
const runNotes: string[] = [];
const machineAtStart = machine();

// ---------------------------------------------------------------------------
// Stopping: always, whatever happens, and only what we started.

let stopping: Promise<void> | null = null;
function stopTargets(): Promise<void> {
  stopping ??= Promise.all(targets.map((t) => t.stop().catch((error) => log(`stopping ${t.name}: ${error}`)))).then(() => undefined);
  return stopping;
}

const watchdog = setTimeout(() => {
  log(`run timeout (${params.runTimeoutMs / 1000} s) reached: stopping`);
  runNotes.push(`the run hit its ${params.runTimeoutMs / 1000} s watchdog and was cut short`);
  void finish(2);
}, params.runTimeoutMs);

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    log(`${signal}: stopping`);
    runNotes.push(`interrupted by ${signal}`);
    void finish(130);
  });
}

// ---------------------------------------------------------------------------

let finishing = false;
async function finish(exitCode: number): Promise<never> {
  if (finishing) return new Promise<never>(() => {});
  finishing = true;
  clearTimeout(watchdog);
  await Promise.race([stopTargets(), sleep(12_000)]);
  const wrangler = targets.find((t): t is WranglerDevTarget => t instanceof WranglerDevTarget);
  const counts = verdictCounts(scenarioReports);
  const report = {
    benchmark: "edgechat chat backend: wrangler dev vs bare ws",
    mode,
    profiled: options.profile,
    startedAt: startedAtDate.toISOString(),
    durationMs: Math.round(performance.now() - runStartedAt),
    exitCode,
    machine: { ...machineAtStart, loadAverageAtEnd: loadavg().map((l) => Math.round(l * 100) / 100) },
    versions: {
      node: process.version,
      wrangler: packageVersion("wrangler"),
      workerd: wrangler?.launch.workerdVersion ?? "not started",
      ws: packageVersion("ws"),
      hdrHistogramJs: packageVersion("hdr-histogram-js"),
    },
    servers: Object.fromEntries(targets.map((t) => [t.name, { description: t.description, processes: t.processes, setup: roundSetup(t.setup) }])),
    launch: wrangler?.launch ?? null,
    parameters: params,
    targets: Targets,
    summary: { ok: counts.ok, miss: counts.miss, inconclusive: counts.inconclusive, scenarios: scenarioReports.map((s) => s.name) },
    notes: [...runNotes, ...scenarioReports.flatMap((s) => s.notes)],
    scenarios: scenarioReports,
  };
  const table = formatTable(scenarioReports);
  process.stdout.write(`\n${table}\n\n`);
  for (const note of report.notes) process.stdout.write(`- ${note}\n`);
  const path = writeReport(report, mode, startedAtDate);
  process.stdout.write(`\n${counts.ok} OK, ${counts.miss} MISS${counts.inconclusive ? `, ${counts.inconclusive} n/c (inconclusive)` : ""}. Mode ${mode}, ${(report.durationMs / 1000).toFixed(1)} s. Report: ${path}\n`);
  process.exit(exitCode);
}

async function main(): Promise<void> {
  log(`mode ${mode}: ${selected.map((s) => s.name).join(", ")}`);
  const [wrangler, bare] = await Promise.all([WranglerDevTarget.start({ startTimeoutMs: params.wranglerStartTimeoutMs }), startBareServer()]);
  targets.push(wrangler, bare);
  log(`wrangler dev serving after ${wrangler.launch.startMs} ms (${wrangler.launch.readySignal}); ${wrangler.launch.openFileLimitNote}`);
  runNotes.push(`wrangler dev: ${wrangler.launch.openFileLimitNote}`);
  runNotes.push(`wrangler dev readiness: ${wrangler.launch.readySignal}`);

  if (wrangler.inspectorPort !== undefined) {
    await learnWorkerContext(wrangler.inspectorPort).catch((error: unknown) => runNotes.push(`inspector: could not learn the Worker's execution context (${String(error)}): eviction and hibernation are not proven`));
  }
  await wrangler.verifyClientIpPassThrough();
  log(`cf-connecting-ip: ${wrangler.launch.clientIpPassThrough}`);
  runNotes.push(`cf-connecting-ip pass-through: ${wrangler.launch.clientIpPassThrough}`);
  // Every user is logged in once, up front, except when idle sockets run first: they
  // are measured on a fresh runtime holding only their own few accounts, because a
  // bulk login leaves ~800 MiB of resident high-water mark that hides their growth.
  const userCount = usersNeeded(params);
  let everyUserLoggedIn = false;
  const logInEveryUser = async () => {
    if (everyUserLoggedIn) return;
    everyUserLoggedIn = true;
    const before = wrangler.setup.userMs;
    await wrangler.users(userCount);
    log(`${userCount} users logged in in ${Math.round(wrangler.setup.userMs - before)} ms (setup, not in any figure)`);
  };
  if (selected[0] !== idleSockets) await logInEveryUser();

  const context: RunContext = {
    params,
    quick: mode === "quick",
    body: "x".repeat(params.bodyBytes),
    nextTag: (() => {
      let n = 0;
      return (hint: string) => `${hint}${(++n).toString(36)}`;
    })(),
    log,
    deadline: runStartedAt + params.runTimeoutMs - WRAP_UP_MS,
    profileDirectory: options.profile ? profileDirectory(startedAtDate) : null,
  };
  if (params.settleAfterSetupMs <= 0) {
    runNotes.push("--quick: no quiet period between setup and measurement, so workerd figures may include the eviction of objects woken by setup (the full run waits)");
  }
  if (context.profileDirectory) {
    runNotes.push(`--profile: CPU profiles of the Worker's isolate were taken during measured phases (${context.profileDirectory}); sampling slows the server a little, so these figures are not for comparison`);
  }

  for (const scenario of selected) {
    const scenarioStartedAt = performance.now();
    const entry: ScenarioReport = { name: scenario.name, title: scenario.title, figures: {}, errors: {}, rows: [], notes: [], elapsedMs: 0 };
    scenarioReports.push(entry);
    scenarioReports.sort((a, b) => SCENARIOS.findIndex((s) => s.name === a.name) - SCENARIOS.findIndex((s) => s.name === b.name));
    if (performance.now() > context.deadline) {
      entry.notes.push(`${scenario.title}: skipped, the run's time budget was spent`);
      continue;
    }
    if (scenario !== idleSockets) await logInEveryUser();
    log(`${scenario.title}`);
    for (const target of targets) {
      if (!scenario.targets.includes(target.name)) continue;
      if (target instanceof WranglerDevTarget && !target.alive) {
        entry.errors[target.name] = "wrangler dev is no longer running";
        continue;
      }
      // wrangler dev restarts its runtime when src/ changes (people edit it while we
      // run) or when it crashes: a scenario that saw a restart is run once more.
      for (let attempt = 1; attempt <= 2; attempt++) {
        delete entry.errors[target.name];
        let runtimeBefore = 0;
        try {
          if (target instanceof WranglerDevTarget) await target.refreshProcesses();
          runtimeBefore = target.memoryPid;
          entry.figures[target.name] = await scenario.run(target, context);
        } catch (error) {
          entry.errors[target.name] = error instanceof Error ? error.message : String(error);
          log(`  ${target.name} failed: ${entry.errors[target.name]}`);
        }
        if (!(target instanceof WranglerDevTarget)) break;
        await target.refreshProcesses().catch(() => undefined);
        const restarted = target.memoryPid !== runtimeBefore || commandLine(runtimeBefore) === "";
        if (!restarted) break;
        // A new runtime has a new execution context for the start counter.
        if (target.inspectorPort !== undefined) await learnWorkerContext(target.inspectorPort).catch(() => undefined);
        const retry = attempt === 1 && performance.now() < context.deadline;
        entry.notes.push(`${scenario.title}: the workerd runtime restarted during the run (pid ${runtimeBefore} -> ${target.memoryPid}; wrangler dev reloads when src/ changes)${retry ? ": run again" : ": figures may be affected"}`);
        log(`  the workerd runtime restarted during ${scenario.name}${retry ? ": running it again" : ""}`);
        if (!retry) break;
      }
      await sleep(300); // let the server settle before the other target (or scenario)
    }
    entry.rows = scenario.rows(entry.figures, context);
    entry.notes.push(...(scenario.notes?.(entry.figures, context) ?? []));
    entry.elapsedMs = Math.round(performance.now() - scenarioStartedAt);
    for (const row of entry.rows.filter((r) => r.verdict)) log(`  ${row.verdict.padEnd(4)} ${row.metric.trim()}: ${row.workerd} (target ${row.target})`);
  }
  const failed = scenarioReports.some((s) => Object.keys(s.errors).length > 0);
  await finish(failed ? 1 : 0);
}

function machine() {
  const cpuList = cpus();
  return {
    cpus: cpuList.length,
    cpuModel: cpuList[0]?.model ?? "unknown",
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    freeMemoryGiB: Math.round((freemem() / 2 ** 30) * 10) / 10,
    os: `${osType()} ${release()}`,
    arch: process.arch,
    loadAverageAtStart: loadavg().map((l) => Math.round(l * 100) / 100),
    /** workerd processes not started by this run (other people's dev servers or tests share the cores). */
    foreignWorkerdAtStart: foreignWorkerdCount(),
  };
}

function foreignWorkerdCount(): number {
  const ours = new Set(descendantPids(process.pid));
  let count = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || ours.has(Number(entry))) continue;
    if (/\bworkerd serve\b/.test(commandLine(Number(entry)))) count++;
  }
  return count;
}

function profileDirectory(startedAt: Date): string {
  const stamp = startedAt.toISOString().replace(/[:]/g, "-").replace(/\.\d+Z$/, "Z");
  return new URL(`./results/profiles-${stamp}/`, import.meta.url).pathname;
}

function roundSetup(setup: Target["setup"]) {
  return { users: setup.users, userMs: Math.round(setup.userMs), chats: setup.chats, chatMs: Math.round(setup.chatMs) };
}

main().catch((error) => {
  log(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  runNotes.push(`the run failed: ${error instanceof Error ? error.message : String(error)}`);
  void finish(1);
});

