/**
 * Presence (docs/protocol.md §8.6): many devices coming online and leaving while others
 * watch them.
 *
 * - presenceChurn: `watched` new accounts with one device each, and `watchers` new
 *   accounts each sharing a direct chat with `watchesPerWatcher` of them and subscribed
 *   to them (`presence.subscribe`) on its device stream, which stays open. The watched
 *   devices then come and go at a steady rate, open loop: device i of cycle c opens its
 *   stream (and resumes as a new device) at `start + (c * watched + i) / rate`, and
 *   closes `holdMs` later (not before it is synced). Every watcher must be told of every
 *   change, once and in order: online when the device's stream opened (the server counts
 *   it online as it sends `stream.ready`), offline with `lastSeenAt` when it closed.
 *   Before the subscriptions, the same churn runs once with nobody watching: the
 *   difference in server CPU per change is what presence costs.
 *
 * Accounts and chats are created, and the watchers' streams opened, before any clock
 * starts.
 */
import { Targets } from "../scenarios.ts";
import type { Target } from "../targets/target.ts";
import { PresenceSubscribeResult, type Presence, type PresenceWatch } from "../../src/client/index.ts";
import { closeAll, mapPool, type BenchUser } from "../client.ts";
import { openStreams, StreamSocket } from "../stream-client.ts";
import { LatencyRecorder, type LatencySummary } from "../lib/latency.ts";
import { sleep, waitUntil } from "../lib/open-loop.ts";
import { round } from "../lib/process-stats.ts";
import { fmt, micros, ms, PhaseMeter, ratio, serverCpuMicrosPer, serverCpuSeconds, settleAfterSetup, verdict, type CpuFigures, type RunContext, type Scenario } from "../lib/scenario.ts";

/** Chat creations in flight during setup. */
const CREATE_CONCURRENCY = 8;
/** Subscriptions are renewed this often while a phase runs (the lease is 60 s; the SDK renews every 45 s). */
const RENEW_EVERY_MS = 40_000;

/** One change of a watched account, as its device made it. */
type Change = {
  online: boolean;
  /** When it happened on the client's clock: the device's `stream.ready` (online), its close call (offline); NaN until known. */
  at: number;
  /** The device's stream (online changes): its `stream.ready` time is read when a watcher hears of it. */
  stream: StreamSocket | null;
};

/** What one watcher has heard of one watched account (`heard`: every state pushed, in order). */
type Heard = { next: number; last: boolean | null; heard: boolean[] };

export type ChurnPhase = {
  label: string;
  /** Whether watchers were subscribed. */
  watched: boolean;
  cycles: number;
  /** Streams opened, and closed by the benchmark. */
  connects: number;
  closes: number;
  /** Changes of the watched accounts (each online and each offline), and the most streams open at once. */
  changes: number;
  peakOpen: number;
  failures: number;
  failureSamples: string[];
  /** Devices not synced by the end of their hold, so closed later. */
  lateCloses: number;
  /** The client's own lag behind its schedule (max ms): above a few ms, the client is the limit. */
  scheduleLagMaxMs: number;
  /** Pushes due (each change times its watchers) and what arrived. */
  expectedPushes: number;
  receivedPushes: number;
  matched: number;
  missing: number;
  duplicates: number;
  outOfOrder: number;
  /** Offline pushes without `lastSeenAt` (no one hides it here, so every one should carry it). */
  offlineWithoutLastSeen: number;
  /**
   * From creating the device's socket (the app connects) to the watcher's `presence
   * {online: true}`: the figure the target is about. The server counts the device online
   * when it accepts the upgrade, a moment the client cannot see; this includes the
   * device's own handshake up to it.
   */
  connectToOnline: LatencySummary;
  /**
   * The watcher's `presence {online: true}` minus the device's own `stream.ready`, signed
   * (negative: the watcher knew first), p50 and p99; and how many arrived before it.
   */
  onlineVsReady: { p50Ms: number; p99Ms: number; count: number };
  onlineBeforeReady: number;
  /** From the device's close to the watcher's `presence {online: false}`. */
  offline: LatencySummary;
  /**
   * Per 2 s of the phase (by arrival at the watcher): pushes that arrived, and the p50 of
   * connect -> online and close -> offline among them (ms), to see when the server fell behind.
   */
  timeline: { fromS: number; pushes: number; onlineP50Ms: number; offlineP50Ms: number }[];
  /** How long after the watchers' subscriptions the phase started (their leases' sweeps run every HEARTBEAT_MS from them). */
  startedAfterSubscribeMs: number;
  /** A few watched accounts whose pushes were not all heard in order: the changes made and the states heard (+ online, - offline). */
  mismatchSamples: string[];
  /** Lines of the server's recent output about presence pushes that failed (workerd; null: no output to read). */
  serverPushFailures: { count: number; sample: string } | null;
  /** Subscriptions renewed during the phase (lease). */
  renewals: number;
  wallMs: number;
  cpu: CpuFigures & { wallMs: number };
  serverCpuSeconds: number;
  serverCpuUsPerChange: number;
};

