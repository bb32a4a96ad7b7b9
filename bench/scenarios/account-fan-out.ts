/**
 * Fan-out to accounts: how long after a message is stored every member's account (its
 * User object, which keeps the chat list) knows the chat's new head, in one group of
 * 100 members, at stepped message rates.
 *
 * The lag is measured on the server's clock, from the message's `createdAt` (its ack
 * carries it) to the moment the chat recorded that every member's account had
 * acknowledged a head at or past it (src/lib/fan-out-probe.ts, read through the
 * inspector after each step: nothing stays attached while messages flow). Polling 100
 * chat lists per message from the client would load the server more than the fan-out
 * itself. After each step the client still checks, through every member's own
 * `GET /api/chats`, that all 100 lists show the last message's seq.
 *
 * A rate is sustained when every send was acknowledged, every account reached the
 * head within the drain timeout, and the p99 lag stayed under `maxP99LagMs`.
 */
import { SendResult, type ReplyFrame } from "../../src/protocol/index.ts";
import { Targets } from "../scenarios.ts";
import { mapPool } from "../client.ts";
import { evaluateInWorker } from "../lib/instance-start-probe.ts";
import { LatencyRecorder, type LatencySummary } from "../lib/latency.ts";
import { runOpenLoop, sleep, waitUntil } from "../lib/open-loop.ts";
import { round } from "../lib/process-stats.ts";
import { micros, ms, openSockets, perSecond, PhaseMeter, serverCpuMicrosPer, serverCpuSeconds, settleAfterSetup, verdict, type Scenario } from "../lib/scenario.ts";

type Done = { headSeq: number; at: number };

export type AccountFanOutStep = {
  offeredRate: number;
  sent: number;
  acked: number;
  ackFailures: number;
  /** Acks per second over the step. */
  ackRate: number;
  lag: LatencySummary;
  /** Messages whose fan-out never completed within the drain timeout. */
  unfinished: number;
  /** Members whose own chat list did not show the last seq after the drain. */
  accountsBehind: number;
  sustained: boolean;
  /** Server cores used over the step (sending and draining) and its busiest process. */
  serverCores: number;
  /** Server CPU per acknowledged message, fan-out included, in µs. */
  serverCpuUsPerMessage: number;
};

export type AccountFanOutFigures = {
  members: number;
  steps: AccountFanOutStep[];
  /** Highest sustained rate with every lower one sustained (0: none). */
  sustainedRate: number;
  error: string;
};

