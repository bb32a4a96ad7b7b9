/**
 * Fan-out to accounts: how long after a message is stored every member's account (its
 * User object, which keeps the chat list) knows the chat's new head, in one group of
 * 100 members: first for single messages in a quiet chat (each the first after a quiet
 * interval, pushed at once), then at stepped message rates (paced: each account is
 * called at most once per FAN_OUT_INTERVAL_MS, 5 s by default, so the lag is bounded by
 * the interval, and the server's cost by the number of members, not messages).
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
 * head within the drain timeout, and the p99 lag stayed within the interval + 1 s.
 */
import { fanOutInterval } from "../../src/chat-room/fan-out-pacing.ts";
import { SendResult, type ReplyFrame } from "../../src/protocol/index.ts";
import { Targets } from "../scenarios.ts";
import { mapPool } from "../client.ts";
import { evaluateInWorker } from "../lib/instance-start-probe.ts";
import { LatencyRecorder, type LatencySummary } from "../lib/latency.ts";
import { runOpenLoop, sleep, waitUntil } from "../lib/open-loop.ts";
import { round } from "../lib/process-stats.ts";
import { ms, openSockets, perSecond, PhaseMeter, serverCpuMicrosPer, serverCpuSeconds, settleAfterSetup, verdict, type Scenario } from "../lib/scenario.ts";

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
  /** The pacing interval the server uses for this group (FAN_OUT_INTERVAL_MS, deploy default). */
  intervalMs: number;
  /** Single messages, each after a quiet interval. */
  quiet: LatencySummary;
  /** Of those, how many were not fanned out within the drain timeout (not in `quiet`). */
  quietUnfinished: number;
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
    const intervalMs = fanOutInterval(p.intervalMs, p.members);
    const empty = { members: p.members, intervalMs, quiet: new LatencyRecorder().summary(), quietUnfinished: 0, steps: [], sustainedRate: 0 };
    if (target.inspectorPort === undefined) return { ...empty, error: "no inspector port: the lag cannot be read" };
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

    const lagOf = (records: Done[], ack: { seq: number; createdAt: number }): number | null => {
      const reached = records.find((r) => r.headSeq >= ack.seq && r.at >= ack.createdAt);
      return reached ? reached.at - ack.createdAt : null;
    };
    const steps: AccountFanOutStep[] = [];
    const quiet = new LatencyRecorder();
    let quietUnfinished = 0;
    try {
      // Quiet chat: each message comes after a full interval without one.
      for (let i = 0; i < p.quietSamples; i++) {
        await sleep(intervalMs + 500);
        const id = `${context.nextTag("afq")}.${i}`;
        acks.clear();
        sender!.sendMessage(id, id, context.body);
        await waitUntil(() => acks.has(id), p.drainTimeoutMs, 5);
        const ack = acks.get(id);
        if (!ack) {
          quietUnfinished++;
          continue;
        }
        // The lag is the server's own timing: reading it later changes nothing, so read
        // rarely (each read is an inspector session) until the record is there.
        let lag: number | null = null;
        const deadline = performance.now() + p.drainTimeoutMs;
        while (lag === null && performance.now() < deadline) {
          await sleep(500);
          lag = lagOf(await done(), ack);
        }
        if (lag === null) quietUnfinished++;
        else quiet.recordMs(lag);
      }
      context.log(`    ${target.name}: quiet chat, ${quiet.count} messages: lag p50 ${ms(quiet.percentileMs(50))}, max ${ms(quiet.summary().maxMs)}${quietUnfinished ? `, ${quietUnfinished} not fanned out within ${p.drainTimeoutMs} ms` : ""}`);
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
        for (const ack of acks.values()) {
          const value = lagOf(records, ack);
          if (value === null) unfinished++;
          else lag.recordMs(value);
        }
        const heads = await mapPool(users, 20, async (user) => (await user.api!.chats({ limit: 5 })).chats.find((c) => c.chatId === chatId)?.headSeq ?? 0);
        const accountsBehind = heads.filter((head) => head < lastSeq).length;
        const summary = lag.summary();
        const sustained = ackFailures === 0 && acks.size === run.sent && unfinished === 0 && accountsBehind === 0 && summary.p99Ms <= intervalMs + 1_000;
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
    return { ...empty, quiet: quiet.summary(), quietUnfinished, steps, sustainedRate, error: "" };
  },

  rows({ workerd }) {
    const t = Targets.accountFanOut;
    if (!workerd || workerd.error) return [{ metric: "account fan-out", workerd: workerd?.error || "-", bare: "n/a", ratio: "", target: "", verdict: "" }];
    const best = workerd.steps.filter((s) => s.sustained).at(-1);
    const busyTarget = workerd.intervalMs + 1_000;
    return [
      {
        metric: `store -> all ${workerd.members} accounts know the head, quiet chat (p50 / max)`,
        workerd: `${ms(workerd.quiet.p50Ms)} / ${ms(workerd.quiet.maxMs)}`,
        bare: "n/a",
        ratio: "",
        target: `max <= ${t.quietMaxLagMs} ms`,
        verdict: workerd.quiet.count > 0 ? verdict(workerd.quietUnfinished === 0 && workerd.quiet.maxMs <= t.quietMaxLagMs) : "",
      },
      {
        metric: `  busy chat, highest rate sustained (lag p99 <= interval ${workerd.intervalMs / 1000} s + 1 s)`,
        workerd: best ? `${perSecond(workerd.sustainedRate)} (lag p50 ${ms(best.lag.p50Ms)}, p99 ${ms(best.lag.p99Ms)})` : "none",
        bare: "n/a",
        ratio: "",
        target: `>= ${t.sustainedRate}/s, p99 <= ${busyTarget} ms`,
        verdict: verdict(workerd.sustainedRate >= t.sustainedRate),
      },
      {
        metric: "  server cores while busy, fan-out included",
        workerd: workerd.steps.map((s) => `${s.serverCores} at ${s.offeredRate}/s`).join(", "),
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