export type PresenceChurnFigures = {
  watchedAccounts: number;
  watchers: number;
  watchesPerWatcher: number;
  /** Watchers per watched account. */
  watchersPerAccount: number;
  ratePerSecond: number;
  holdMs: number;
  subscribe: {
    /** Per watcher, from its `presence.subscribe` to the reply (the first round that had no refusal). */
    reply: LatencySummary;
    /** Rounds needed until no one was refused (a chat reaches its members' lists just after creation). */
    rounds: number;
    refused: number;
    /** Watched accounts answered online in the reply (none should be). */
    onlineAtStart: number;
    serverCpuMs: number;
  };
  baseline: ChurnPhase | null;
  churn: ChurnPhase;
  /** Server CPU per change with watchers minus without: what telling the watchers costs (µs per change). */
  presenceCpuUsPerChange: number;
};

/** Watcher w watches accounts (w * perWatcher + k) mod count, k < perWatcher. */
const watchedBy = (w: number, perWatcher: number, count: number): number[] => Array.from({ length: perWatcher }, (_, k) => (w * perWatcher + k) % count);

type Setup = {
  devices: BenchUser[];
  watchers: StreamSocket[];
  /** Per watcher, its watch list. */
  lists: PresenceWatch[][];
  /** Per watched account, the watchers (indices) watching it. */
  watchersOf: number[][];
  userIndex: Map<string, number>;
};

