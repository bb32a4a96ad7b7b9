/**
 * History of a long chat. The chat is seeded with N messages over one socket,
 * pipelined (which is also a figure: persisted sends per second on one socket), then
 * the latest page is read repeatedly over REST and the whole log is walked back page
 * by page with `before=`, checking that every seq comes exactly once.
 *
 * The bare server has no REST history: it runs only the seeding, for the ratio.
 */
import { Targets } from "../scenarios.ts";
import type { Target } from "../targets/target.ts";
import { closeAll } from "../client.ts";
import { LatencyRecorder, type LatencySummary } from "../lib/latency.ts";
import { waitUntil } from "../lib/open-loop.ts";
import { round } from "../lib/process-stats.ts";
import { fmt, ms, openSockets, perSecond, PhaseMeter, ratio, verdict, type CpuFigures, type Scenario } from "../lib/scenario.ts";

export type HistoryFigures = {
  messages: number;
  seed: { acked: number; failed: number; seconds: number; sendsPerSecond: number; window: number; cpu: CpuFigures };
  firstPage?: LatencySummary & { pageSize: number };
  walk?: { pages: number; events: number; totalMs: number; perPage: LatencySummary; complete: boolean; problem: string };
};

export const history: Scenario<HistoryFigures> = {
  name: "history",
  title: "history",
  targets: ["workerd", "bare"],

  async run(target: Target, context) {
    const p = context.params.history;
    const users = await target.users(2);
    // A group of two: a direct chat for this pair may already exist with other messages.
    const chatId = await target.createGroup(users, "history");
    const [socket] = await openSockets([{ url: target.socketUrl(chatId), user: users[0]! }]);
    const figures: HistoryFigures = { messages: p.messages, seed: null! };
    try {
      // Seeding: keep `window` sends in flight; each ack lets the next one go.
      const tagDot = `${context.nextTag("h")}.`;
      let sent = 0;
      let acked = 0;
      let failed = 0;
      const sendNext = () => {
        const index = sent++;
        socket!.sendMessage(`${tagDot}${index}`, `${tagDot}${index}`, context.body);
      };
      socket!.onReply = (reply) => {
        if (!reply.id.startsWith(tagDot)) return;
        if (reply.ok) acked++;
        else failed++;
        if (sent < p.messages) sendNext();
      };
      const meter = new PhaseMeter(target, context, "history-seed");
      await meter.start();
      const startedAt = performance.now();
      while (sent < Math.min(p.seedWindow, p.messages)) sendNext();
      await waitUntil(() => acked + failed >= p.messages, 120_000);
      const seconds = (performance.now() - startedAt) / 1000;
      figures.seed = { acked, failed, seconds: round(seconds, 2), sendsPerSecond: round(acked / seconds, 0), window: p.seedWindow, cpu: await meter.stop() };
      context.log(`    ${target.name}: seeded ${acked} messages in ${round(seconds, 1)} s (${figures.seed.sendsPerSecond}/s)`);
    } finally {
      await closeAll([socket!]);
    }
    const api = target.api;
    if (!api) return figures;

    const reader = users[1]!;
    const firstPage = new LatencyRecorder();
    let head = 0;
    for (let i = 0; i < p.firstPageSamples; i++) {
      const { page, ms } = await api.timedHistory(reader, chatId, { limit: p.pageSize });
      firstPage.recordMs(ms);
      head = page.headSeq;
    }
    figures.firstPage = { ...firstPage.summary(), pageSize: p.pageSize };

    // The full walk, newest to oldest, as a client scrolling back to the start.
    const perPage = new LatencyRecorder();
    const seen = new Uint8Array(head + 1);
    let events = 0;
    let problem = "";
    let before: number | undefined;
    const walkStartedAt = performance.now();
    const maxPages = Math.ceil(head / p.pageSize) + 5;
    for (let pages = 0; pages < maxPages; pages++) {
      const { page, ms } = await api.timedHistory(reader, chatId, before === undefined ? { limit: p.pageSize } : { before, limit: p.pageSize });
      perPage.recordMs(ms);
      for (const event of page.events) {
        if (event.seq < 1 || event.seq > head || seen[event.seq]) problem ||= `seq ${event.seq} out of range or repeated`;
        else seen[event.seq] = 1;
        events++;
      }
      if (!page.hasMore || page.events.length === 0) break;
      before = page.events[0]!.seq;
    }
    const totalMs = performance.now() - walkStartedAt;
    const complete = !problem && events === head && seen.subarray(1).every((v) => v === 1);
    if (!complete && !problem) problem = `walked ${events} events, head is ${head}`;
    figures.walk = { pages: perPage.count, events, totalMs: round(totalMs, 1), perPage: perPage.summary(), complete, problem };
    return figures;
  },

  rows({ workerd, bare }, context) {
    const t = Targets.history;
    const p = context.params.history;
    const w = workerd;
    return [
      { metric: `seed ${fmt(p.messages)} msgs, one socket, ${p.seedWindow} in flight`, workerd: perSecond(w?.seed.sendsPerSecond), bare: perSecond(bare?.seed.sendsPerSecond), ratio: ratio(w?.seed.sendsPerSecond, bare?.seed.sendsPerSecond), target: "", verdict: "" },
      { metric: `first page (${p.pageSize}) p50 / p99`, workerd: w?.firstPage ? `${ms(w.firstPage.p50Ms)} / ${ms(w.firstPage.p99Ms)}` : "-", bare: "n/a", ratio: "", target: `p50 <= ${t.firstPageP50Ms} ms`, verdict: verdict(w?.firstPage && w.firstPage.p50Ms <= t.firstPageP50Ms) },
      { metric: "full walk back (before=)", workerd: w?.walk ? `${ms(w.walk.totalMs)}, ${w.walk.pages} pages, ${w.walk.complete ? "complete" : `INCOMPLETE: ${w.walk.problem}`}` : "-", bare: "n/a", ratio: "", target: "every seq once", verdict: verdict(w?.walk?.complete) },
      { metric: "  per page p50 / p99", workerd: w?.walk ? `${ms(w.walk.perPage.p50Ms)} / ${ms(w.walk.perPage.p99Ms)}` : "-", bare: "n/a", ratio: "", target: "", verdict: "" },
    ];
  },

  notes({ workerd }) {
    const notes = ["history: the bare server has no REST history; only the seeding rate is compared"];
    if (workerd && workerd.seed.failed > 0) notes.push(`history: ${workerd.seed.failed} seeding sends failed`);
    return notes;
  },
};
