/**
 * A direct chat between two clients. Open loop: one side sends at a fixed rate and
 * the latency runs from each message's intended send time to its arrival at the
 * other client. Closed loop: one message in flight at a time, the next sent as soon
 * as the previous one was acknowledged and delivered: round trips per second.
 */
import { Targets } from "../scenarios.ts";
import type { Target } from "../targets/target.ts";
import { closeAll, integrityOf, type ChatSocket } from "../client.ts";
import { LatencyRecorder, type LatencySummary } from "../lib/latency.ts";
import { runOpenLoop, sleep, waitUntil } from "../lib/open-loop.ts";
import { round } from "../lib/process-stats.ts";
import { indexInPhase, micros, ms, openSockets, perSecond, PhaseMeter, ratio, serverCpuMicrosPer, serverCpuSeconds, settleAfterSetup, verdict, type CpuFigures, type RunContext, type Scenario } from "../lib/scenario.ts";

/** Each 1:1 scenario has its own pair of users, so its chat is new. */
async function openPair(target: Target, firstUser: number): Promise<{ sender: ChatSocket; receiver: ChatSocket }> {
  const users = await target.users(firstUser + 2);
  const [alice, bob] = [users[firstUser]!, users[firstUser + 1]!];
  const chatId = await target.createDirect(alice, bob);
  const [sender, receiver] = await openSockets([
    { url: target.socketUrl(chatId), user: alice },
    { url: target.socketUrl(chatId), user: bob },
  ]);
  return { sender: sender!, receiver: receiver! };
}

// ---------------------------------------------------------------------------

export type OpenLoopFigures = {
  offeredRate: number;
  sent: number;
  delivered: number;
  acked: number;
  ackFailures: number;
  gaps: number;
  duplicates: number;
  /** From the intended send time to the other client: the figure the target is about. */
  latency: LatencySummary;
  /** From the moment the client actually sent: the server's share without client timer lag. */
  latencyFromActualSend: LatencySummary;
  /** How late the client's own sends were: its noise floor. */
  clientSendLag: LatencySummary;
  /** The 10 slowest messages, by send time into the phase: clustered tails point at one event, spread ones at a steady cost. */
  slowest: { atMs: number; latencyMs: number }[];
  cpu: CpuFigures;
};