export const presenceChurn: Scenario<PresenceChurnFigures> = {
  name: "presenceChurn",
  title: "presence: churn of devices, watched",
  targets: ["workerd", "bare"],

  async run(target, context) {
    const p = context.params.presenceChurn;
    const perWatcher = Math.min(p.watchesPerWatcher, p.watched);
    const users = await target.freshUsers(p.watched + p.watchers);
    const devices = users.slice(0, p.watched);
    const watcherUsers = users.slice(p.watched);
    // One direct chat per (watcher, watched), created by the watched account (creations are limited per creator).
    const pairs = watcherUsers.flatMap((watcher, w) => watchedBy(w, perWatcher, devices.length).map((i) => ({ w, i, watcher })));
    const chatIds = await mapPool(pairs, CREATE_CONCURRENCY, ({ i, watcher }) => target.createDirect(devices[i]!, watcher));
    const lists: PresenceWatch[][] = watcherUsers.map(() => []);
    const watchersOf: number[][] = devices.map(() => []);
    pairs.forEach(({ w, i }, k) => {
      lists[w]!.push({ userId: devices[i]!.userId, chatId: chatIds[k]! });
      watchersOf[i]!.push(w);
    });
    const watchers = await openStreams(watcherUsers.map((user) => ({ url: target.streamUrl(), user })));
    const setup: Setup = { devices, watchers, lists, watchersOf, userIndex: new Map(devices.map((d, i) => [d.userId, i])) };
    context.log(`    ${target.name}: ${devices.length} watched accounts, ${watchers.length} watchers on their streams, ${chatIds.length} direct chats`);
    try {
      let baseline: ChurnPhase | null = null;
      if (p.baselineCycles > 0) {
        await settleAfterSetup(target, context);
        baseline = await churn(target, context, setup, p.baselineCycles, null, "presence-churn-unwatched");
      }
      const subscribe = await subscribeAll(target, context, setup);
      await settleAfterSetup(target, context);
      const watchedPhase = await churn(target, context, setup, p.cycles, subscribe.subscribedAt, "presence-churn");
      const presenceCpuUsPerChange = baseline ? round(watchedPhase.serverCpuUsPerChange - baseline.serverCpuUsPerChange, 1) : Number.NaN;
      return {
        watchedAccounts: devices.length,
        watchers: watchers.length,
        watchesPerWatcher: perWatcher,
        watchersPerAccount: round(pairs.length / devices.length, 2),
        ratePerSecond: p.ratePerSecond,
        holdMs: p.holdMs,
        subscribe: subscribe.figures,
        baseline,
        churn: watchedPhase,
        presenceCpuUsPerChange,
      };
    } finally {
      await closeAll(watchers);
    }
  },

  rows({ workerd, bare }, context) {
    const t = Targets.presenceChurn;
    const p = context.params.presenceChurn;
    const w = workerd?.churn;
    const b = bare?.churn;
    const pct = (s?: LatencySummary) => (s ? `${ms(s.p50Ms)} / ${ms(s.p99Ms)}` : "-");
    const vsReady = (c?: ChurnPhase) => (c ? `${ms(c.onlineVsReady.p50Ms)} / ${ms(c.onlineVsReady.p99Ms)}; ${fmt(c.onlineBeforeReady)} of ${fmt(c.onlineVsReady.count)} before` : "-");
    const correctness = (c?: ChurnPhase) => (c ? `${fmt(c.matched)}/${fmt(c.expectedPushes)}; missing ${c.missing}, dups ${c.duplicates}, out of order ${c.outOfOrder}` : "-");
    const failures = (c?: ChurnPhase) => (c ? `${c.failures} failed of ${fmt(c.connects)}; ${c.lateCloses} closed late; peak ${fmt(c.peakOpen)} open` : "-");
    const clean = (c?: ChurnPhase) => c && c.missing === 0 && c.duplicates === 0 && c.outOfOrder === 0 && c.failures === 0 && c.offlineWithoutLastSeen === 0;
    const subscribeText = (f?: PresenceChurnFigures) => (f ? `${ms(f.subscribe.reply.p50Ms)} / ${ms(f.subscribe.reply.maxMs)}; ${f.subscribe.refused} refused, ${f.subscribe.rounds} round(s)` : "-");
    const cpuPair = (f?: PresenceChurnFigures) => (f ? `${micros(f.churn.serverCpuUsPerChange)} / ${micros(f.baseline?.serverCpuUsPerChange)}` : "-");
    return [
      {
        metric: `${fmt(p.watched)} devices × ${p.cycles} at ${p.ratePerSecond} connects/s (closed ${p.holdMs / 1000} s later), ${p.watchers} watchers × ${p.watchesPerWatcher}: device connects -> watcher told online, p50 / p99`,
        workerd: pct(w?.connectToOnline),
        bare: pct(b?.connectToOnline),
        ratio: ratio(w?.connectToOnline.p50Ms, b?.connectToOnline.p50Ms),
        target: `p50 < ${t.p50Ms / 1000} s both ways, 0 missed`,
        verdict: verdict(w && clean(w) && w.connectToOnline.p50Ms < t.p50Ms && w.offline.p50Ms < t.p50Ms),
      },
      { metric: "  device closes -> watcher told offline, p50 / p99", workerd: pct(w?.offline), bare: pct(b?.offline), ratio: ratio(w?.offline.p50Ms, b?.offline.p50Ms), target: "", verdict: "" },
      { metric: "  watcher told online minus the device's own stream.ready, p50 / p99 (negative: the watcher first)", workerd: vsReady(w), bare: vsReady(b), ratio: "", target: "", verdict: "" },
      { metric: "  pushes once and in order / due; missing, duplicates, out of order", workerd: correctness(w), bare: correctness(b), ratio: "", target: "", verdict: "" },
      { metric: "  device streams: failures, late closes, peak open", workerd: failures(w), bare: failures(b), ratio: "", target: "", verdict: "" },
      { metric: "  server CPU per presence change, watched / nobody watching", workerd: cpuPair(workerd), bare: cpuPair(bare), ratio: ratio(w?.serverCpuUsPerChange, b?.serverCpuUsPerChange), target: "", verdict: "" },
      { metric: "  server CPU per change for telling the watchers (the difference)", workerd: micros(workerd?.presenceCpuUsPerChange), bare: micros(bare?.presenceCpuUsPerChange), ratio: ratio(workerd?.presenceCpuUsPerChange, bare?.presenceCpuUsPerChange), target: "", verdict: "" },
      { metric: `  presence.subscribe of ${p.watchesPerWatcher}, reply p50 / max; refused`, workerd: subscribeText(workerd), bare: subscribeText(bare), ratio: ratio(workerd?.subscribe.reply.p50Ms, bare?.subscribe.reply.p50Ms), target: "", verdict: "" },
    ];
  },

  notes({ workerd, bare }) {
    const notes: string[] = [];
    for (const [name, f] of Object.entries({ workerd, bare })) {
      if (!f) continue;
      for (const phase of [f.baseline, f.churn]) {
        if (!phase) continue;
        if (phase.failures > 0) notes.push(`presence churn (${phase.label}) on ${name}: ${phase.failures} device streams failed: ${phase.failureSamples.join("; ")}`);
        if (phase.cpu.clientBound) notes.push(`presence churn (${phase.label}) on ${name}: client-bound (${phase.cpu.clientCores} cores)`);
        if (phase.scheduleLagMaxMs > 50) notes.push(`presence churn (${phase.label}) on ${name}: the client ran up to ${fmt(phase.scheduleLagMaxMs)} ms behind its schedule`);
        if (!phase.watched && phase.receivedPushes > 0) notes.push(`presence churn (${phase.label}) on ${name}: ${phase.receivedPushes} presence frames with nobody subscribed`);
        if (phase.mismatchSamples.length > 0) notes.push(`presence churn (${phase.label}) on ${name}: not heard in order (+ online, - offline): ${phase.mismatchSamples.join("; ")}`);
        if (phase.serverPushFailures?.count) notes.push(`presence churn (${phase.label}) on ${name}: the server's last output lines hold ${phase.serverPushFailures.count} failed presence pushes, e.g. ${phase.serverPushFailures.sample}`);
        if (phase.offlineWithoutLastSeen > 0) notes.push(`presence churn (${phase.label}) on ${name}: ${phase.offlineWithoutLastSeen} offline pushes without lastSeenAt`);
        if (phase.serverCpuSeconds < 1) notes.push(`presence churn (${phase.label}) on ${name}: ${phase.serverCpuSeconds} s of server CPU in the phase: its CPU per change is good to a few 10 ms ticks only`);
      }
      if (f.subscribe.onlineAtStart > 0) notes.push(`presence churn on ${name}: ${f.subscribe.onlineAtStart} watched accounts were online when subscribed to`);
    }
    if (workerd) {
      notes.push(
        `presence churn: the CPU per change covers the whole churn (upgrade, resume, the chat's announcement, close), not presence alone; ` +
          `the difference with the unwatched churn is what presence adds, ${fmt(workerd.watchersPerAccount)} watcher(s) per account` +
          (workerd.baseline ? "" : " (not measured: no unwatched churn in this mode)"),
      );
    }
    return notes;
  },
};