export const accountFanOut: Scenario<AccountFanOutFigures> = {
  name: "accountFanOut",
  title: "fan-out to accounts (chat lists of a 100-member group)",
  targets: ["workerd"],

  async run(target, context) {
    const p = context.params.accountFanOut;
    if (target.inspectorPort === undefined) return { members: p.members, steps: [], sustainedRate: 0, error: "no inspector port: the lag cannot be read" };
    const users = await target.users(p.members);
    const chatId = await target.createGroup(users, `account fan-out ${context.nextTag("g")}`);
    const done = (): Promise<Done[]> =>
      evaluateInWorker(
        target.inspectorPort!,
        `(globalThis[Symbol.for("edgechat.fanOutDone")] ?? []).filter((r) => r.chatId === ${JSON.stringify(chatId)}).map(({ headSeq, at }) => ({ headSeq, at }))`,
      ) as Promise<Done[]>;

    const acks = new Map<string, { seq: number; createdAt: number }>();
    let ackFailures = 0;
    const onReply = (reply: ReplyFrame) => {
      if (!reply.ok) return void ackFailures++;
      const result = SendResult.safeParse(reply.result);
      if (result.success) acks.set(reply.id, { seq: result.data.seq, createdAt: result.data.createdAt });
    };
    const [sender] = await openSockets([{ url: target.socketUrl(chatId), user: users[0]!, options: { onReply } }]);
    await settleAfterSetup(target, context);

    const steps: AccountFanOutStep[] = [];
    try {
      for (const rate of p.rates) {
        if (performance.now() > context.deadline - 10_000) break;
        acks.clear();
        ackFailures = 0;
        const tag = `${context.nextTag("af")}.`;
        const count = Math.max(1, Math.round(rate * p.stepSeconds));
        const meter = new PhaseMeter(target, context, `account-fan-out-${rate}`);
        await meter.start();
        const started = performance.now();
        const run = await runOpenLoop({ count, ratePerSecond: rate, send: (i) => sender!.sendMessage(`${tag}${i}`, `${tag}${i}`, context.body) });
        await waitUntil(() => acks.size + ackFailures >= run.sent, p.drainTimeoutMs, 5);
        const ackSeconds = (performance.now() - started) / 1000;
        // The fan-out of the last messages is part of the step's cost (and the profiler
        // must be detached before the probe is read: one inspector session at a time).
        await sleep(p.cpuDrainMs);
        const cpu = await meter.stop();
        const lastSeq = Math.max(0, ...[...acks.values()].map((a) => a.seq));
        // Wait for the fan-out to reach the last message (read a few times, not continuously).
        let records: Done[] = [];
        const drainDeadline = performance.now() + p.drainTimeoutMs;
        for (;;) {
          records = await done();
          if (records.some((r) => r.headSeq >= lastSeq) || performance.now() > drainDeadline) break;
          await sleep(100);
        }
        const lag = new LatencyRecorder();
        let unfinished = 0;
        for (const { seq, createdAt } of acks.values()) {
          const reached = records.find((r) => r.headSeq >= seq && r.at >= createdAt);
          if (reached) lag.recordMs(reached.at - createdAt);
          else unfinished++;
        }
        const heads = await mapPool(users, 20, async (user) => (await user.api!.chats({ limit: 5 })).chats.find((c) => c.chatId === chatId)?.headSeq ?? 0);
        const accountsBehind = heads.filter((head) => head < lastSeq).length;
        const summary = lag.summary();
        const sustained = ackFailures === 0 && acks.size === run.sent && unfinished === 0 && accountsBehind === 0 && summary.p99Ms <= Targets.accountFanOut.maxP99LagMs;
        steps.push({ offeredRate: rate, sent: run.sent, acked: acks.size, ackFailures, ackRate: round(acks.size / ackSeconds, 1), lag: summary, unfinished, accountsBehind, sustained, serverCores: round(serverCpuSeconds(cpu) / (cpu.wallMs / 1000), 2), serverCpuUsPerMessage: serverCpuMicrosPer(cpu, acks.size) });
        context.log(`    ${target.name}: ${rate} msg/s: lag p50 ${ms(summary.p50Ms)}, p99 ${ms(summary.p99Ms)}, ${accountsBehind} account(s) behind, ${steps.at(-1)!.serverCores} server cores${sustained ? "" : " (not sustained)"}`);
        if (!sustained) break;
        await sleep(p.pauseMs);
      }
    } finally {
      await sender?.close();
    }
    let sustainedRate = 0;
    for (const step of steps) {
      if (!step.sustained) break;
      sustainedRate = step.offeredRate;
    }
    return { members: p.members, steps, sustainedRate, error: "" };
  },

  rows({ workerd }) {
    const t = Targets.accountFanOut;
    if (!workerd || workerd.error) return [{ metric: "account fan-out", workerd: workerd?.error || "-", bare: "n/a", ratio: "", target: "", verdict: "" }];
    const first = workerd.steps[0];
    const best = workerd.steps.filter((s) => s.sustained).at(-1);
    return [
      {
        metric: `ack -> all ${workerd.members} accounts know the head, at ${first?.offeredRate ?? "-"} msg/s (p50 / p99)`,
        workerd: first ? `${ms(first.lag.p50Ms)} / ${ms(first.lag.p99Ms)}` : "-",
        bare: "n/a",
        ratio: "",
        target: `p99 <= ${t.maxP99LagMs} ms`,
        verdict: first ? verdict(first.lag.p99Ms <= t.maxP99LagMs) : "",
      },
      {
        metric: "  highest rate sustained (every account at the head)",
        workerd: best ? `${perSecond(workerd.sustainedRate)} (lag p50 ${ms(best.lag.p50Ms)}, p99 ${ms(best.lag.p99Ms)})` : "none",
        bare: "n/a",
        ratio: "",
        target: `>= ${t.sustainedRate}/s`,
        verdict: verdict(workerd.sustainedRate >= t.sustainedRate),
      },
      {
        metric: "  server CPU per message, fan-out to 100 accounts included",
        workerd: workerd.steps.map((s) => `${micros(s.serverCpuUsPerMessage)} at ${s.offeredRate}/s`).join(", "),
        bare: "n/a",
        ratio: "",
        target: "",
        verdict: "",
      },
    ];
  },

  notes({ workerd }) {
    if (!workerd || workerd.error) return [];
    const failed = workerd.steps.find((s) => !s.sustained);
    const notes = ["account fan-out: lag measured on the server's clock (event createdAt -> every account acknowledged a head at or past it); every member's chat list checked by the client after each step"];
    if (failed) {
      notes.push(
        `account fan-out: ${failed.offeredRate} msg/s not sustained: ${failed.ackFailures} failed acks, ${failed.sent - failed.acked} unacked, ${failed.unfinished} never fanned out, ${failed.accountsBehind} accounts behind, lag p99 ${ms(failed.lag.p99Ms)}`,
      );
    }
    return notes;
  },
};
