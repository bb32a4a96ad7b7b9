/**
 * Wake after eviction: a chat's object hibernates after ~10 s without events
 * (locally), keeping its sockets. After `idleMs` of silence, the first message has to
 * start the object again (constructor, migrations check, membership load) before it
 * is stored and delivered. Several chats idle together and are woken one at a time.
 *
 * Eviction is proven, not assumed: the Worker's count of ChatRoom constructor runs is
 * read before the idle period and after the wakes (lib/instance-start-probe.ts); one
 * run per chat means every chat's object had been evicted.
 */
import { Targets } from "../scenarios.ts";
import type { ChatSocket } from "../client.ts";
import { readChatRoomStarts } from "../lib/instance-start-probe.ts";
import { sleep, waitUntil } from "../lib/open-loop.ts";
import { round } from "../lib/process-stats.ts";
import { ms, openSockets, PhaseMeter, verdict, type CpuFigures, type Scenario } from "../lib/scenario.ts";

type Wake = {
  /** Send -> other client on the warm object just before the idle period (median of 11). */
  warmMs: number;
  /** Send -> other client for the first message after the idle period. */
  firstMessageMs: number;
  /** Send -> the sender's ack for that message. */
  firstAckMs: number;
  /** CPU during the wake (and, with --profile, where the Worker's thread spent it). */
  cpu: CpuFigures;
};

export type WakeFigures = {
  skipped: string;
  idleMs: number;
  wakes: Wake[];
  /** Worst first-message latency: the figure for the target. */
  firstMessageMaxMs: number;
  /** ChatRoom constructor runs over all the wakes (one per chat = every object had been evicted); null when unread. */
  instanceStarts: number | null;
  probe: string;
};

export const wakeAfterEviction: Scenario<WakeFigures> = {
  name: "wakeAfterEviction",
  title: "wake after eviction",
  targets: ["workerd"],

  async run(target, context) {
    const p = context.params.wakeAfterEviction;
    if (p.skip) return { skipped: `skipped in --quick: needs ${p.idleMs / 1000} s of idle time`, idleMs: p.idleMs, wakes: [], firstMessageMaxMs: Number.NaN, instanceStarts: null, probe: "" };
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

    let probeNote = "ChatRoom constructor runs read through the inspector (one Runtime.evaluate before the idle period and one after the wakes; nothing attached in between)";
    const tryReadStarts = async (): Promise<number | null> => {
      if (target.inspectorPort === undefined) return null;
      try {
        return await readChatRoomStarts(target.inspectorPort);
      } catch (error) {
        probeNote = `could not read the start count (${error instanceof Error ? error.message : String(error)}): eviction not proven`;
        return null;
      }
    };
    try {
      const warm = [];
      for (const pair of pairs) {
        for (let i = 0; i < 20; i++) await timedMessage(pair);
        const samples = [];
        for (let i = 0; i < 11; i++) samples.push((await timedMessage(pair)).deliveredMs);
        warm.push(samples.sort((a, b) => a - b)[5]!); // the median: one WAL checkpoint must not be "warm"
      }
      const startsBefore = await tryReadStarts();
      context.log(`    ${target.name}: ${pairs.length} chat(s) idle for ${p.idleMs / 1000} s`);
      await sleep(p.idleMs);
      const wakes: Wake[] = [];
      for (const [index, pair] of pairs.entries()) {
        const meter = new PhaseMeter(target, context, `wake-${index + 1}`);
        await meter.start();
        const first = await timedMessage(pair);
        const cpu = await meter.stop();
        wakes.push({ warmMs: warm[index]!, firstMessageMs: first.deliveredMs, firstAckMs: first.ackMs, cpu });
      }
      const startsAfter = startsBefore === null ? null : await tryReadStarts();
      return {
        skipped: "",
        idleMs: p.idleMs,
        wakes,
        firstMessageMaxMs: Math.max(...wakes.map((w) => w.firstMessageMs)),
        // Only these chats are used meanwhile, each starts at most once per wake.
        instanceStarts: startsBefore === null || startsAfter === null ? null : startsAfter - startsBefore,
        probe: probeNote,
      };
    } finally {
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
      { metric: "  eviction proven (constructor runs / chats)", workerd: `${workerd.instanceStarts ?? "?"}/${workerd.wakes.length}`, bare: "n/a", ratio: "", target: "", verdict: "" },
    ];
  },

  notes({ workerd }) {
    if (!workerd) return [];
    if (workerd.skipped) return [`wake after eviction: ${workerd.skipped}`];
    const notes = [`wake after eviction: ${workerd.probe}`];
    if (workerd.instanceStarts !== workerd.wakes.length) {
      notes.push(`wake after eviction: ${workerd.instanceStarts ?? "no"} ChatRoom constructor runs for ${workerd.wakes.length} wakes: not every chat is proven evicted, some latencies may be of a warm object`);
    }
    return notes;
  },
};