/**
 * Every watcher subscribes to its list; again (after a pause) while anyone is refused:
 * a direct chat reaches its members' lists just after its creation.
 */
async function subscribeAll(target: Target, context: RunContext, setup: Setup): Promise<{ figures: PresenceChurnFigures["subscribe"]; subscribedAt: { at: number } }> {
  const meter = new PhaseMeter(target, context, "presence-subscribe");
  await meter.start();
  let rounds = 0;
  let refused = 0;
  let onlineAtStart = 0;
  let reply = new LatencyRecorder();
  const subscribedAt = { at: performance.now() };
  for (;;) {
    rounds++;
    reply = new LatencyRecorder();
    subscribedAt.at = performance.now();
    const results = await Promise.all(setup.watchers.map((watcher, w) => subscribeOnce(watcher, `pw-${rounds}-${w}`, setup.lists[w]!, reply)));
    refused = results.reduce((sum, r) => sum + r.refused.length, 0);
    onlineAtStart = results.reduce((sum, r) => sum + r.presence.filter((presence) => presence.online).length, 0);
    // A device may subscribe 10 times in a burst: a few rounds at most, leaving room for renewals.
    if (refused === 0 || rounds >= 6) break;
    await sleep(1_000);
  }
  const cpu = await meter.stop();
  context.log(`    ${target.name}: ${setup.watchers.length} subscriptions of ${setup.lists[0]?.length ?? 0}, reply p50 ${reply.percentileMs(50)} ms, ${refused} refused after ${rounds} round(s)`);
  if (refused > 0) throw new Error(`${refused} watched accounts refused after ${rounds} rounds of presence.subscribe`);
  return { figures: { reply: reply.summary(), rounds, refused, onlineAtStart, serverCpuMs: round(serverCpuSeconds(cpu) * 1000, 1) }, subscribedAt };
}

