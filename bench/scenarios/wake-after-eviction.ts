/**
 * Wake after eviction: a chat's object hibernates after ~10 s without events
 * (locally), keeping its sockets. After `idleMs` of silence, the first message has to
 * start the object again (constructor, migrations check, membership load) before it
 * is stored and delivered. Several chats idle together and are woken one at a time.
 *
 * Eviction is proven, not assumed, with InstanceStartProbe: a ChatRoom constructor
 * run on the first message means the object had been evicted.
 */
import { Targets } from "../scenarios.ts";
import type { ChatSocket } from "../client.ts";
import { InstanceStartProbe } from "../lib/instance-start-probe.ts";
import { sleep, waitUntil } from "../lib/open-loop.ts";
import { round } from "../lib/process-stats.ts";
import { ms, openSockets, verdict, type Scenario } from "../lib/scenario.ts";

type Wake = {
  /** Send -> other client on the warm object just before the idle period (median of 11). */
  warmMs: number;
  /** Send -> other client for the first message after the idle period. */
  firstMessageMs: number;
  /** Send -> the sender's ack for that message. */
  firstAckMs: number;
  /** ChatRoom constructor runs during the wake-up (1 = the object had been evicted). */
  instanceStarts: number | null;
};

export type WakeFigures = {
  skipped: string;
  idleMs: number;
  wakes: Wake[];
  /** Worst first-message latency: the figure for the target. */
  firstMessageMaxMs: number;
  evictionProven: number;
  probe: string;
};

export const wakeAfterEviction: Scenario<WakeFigures> = {
  name: "wakeAfterEviction",
  title: "wake after eviction",
  targets: ["workerd"],

  async run(target, context) {
    const p = context.params.wakeAfterEviction;
    if (p.skip) return { skipped: `skipped in --quick: needs ${p.idleMs / 1000} s of idle time`, idleMs: p.idleMs, wakes: [], firstMessageMaxMs: Number.NaN, evictionProven: 0, probe: "" };
    const users = await target.users(4 + 2 * p.chats);
    const pairs: { sender: ChatSocket; receiver: ChatSocket }[] = [];
    // Users 0-3 have the 1:1 scenarios' chats: new pairs give new chats.
    for (let c = 0; c < p.chats; c++) {
      const [alice, bob] = [users[4 + 2 * c]!, users[5 + 2 * c]!];
      const chatId = await target.createDirect(alice, bob);
      const [sender, receiver] = await openSockets([
        { url: target.socketUrl(chatId), user: alice },
        { url: target.socketUrl(chatId), user: bob },
      ]);
      pairs.push({ sender: sender!, receiver: receiver! });
    }
    const tagDot = `${context.nextTag("w")}.`;
    let next = 0;
    /** Sends one message and waits for its copy on the other socket and the ack. */
    const timedMessage = async (pair: { sender: ChatSocket; receiver: ChatSocket }): Promise<{ deliveredMs: number; ackMs: number }> => {
      const clientId = `${tagDot}${next++}`;
      let deliveredAt = Number.NaN;
      let ackAt = Number.NaN;
      pair.receiver.onMessage = (_seq, id, at) => {
        if (id === clientId) deliveredAt = at;
      };
      pair.sender.onReply = (reply, at) => {
        if (reply.id === clientId && reply.ok) ackAt = at;
      };
      const sentAt = performance.now();
      pair.sender.sendMessage(clientId, clientId, context.body);
      await waitUntil(() => !Number.isNaN(deliveredAt) && !Number.isNaN(ackAt), p.timeoutMs, 1);
      return { deliveredMs: round(deliveredAt - sentAt, 3), ackMs: round(ackAt - sentAt, 3) };
    };

    let probe: InstanceStartProbe | null = null;
    let probeNote = "";
    try {
      // The probe first: turning the debugger on makes V8 drop optimized code, and
      // that cost belongs in the warm messages below, not in the first wake.
      if (target.inspectorPort !== undefined) {
        try {
          probe = await InstanceStartProbe.attach(target.inspectorPort);
          probeNote = "ChatRoom constructor runs counted through the inspector (a conditional breakpoint that never pauses)";
        } catch (error) {
          probeNote = `could not attach the inspector probe (${error instanceof Error ? error.message : String(error)}): eviction not proven`;
        }
      }
      const warm = [];
      for (const pair of pairs) {
        for (let i = 0; i < 20; i++) await timedMessage(pair); // warm up under the debugger
        const samples = [];
        for (let i = 0; i < 11; i++) samples.push((await timedMessage(pair)).deliveredMs);
        warm.push(samples.sort((a, b) => a - b)[5]!); // the median: one WAL checkpoint must not be "warm"
      }
      context.log(`    ${target.name}: ${pairs.length} chat(s) idle for ${p.idleMs / 1000} s`);
      await sleep(p.idleMs);
      const wakes: Wake[] = [];
      for (const [index, pair] of pairs.entries()) {
        const before = probe?.starts ?? 0;
        const first = await timedMessage(pair);
        await sleep(100); // the console event may trail the reply
        wakes.push({ warmMs: warm[index]!, firstMessageMs: first.deliveredMs, firstAckMs: first.ackMs, instanceStarts: probe ? probe.starts - before : null });
      }
      return {
        skipped: "",
        idleMs: p.idleMs,
        wakes,
        firstMessageMaxMs: Math.max(...wakes.map((w) => w.firstMessageMs)),
        evictionProven: wakes.filter((w) => (w.instanceStarts ?? 0) > 0).length,
        probe: probeNote,
      };
    } finally {
      await probe?.detach();
      for (const pair of pairs) await Promise.all([pair.sender.close(), pair.receiver.close()]);
    }
  },

  rows({ workerd }) {
    const t = Targets.wakeAfterEviction;
    if (!workerd || workerd.skipped) return [{ metric: "first message after idle", workerd: workerd?.skipped || "-", bare: "n/a", ratio: "", target: `<= ${t.firstMessageMs} ms`, verdict: "" }];
    const list = (values: number[]) => values.map((v) => ms(v)).join(", ");
    return [
      { metric: `first message after ${workerd.idleMs / 1000} s idle (worst)`, workerd: `${ms(workerd.firstMessageMaxMs)} (each: ${list(workerd.wakes.map((w) => w.firstMessageMs))})`, bare: "n/a", ratio: "", target: `<= ${t.firstMessageMs} ms`, verdict: verdict(workerd.firstMessageMaxMs <= t.firstMessageMs) },
      { metric: "  same chats, warm, before the idle period (median)", workerd: list(workerd.wakes.map((w) => w.warmMs)), bare: "n/a", ratio: "", target: "", verdict: "" },
      { metric: "  eviction proven (constructor ran on wake)", workerd: `${workerd.evictionProven}/${workerd.wakes.length}`, bare: "n/a", ratio: "", target: "", verdict: "" },
    ];
  },

  notes({ workerd }) {
    if (!workerd) return [];
    if (workerd.skipped) return [`wake after eviction: ${workerd.skipped}`];
    const notes = [`wake after eviction: ${workerd.probe}`];
    if (workerd.evictionProven < workerd.wakes.length) {
      notes.push(`wake after eviction: only ${workerd.evictionProven} of ${workerd.wakes.length} wakes ran the ChatRoom constructor: the others were not proven evicted, their latency may be of a warm object`);
    }
    return notes;
  },
};