export const oneToOneLatency: Scenario<OpenLoopFigures> = {
  name: "oneToOneLatency",
  title: "1:1, open loop",
  targets: ["workerd", "bare"],

  async run(target, context) {
    const p = context.params.oneToOneLatency;
    const { sender, receiver } = await openPair(target, 0);
    try {
      const phase = async (count: number, record: boolean) => {
        const tagDot = `${context.nextTag("l")}.`;
        const intendedAt = new Float64Array(count);
        const actualAt = new Float64Array(count);
        const arrived = new Uint8Array(count);
        const latency = new LatencyRecorder();
        const fromActual = new LatencyRecorder();
        const latencies = new Float64Array(count);
        let delivered = 0;
        receiver.onMessage = (_seq, clientId, receivedAt) => {
          const index = indexInPhase(clientId, tagDot);
          if (index < 0 || index >= count || arrived[index]) return;
          arrived[index] = 1;
          delivered++;
          latencies[index] = receivedAt - intendedAt[index]!;
          latency.recordMs(receivedAt - intendedAt[index]!);
          fromActual.recordMs(receivedAt - actualAt[index]!);
        };
        const ackedBefore = sender.repliesOk;
        const failedBefore = sender.repliesFailed;
        const integrityBefore = integrityOf([receiver]);
        const meter = new PhaseMeter(target, context, record ? "1to1-open-loop" : "1to1-warmup");
        await meter.start();
        const loop = await runOpenLoop({
          count,
          ratePerSecond: p.ratePerSecond,
          precise: true,
          send: (index, intended) => {
            intendedAt[index] = intended;
            actualAt[index] = performance.now();
            sender.sendMessage(`${tagDot}${index}`, `${tagDot}${index}`, context.body);
          },
        });
        await waitUntil(() => delivered >= loop.sent && sender.repliesOk + sender.repliesFailed - ackedBefore - failedBefore >= loop.sent, p.drainTimeoutMs);
        const cpu = await meter.stop();
        const integrity = integrityOf([receiver]);
        if (!record) return null;
        return {
          offeredRate: p.ratePerSecond,
          sent: loop.sent,
          delivered,
          acked: sender.repliesOk - ackedBefore,
          ackFailures: sender.repliesFailed - failedBefore,
          gaps: integrity.gaps - integrityBefore.gaps,
          duplicates: integrity.duplicates - integrityBefore.duplicates,
          latency: latency.summary(),
          latencyFromActualSend: fromActual.summary(),
          clientSendLag: loop.sendLag.summary(),
          slowest: [...latencies.keys()]
            .sort((a, b) => latencies[b]! - latencies[a]!)
            .slice(0, 10)
            .map((index) => ({ atMs: round(intendedAt[index]! - loop.startedAt, 0), latencyMs: round(latencies[index]!, 2) })),
          cpu,
        } satisfies OpenLoopFigures;
      };
      await settleAfterSetup(target, context);
      await phase(p.warmupMessages, false); // wakes the object, JIT, SQLite statement cache, TCP windows
      await sleep(200);
      return (await phase(Math.round(p.ratePerSecond * p.seconds), true))!;
    } finally {
      await closeAll([sender, receiver]);
    }
  },

  rows({ workerd, bare }) {
    const t = Targets.oneToOneLatency;
    const complete = (f?: OpenLoopFigures) => f && f.delivered === f.sent && f.gaps === 0 && f.duplicates === 0 && f.ackFailures === 0;
    const delivered = (f?: OpenLoopFigures) => (f ? `${f.delivered}/${f.sent}${f.gaps || f.duplicates ? ` (gaps ${f.gaps}, dups ${f.duplicates})` : ""}` : "-");
    return [
      { metric: `p50 send -> other client @ ${workerd?.offeredRate ?? bare?.offeredRate} msg/s`, workerd: ms(workerd?.latency.p50Ms), bare: ms(bare?.latency.p50Ms), ratio: ratio(workerd?.latency.p50Ms, bare?.latency.p50Ms), target: `<= ${t.p50Ms} ms`, verdict: verdict(workerd && workerd.latency.p50Ms <= t.p50Ms && complete(workerd)) },
      { metric: "p99", workerd: ms(workerd?.latency.p99Ms), bare: ms(bare?.latency.p99Ms), ratio: ratio(workerd?.latency.p99Ms, bare?.latency.p99Ms), target: `<= ${t.p99Ms} ms`, verdict: verdict(workerd && workerd.latency.p99Ms <= t.p99Ms && complete(workerd)) },
      { metric: "p99.9", workerd: ms(workerd?.latency.p999Ms), bare: ms(bare?.latency.p999Ms), ratio: ratio(workerd?.latency.p999Ms, bare?.latency.p999Ms), target: "", verdict: "" },
      { metric: "p50 / p99 from actual send (no client timer lag)", workerd: `${ms(workerd?.latencyFromActualSend.p50Ms)} / ${ms(workerd?.latencyFromActualSend.p99Ms)}`, bare: `${ms(bare?.latencyFromActualSend.p50Ms)} / ${ms(bare?.latencyFromActualSend.p99Ms)}`, ratio: "", target: "", verdict: "" },
      { metric: "delivered once, in order", workerd: delivered(workerd), bare: delivered(bare), ratio: "", target: "all", verdict: verdict(workerd && complete(workerd)) },
    ];
  },

  notes({ workerd, bare }) {
    const notes: string[] = [];
    for (const [name, f] of Object.entries({ workerd, bare })) {
      if (f?.cpu.clientBound) notes.push(`1:1 open loop on ${name}: the client used ${f.cpu.clientCores} cores: client-bound, figures are a lower bound`);
    }
    const lag = workerd?.clientSendLag;
    if (lag) notes.push(`1:1 open loop: the client's own send lag (actual - intended) was p50 ${lag.p50Ms} ms, p99 ${lag.p99Ms} ms; it is included in the latency, as open-loop measurement requires`);
    return notes;
  },
};

// ---------------------------------------------------------------------------

export type ClosedLoopFigures = {
  roundTrips: number;
  seconds: number;
  roundTripsPerSecond: number;
  roundTrip: LatencySummary;
  stalled: boolean;
  gaps: number;
  duplicates: number;
  cpu: CpuFigures;
  /** utime + stime of every server process over the measured loop. */
  serverCpuSeconds: number;
  /** serverCpuSeconds per completed round trip (send, store, ack, deliver), in µs. */
  serverCpuUsPerRoundTrip: number;
};