/** One `presence.subscribe` on a watcher's stream and its reply (refused and failed replies throw). */
function subscribeOnce(watcher: StreamSocket, id: string, watch: readonly PresenceWatch[], recorder: LatencyRecorder | null): Promise<PresenceSubscribeResult> {
  return new Promise((resolve, reject) => {
    const sentAt = performance.now();
    const previous = watcher.onReply;
    const timer = setTimeout(() => {
      watcher.onReply = previous;
      reject(new Error(`no reply to presence.subscribe ${id} within 15 s`));
    }, 15_000);
    watcher.onReply = (frame, receivedAt, socket) => {
      if (frame.id !== id) return previous?.(frame, receivedAt, socket);
      clearTimeout(timer);
      watcher.onReply = previous;
      if (!frame.ok) return reject(new Error(`presence.subscribe refused: ${frame.error.code} ${frame.error.message}`));
      const parsed = PresenceSubscribeResult.safeParse(frame.result);
      if (!parsed.success) return reject(new Error(`invalid presence.subscribe result: ${parsed.error.message}`));
      recorder?.recordMs(receivedAt - sentAt);
      resolve(parsed.data);
    };
    watcher.sendPresenceSubscribe(id, watch);
  });
}

/**
 * `cycles` rounds of every watched device opening its stream and closing it `holdMs`
 * later, at `ratePerSecond` connects. With `subscribed` (the watchers' last
 * subscription time), every watcher's pushes are matched to the changes the devices
 * made, in order; without, nobody is subscribed.
 */
