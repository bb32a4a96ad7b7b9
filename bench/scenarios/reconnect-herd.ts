/**
 * Reconnect herd: after an outage, every member of a big group reconnects at once,
 * each `behind` messages behind (`?after=<its last seq>`). Each client takes the
 * catch-up pages (answering `more: true` with `sync`) until it is current. Figures:
 * time until all are current, gaps and duplicates across all clients.
 */
import { Targets } from "../scenarios.ts";
import { ChatSocket, closeAll, integrityOf } from "../client.ts";
import { LatencyRecorder, type LatencySummary } from "../lib/latency.ts";
import { sleep, waitUntil } from "../lib/open-loop.ts";
import { round } from "../lib/process-stats.ts";
import { fmt, ms, openSockets, PhaseMeter, ratio, settleAfterSetup, verdict, type CpuFigures, type Scenario } from "../lib/scenario.ts";

export type HerdFigures = {
  clients: number;
  behind: number;
  headSeq: number;
  current: number;
  allCurrentMs: number;
  /** Per client: from its socket's creation to the page that made it current. */
  timeToCurrent: LatencySummary;
  messagesReceived: number;
  expectedMessages: number;
  gaps: number;
  duplicates: number;
  failures: number;
  failureSamples: string[];
  pagesPerClient: number;
  cpu: CpuFigures;
};

export const reconnectHerd: Scenario<HerdFigures> = {
  name: "reconnectHerd",
  title: "reconnect herd",
  targets: ["workerd", "bare"],

  async run(target, context) {
    const p = context.params.reconnectHerd;
    const users = await target.users(p.clients);
    const chatId = await target.createGroup(users, "herd");
    // The messages everyone missed, sent before the herd arrives.
    const [sender] = await openSockets([{ url: target.socketUrl(chatId), user: users[0]! }]);
    const cursor = sender!.ready!.headSeq;
    const tagDot = `${context.nextTag("r")}.`;
    for (let i = 0; i < p.behind; i++) sender!.sendMessage(`${tagDot}${i}`, `${tagDot}${i}`, context.body);
    await waitUntil(() => sender!.repliesOk + sender!.repliesFailed >= p.behind, 30_000);
    const headSeq = cursor + sender!.repliesOk;
    await closeAll([sender!]);
    // An outage long enough for the chat's object to be evicted: the herd wakes it.
    await settleAfterSetup(target, context);
    await sleep(200);

    const meter = new PhaseMeter(target, context, "reconnect-herd");
    await meter.start();
    const herdStartedAt = performance.now();
    const sockets = users.map((user) => new ChatSocket({ url: target.socketUrl(chatId, cursor), user, after: cursor, handshakeTimeoutMs: p.timeoutMs }));
    const isDone = (s: ChatSocket) => (s.isCurrent && s.lastSeq >= headSeq) || s.failure !== null;
    await waitUntil(() => sockets.every(isDone), p.timeoutMs, 5);
    const cpu = await meter.stop();
    try {
      const timeToCurrent = new LatencyRecorder();
      let lastCurrentAt = herdStartedAt;
      let current = 0;
      for (const socket of sockets) {
        if (!socket.isCurrent || socket.lastSeq < headSeq) continue;
        current++;
        timeToCurrent.recordMs(socket.currentAt - socket.startedAt);
        lastCurrentAt = Math.max(lastCurrentAt, socket.currentAt);
      }
      const integrity = integrityOf(sockets);
      return {
        clients: p.clients,
        behind: p.behind,
        headSeq,
        current,
        allCurrentMs: current === p.clients ? round(lastCurrentAt - herdStartedAt, 1) : Number.NaN,
        timeToCurrent: timeToCurrent.summary(),
        messagesReceived: sockets.reduce((sum, s) => sum + s.messages, 0),
        expectedMessages: p.clients * (headSeq - cursor),
        gaps: integrity.gaps,
        duplicates: integrity.duplicates,
        failures: integrity.failures,
        failureSamples: integrity.failureSamples,
        pagesPerClient: round(sockets.reduce((sum, s) => sum + s.pages, 0) / p.clients, 2),
        cpu,
      };
    } finally {
      await closeAll(sockets);
    }
  },

  rows({ workerd, bare }, context) {
    const t = Targets.reconnectHerd;
    const p = context.params.reconnectHerd;
    const allCurrent = (f?: HerdFigures) => (f ? (Number.isFinite(f.allCurrentMs) ? ms(f.allCurrentMs) : `${f.current}/${f.clients} current`) : "-");
    const received = (f?: HerdFigures) => (f ? `${fmt(f.messagesReceived)}/${fmt(f.expectedMessages)}, gaps ${f.gaps}, dups ${f.duplicates}` : "-");
    return [
      { metric: `${fmt(p.clients)} clients ${p.behind} behind: all current in`, workerd: allCurrent(workerd), bare: allCurrent(bare), ratio: ratio(workerd?.allCurrentMs, bare?.allCurrentMs), target: `<= ${t.allCurrentMs / 1000} s`, verdict: verdict(workerd && workerd.allCurrentMs <= t.allCurrentMs) },
      { metric: "  per client p50 / p99", workerd: `${ms(workerd?.timeToCurrent.p50Ms)} / ${ms(workerd?.timeToCurrent.p99Ms)}`, bare: `${ms(bare?.timeToCurrent.p50Ms)} / ${ms(bare?.timeToCurrent.p99Ms)}`, ratio: ratio(workerd?.timeToCurrent.p99Ms, bare?.timeToCurrent.p99Ms), target: "", verdict: "" },
      { metric: "  messages received, gaps, duplicates", workerd: received(workerd), bare: received(bare), ratio: "", target: "0 gaps, 0 dups", verdict: verdict(workerd && workerd.gaps === 0 && workerd.duplicates === 0 && workerd.messagesReceived === workerd.expectedMessages && workerd.failures === 0) },
    ];
  },

  notes({ workerd, bare }) {
    const notes: string[] = [];
    for (const [name, f] of Object.entries({ workerd, bare })) {
      if (f && f.failures > 0) notes.push(`reconnect herd on ${name}: ${f.failures} sockets failed: ${f.failureSamples.join("; ")}`);
      if (f?.cpu.clientBound) notes.push(`reconnect herd on ${name}: client-bound (${f.cpu.clientCores} cores)`);
    }
    return notes;
  },
};