export const oneToOneClosedLoop: Scenario<ClosedLoopFigures> = {
  name: "oneToOneClosedLoop",
  title: "1:1, closed loop",
  targets: ["workerd", "bare"],

  async run(target, context) {
    const p = context.params.oneToOneClosedLoop;
    const { sender, receiver } = await openPair(target, 2);
    try {
      await settleAfterSetup(target, context);
      await closedLoop(target, context, sender, receiver, Math.min(1, p.seconds / 2), "1to1-closed-loop-warmup"); // wake, JIT
      return await closedLoop(target, context, sender, receiver, p.seconds, "1to1-closed-loop");
    } finally {
      await closeAll([sender, receiver]);
    }
  },

  rows({ workerd, bare }) {
    const t = Targets.oneToOneClosedLoop;
    return [
      { metric: "round trips/s (send -> ack + delivery)", workerd: perSecond(workerd?.roundTripsPerSecond), bare: perSecond(bare?.roundTripsPerSecond), ratio: ratio(workerd?.roundTripsPerSecond, bare?.roundTripsPerSecond), target: `>= ${t.roundTripsPerSecond.toLocaleString("en-US")}/s`, verdict: verdict(workerd && !workerd.stalled && workerd.roundTripsPerSecond >= t.roundTripsPerSecond) },
      { metric: "round trip p50 / p99", workerd: `${ms(workerd?.roundTrip.p50Ms)} / ${ms(workerd?.roundTrip.p99Ms)}`, bare: `${ms(bare?.roundTrip.p50Ms)} / ${ms(bare?.roundTrip.p99Ms)}`, ratio: ratio(workerd?.roundTrip.p50Ms, bare?.roundTrip.p50Ms), target: "", verdict: "" },
      { metric: "server CPU per round trip (every server process)", workerd: micros(workerd?.serverCpuUsPerRoundTrip), bare: micros(bare?.serverCpuUsPerRoundTrip), ratio: ratio(workerd?.serverCpuUsPerRoundTrip, bare?.serverCpuUsPerRoundTrip), target: "", verdict: "" },
    ];
  },

  notes({ workerd, bare }) {
    const notes: string[] = [];
    for (const [name, f] of Object.entries({ workerd, bare })) {
      if (f?.stalled) notes.push(`1:1 closed loop on ${name}: a round trip did not complete (lost message or ack): the loop stalled`);
      if (f?.cpu.clientBound) notes.push(`1:1 closed loop on ${name}: client-bound (${f.cpu.clientCores} cores)`);
    }
    return notes;
  },
};

/** One message in flight: the next is sent once the previous one is acked and delivered. */
async function closedLoop(target: Target, context: RunContext, sender: ChatSocket, receiver: ChatSocket, seconds: number, phase: string): Promise<ClosedLoopFigures> {
  const p = context.params.oneToOneClosedLoop;
  const tagDot = `${context.nextTag("c")}.`;
  const recorder = new LatencyRecorder();
  const integrityBefore = integrityOf([receiver]);
  let index = -1;
  let sentAt = 0;
  let acked = false;
  let delivered = false;
  let stopAt = 0;
  let finished = false;
  let resolveDone!: () => void;
  const done = new Promise<void>((resolve) => (resolveDone = resolve));
  const next = (): void => {
    if (performance.now() >= stopAt || index + 1 >= p.maxRoundTrips) {
      finished = true;
      resolveDone();
      return;
    }
    index++;
    acked = false;
    delivered = false;
    sentAt = performance.now();
    sender.sendMessage(`${tagDot}${index}`, `${tagDot}${index}`, context.body);
  };
  const settle = (at: number): void => {
    if (!acked || !delivered || finished) return;
    recorder.recordMs(at - sentAt);
    next();
  };
  sender.onReply = (reply, at) => {
    if (reply.id === `${tagDot}${index}`) {
      acked = reply.ok;
      settle(at);
    }
  };
  receiver.onMessage = (_seq, clientId, at) => {
    if (clientId === `${tagDot}${index}`) {
      delivered = true;
      settle(at);
    }
  };
  const meter = new PhaseMeter(target, context, phase);
  await meter.start();
  const startedAt = performance.now();
  stopAt = startedAt + seconds * 1000;
  next();
  // A lost message or ack would stall the loop: bound the wait.
  const stalled = !(await Promise.race([done.then(() => true), sleep(seconds * 1000 + p.roundTripTimeoutMs).then(() => false)]));
  finished = true;
  const elapsed = (performance.now() - startedAt) / 1000;
  const cpu = await meter.stop();
  const integrity = integrityOf([receiver]);
  context.log(`    ${target.name} ${phase}: ${recorder.count} round trips, server CPU ${serverCpuMicrosPer(cpu, recorder.count)} µs per round trip`);
  return {
    roundTrips: recorder.count,
    seconds: round(elapsed, 2),
    roundTripsPerSecond: round(recorder.count / elapsed, 0),
    roundTrip: recorder.summary(),
    stalled,
    gaps: integrity.gaps - integrityBefore.gaps,
    duplicates: integrity.duplicates - integrityBefore.duplicates,
    cpu,
    serverCpuSeconds: round(serverCpuSeconds(cpu), 2),
    serverCpuUsPerRoundTrip: serverCpuMicrosPer(cpu, recorder.count),
  };
}