async function churn(target: Target, context: RunContext, setup: Setup, cycles: number, subscribed: { at: number } | null, phase: string): Promise<ChurnPhase> {
  const p = context.params.presenceChurn;
  const { devices, watchers, userIndex } = setup;
  const count = devices.length * cycles;
  const intervalMs = 1000 / p.ratePerSecond;

  // Per device the changes it made, in order; per watcher and watched account what it heard.
  const changes: Change[][] = devices.map(() => []);
  const heard: Map<number, Heard>[] = watchers.map((_, w) => new Map(setup.lists[w]!.map((entry) => [userIndex.get(entry.userId)!, { next: 0, last: null, heard: [] }])));
  /** Each online push's arrival and the device's stream, compared with its `stream.ready` at the end. */
  const onlineArrivals: [number, StreamSocket][] = [];
  const connectToOnline = new LatencyRecorder();
  /** Per push: [arrival, online?, latency], for the timeline. */
  const arrivals: [number, boolean, number][] = [];
  const offline = new LatencyRecorder();
  let receivedPushes = 0;
  let duplicates = 0;
  let outOfOrder = 0;
  let offlineWithoutLastSeen = 0;
  const onPresence = (w: number) => (presence: Presence, receivedAt: number) => {
    receivedPushes++;
    if (!subscribed) return;
    const i = userIndex.get(presence.userId);
    const state = i === undefined ? undefined : heard[w]!.get(i);
    if (i === undefined || !state) return void outOfOrder++;
    if (!presence.online && presence.lastSeenAt === undefined) offlineWithoutLastSeen++;
    state.heard.push(presence.online);
    const change = changes[i]![state.next];
    if (change && change.online === presence.online) {
      state.next++;
      if (change.online) {
        const stream = change.stream!;
        onlineArrivals.push([receivedAt, stream]);
        connectToOnline.recordMs(receivedAt - stream.startedAt);
        arrivals.push([receivedAt, true, receivedAt - stream.startedAt]);
      } else {
        offline.recordMs(receivedAt - change.at);
        arrivals.push([receivedAt, false, receivedAt - change.at]);
      }
    } else if (presence.online === state.last) {
      duplicates++;
    } else {
      outOfOrder++;
    }
    state.last = presence.online;
  };
  watchers.forEach((watcher, w) => (watcher.onPresence = onPresence(w)));

  type Live = { i: number; stream: StreamSocket; closeDueAt: number };
  const live = new Set<Live>();
  const allStreams: StreamSocket[] = [];
  let next = 0;
  let connects = 0;
  let closes = 0;
  let lateCloses = 0;
  let peakOpen = 0;
  let scheduleLagMaxMs = 0;
  let renewals = 0;
  const closing: Promise<void>[] = [];

  const meter = new PhaseMeter(target, context, phase);
  await meter.start();
  const startedAt = performance.now() + 1;
  const startedAfterSubscribeMs = subscribed ? round(startedAt - subscribed.at, 0) : Number.NaN;
  await new Promise<void>((resolve, reject) => {
    const tick = (): void => {
      try {
        const now = performance.now();
        while (next < count && startedAt + next * intervalMs <= now) {
          scheduleLagMaxMs = Math.max(scheduleLagMaxMs, now - (startedAt + next * intervalMs));
          const i = next % devices.length;
          const stream = new StreamSocket({ url: target.streamUrl(), user: devices[i]!, handshakeTimeoutMs: p.timeoutMs });
          changes[i]!.push({ online: true, at: Number.NaN, stream });
          live.add({ i, stream, closeDueAt: startedAt + next * intervalMs + p.holdMs });
          allStreams.push(stream);
          connects++;
          next++;
        }
        peakOpen = Math.max(peakOpen, live.size);
        for (const entry of live) {
          const { i, stream, closeDueAt } = entry;
          if (now < closeDueAt) continue;
          const done = stream.isSynced || stream.failure !== null || stream.closed !== null;
          if (!done && now - stream.startedAt < p.timeoutMs) continue;
          if (!stream.isSynced || stream.syncedAt > closeDueAt) lateCloses++;
          live.delete(entry);
          const deviceChanges = changes[i]!;
          if (!stream.isReady) {
            // Never accepted (or not within the timeout): the server never counted it online.
            deviceChanges.pop();
          } else {
            deviceChanges.push({ online: false, at: now, stream: null });
          }
          closes++;
          closing.push(stream.close());
        }
        // The lease lasts 60 s: a long phase renews the subscriptions (replies not awaited here).
        if (subscribed && now - subscribed.at > RENEW_EVERY_MS) {
          subscribed.at = now;
          renewals++;
          watchers.forEach((watcher, w) => void subscribeOnce(watcher, `pw-renew-${renewals}-${w}`, setup.lists[w]!, null).catch(() => {}));
        }
        if (next >= count && live.size === 0) return resolve();
        // The next connect when one is due within 5 ms; else a look at the closes 5 ms from now.
        setTimeout(tick, next < count ? Math.max(0, Math.min(5, startedAt + next * intervalMs - performance.now())) : 5);
      } catch (error) {
        reject(error);
      }
    };
    setTimeout(tick, 1);
  });
  await Promise.all(closing);
  // Every push due arrives, or the drain ends.
  const due = () => heard.every((byUser) => [...byUser].every(([i, state]) => state.next >= changes[i]!.length));
  if (subscribed) await waitUntil(due, p.drainTimeoutMs, 10);
  else await sleep(Math.min(1_000, p.drainTimeoutMs));
  const cpu = await meter.stop();
  watchers.forEach((watcher) => (watcher.onPresence = undefined));

  const vsReady = onlineArrivals.filter(([, stream]) => stream.isReady).map(([at, stream]) => at - stream.readyAt).sort((a, b) => a - b);
  const signedPercentile = (q: number) => (vsReady.length > 0 ? round(vsReady[Math.min(vsReady.length - 1, Math.ceil((q / 100) * vsReady.length) - 1)]!, 1) : Number.NaN);
  const onlineBeforeReady = onlineArrivals.filter(([at, stream]) => !stream.isReady || at < stream.readyAt).length;
  const median = (values: number[]) => (values.length > 0 ? round(values.sort((a, b) => a - b)[Math.floor((values.length - 1) / 2)]!, 0) : Number.NaN);
  const windows: { on: number[]; off: number[] }[] = [];
  for (const [at, isOnline, latency] of arrivals) {
    const k = Math.max(0, Math.floor((at - startedAt) / 2_000));
    while (windows.length <= k) windows.push({ on: [], off: [] });
    windows[k]![isOnline ? "on" : "off"].push(latency);
  }
  const timeline = windows.map((w, k) => ({ fromS: 2 * k, pushes: w.on.length + w.off.length, onlineP50Ms: median(w.on), offlineP50Ms: median(w.off) }));
  const sign = (online: boolean) => (online ? "+" : "-");
  const mismatchSamples = heard
    .flatMap((byUser, w) => [...byUser].filter(([i, state]) => state.next < changes[i]!.length).map(([i, state]) => `watcher ${w}, account ${i}: made ${changes[i]!.map((c) => sign(c.online)).join("")}, heard ${state.heard.map(sign).join("") || "nothing"}`))
    .slice(0, 5);
  const output = "recentOutput" in target ? String((target as { recentOutput: unknown }).recentOutput) : null;
  const failureLines = output?.split("\n").filter((line) => line.includes("presence push failed")) ?? [];
  const serverPushFailures = output === null ? null : { count: failureLines.length, sample: failureLines[0]?.slice(0, 300) ?? "" };
  const deviceChanges = changes.reduce((sum, list) => sum + list.length, 0);
  let expectedPushes = 0;
  let matched = 0;
  if (subscribed) {
    heard.forEach((byUser) => {
      for (const [i, state] of byUser) {
        expectedPushes += changes[i]!.length;
        matched += Math.min(state.next, changes[i]!.length);
      }
    });
  }
  // Failures: streams that failed for any reason but the benchmark's own close after synced.
  const failed = allStreams.filter((s) => s.failure !== null);
  const samples = [...new Set(failed.map((s) => `${s.failure!.stage}: ${s.failure!.detail}`))].slice(0, 3);
  const figures: ChurnPhase = {
    label: subscribed ? "watched" : "nobody watching",
    watched: subscribed !== null,
    cycles,
    connects,
    closes,
    changes: deviceChanges,
    peakOpen,
    failures: failed.length,
    failureSamples: samples,
    lateCloses,
    scheduleLagMaxMs: round(scheduleLagMaxMs, 1),
    expectedPushes,
    receivedPushes,
    matched,
    missing: expectedPushes - matched,
    duplicates,
    outOfOrder,
    offlineWithoutLastSeen,
    connectToOnline: connectToOnline.summary(),
    onlineVsReady: { p50Ms: signedPercentile(50), p99Ms: signedPercentile(99), count: vsReady.length },
    onlineBeforeReady,
    offline: offline.summary(),
    timeline,
    startedAfterSubscribeMs,
    mismatchSamples,
    serverPushFailures,
    renewals,
    wallMs: cpu.wallMs,
    cpu,
    serverCpuSeconds: round(serverCpuSeconds(cpu), 2),
    serverCpuUsPerChange: serverCpuMicrosPer(cpu, deviceChanges),
  };
  context.log(
    `    ${target.name} ${phase}: ${connects} connects, ${closes} closes (peak ${peakOpen} open), ${failed.length} failed; ` +
      (subscribed
        ? `pushes ${matched}/${expectedPushes} (dups ${duplicates}, out of order ${outOfOrder}); connect -> online p50 ${figures.connectToOnline.p50Ms} ms p99 ${figures.connectToOnline.p99Ms} ms (${onlineBeforeReady} before the device's stream.ready), offline p50 ${figures.offline.p50Ms} ms p99 ${figures.offline.p99Ms} ms; `
        : `${receivedPushes} presence frames; `) +
      `server CPU ${figures.serverCpuUsPerChange} µs per change`,
  );
  if (subscribed && mismatchSamples.length > 0) context.log(`      not heard in order: ${mismatchSamples.join("; ")}`);
  if (serverPushFailures?.count) context.log(`      server output: ${serverPushFailures.count} presence pushes failed (in its last lines), e.g. ${serverPushFailures.sample}`);
  if (subscribed) {
    context.log(`      started ${fmt(startedAfterSubscribeMs / 1000)} s after the subscriptions; per 2 s, pushes and p50 online/offline (ms): ${timeline.map((w) => `${w.fromS}s ${w.pushes} ${fmt(w.onlineP50Ms)}/${fmt(w.offlineP50Ms)}`).join(", ")}`);
  }
  return figures;
}
