/**
 * The device stream (`GET /chat`): one socket per device for every chat of the account.
 *
 * - streamReconnect: a device of an account with many chats, a few of them behind,
 *   reconnects: from opening the socket to `synced` with every missed event, after a
 *   quiet period (the account's and the chats' objects evicted) and right after missing
 *   the messages (objects awake), several samples of each.
 * - streamOneToOne: direct chats over pairs of accounts' streams, closed loop (the
 *   pairs in turn): send on A's stream to delivery on B's stream, and the round trip.
 * - streamGroup: a group whose members are connected by their stream only and send in
 *   turn, at stepped rates (the fan-out stepping, fan-out.ts): the knee.
 * - streamStorm: many devices open their stream at once and resume as new devices
 *   (`{}`): time until every one is `synced`, and failures.
 *
 * Accounts are logged in for each scenario (`freshUsers`), so each has exactly the
 * chats the scenario gives it, whatever ran before.
 */
import { Targets } from "../scenarios.ts";
import type { Target } from "../targets/target.ts";
import { Limits } from "../../src/client/index.ts";
import { closeAll, integrityOf, mapPool, type BenchUser } from "../client.ts";
import { openStreams, StreamSocket } from "../stream-client.ts";
import { readInstanceStarts, startsBetween } from "../lib/instance-start-probe.ts";
import { LatencyRecorder, type LatencySummary } from "../lib/latency.ts";
import { sleep, waitUntil } from "../lib/open-loop.ts";
import { round } from "../lib/process-stats.ts";
import { fmt, micros, ms, openSockets, perSecond, PhaseMeter, ratio, serverCpuMicrosPer, serverCpuSeconds, settleAfterSetup, verdict, type CpuFigures, type RunContext, type Scenario } from "../lib/scenario.ts";
import { runStepped, steppedNotes, steppedRows, type FanOutFigures, type FanOutRoom } from "./fan-out.ts";

/** Chat creations in flight during setup. */
const CREATE_CONCURRENCY = 8;

/**
 * Opens one stream per user as a new device (`{}`) and waits until each knows every
 * chat in `chatIds`: announced on resume, or (when the account's list got the chat
 * only after the resume) joined live.
 */
async function openStreamsKnowing(target: Target, users: readonly BenchUser[], chatIds: readonly string[]): Promise<StreamSocket[]> {
  const streams = await openStreams(users.map((user) => ({ url: target.streamUrl(), user })));
  const knowsAll = () => streams.every((stream) => chatIds.every((chatId) => stream.expected.has(chatId)));
  if (!(await waitUntil(knowsAll, 15_000, 20))) {
    await closeAll(streams);
    throw new Error(`${streams.filter((s) => !chatIds.every((c) => s.expected.has(c))).length} of ${streams.length} streams never got their chats`);
  }
  return streams;
}

/**
 * Durable Object starts so far, per class (workerd, through the inspector; null on the
 * bare server or when the inspector does not answer). Read outside measured phases.
 */
async function startsNow(target: Target): Promise<Record<string, number> | null> {
  if (target.inspectorPort === undefined) return null;
  return readInstanceStarts(target.inspectorPort).catch(() => null);
}

const startsSince = async (target: Target, before: Record<string, number> | null): Promise<Record<string, number> | null> => {
  const after = before && (await startsNow(target));
  return before && after ? startsBetween(before, after) : null;
};

/** Server CPU in ms: the kernel counts in 10 ms ticks, so 0 means less than one. */
const cpuMs = (value: number | undefined): string => (value === 0 ? "< 10 ms" : ms(value));

const median = (values: readonly number[]): number => {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
};

// ---------------------------------------------------------------------------

/** Cold: after `quietMs` without traffic (objects evicted); warm: right after the missed messages (objects awake). */
export type ReconnectKind = "cold" | "warm";

export type ReconnectSample = {
  kind: ReconnectKind;
  /** From creating the socket to `synced` with every missed event received (NaN: incomplete). */
  ms: number;
  readyMs: number;
  resumedMs: number;
  syncedMs: number;
  resume: { behind: number; announced: number } | null;
  events: number;
  messages: number;
  expectedMessages: number;
  frames: number;
  bytes: number;
  batches: number;
  gaps: number;
  duplicates: number;
  failure: string | null;
  complete: boolean;
  serverCpuMs: number;
  /** Durable Objects started (woken) during the reconnect, per class (workerd only). */
  objectStarts: Record<string, number> | null;
  cpu: CpuFigures & { wallMs: number };
};

export type ReconnectSummary = {
  samples: number;
  /** NaN unless every sample of the kind was complete. */
  p50Ms: number;
  maxMs: number;
  complete: boolean;
  eventsPerReconnect: number;
  bytesPerReconnect: number;
  serverCpuMsPerReconnect: number;
  /** Median objects started per reconnect, per class (workerd only). */
  objectStarts: Record<string, number> | null;
};

export type StreamReconnectFigures = {
  chats: number;
  behindChats: number;
  behindBy: number;
  /** The quiet time before each cold reconnect (0: none, so "cold" ones may find objects awake). */
  quietMs: number;
  samples: ReconnectSample[];
  cold: ReconnectSummary;
  warm: ReconnectSummary;
};

function summarizeReconnects(samples: ReconnectSample[], expected: number): ReconnectSummary {
  const complete = samples.length === expected && samples.every((s) => s.complete);
  const starts = samples.every((s) => s.objectStarts !== null)
    ? Object.fromEntries([...new Set(samples.flatMap((s) => Object.keys(s.objectStarts!)))].map((name) => [name, median(samples.map((s) => s.objectStarts![name] ?? 0))]))
    : null;
  return {
    samples: samples.length,
    p50Ms: complete ? median(samples.map((s) => s.ms)) : Number.NaN,
    maxMs: complete ? Math.max(...samples.map((s) => s.ms)) : Number.NaN,
    complete,
    eventsPerReconnect: median(samples.map((s) => s.events)),
    bytesPerReconnect: median(samples.map((s) => s.bytes)),
    serverCpuMsPerReconnect: median(samples.map((s) => s.serverCpuMs)),
    objectStarts: samples.length > 0 ? starts : null,
  };
}

export const streamReconnect: Scenario<StreamReconnectFigures> = {
  name: "streamReconnect",
  title: "device stream: reconnect, many chats",
  targets: ["workerd", "bare"],

  async run(target, context) {
    const p = context.params.streamReconnect;
    const quietMs = target.name === "workerd" ? p.quietMs : 0;
    const [me] = await target.freshUsers(1);
    // Each chat is created by its peer: creations are limited per creator.
    const peers = (await target.users(p.chats + 1)).slice(1);
    const chatIds = await mapPool(peers, CREATE_CONCURRENCY, (peer) => target.createDirect(peer, me!));
    // The device's first sync: it learns every chat and where each one is.
    const [first] = await openStreamsKnowing(target, [me!], chatIds);
    let cursors = first!.cursors();
    await closeAll([first!]);
    context.log(`    ${target.name}: an account with ${chatIds.length} chats, its device synced once`);

    /** The peers of `behindChats` chats (a different set each time) send `behindBy` messages each; returns each chat's new head. */
    let round_ = 0;
    const missMessages = async (): Promise<Map<string, number>> => {
      const behind = Array.from({ length: p.behindChats }, (_, k) => (round_ * p.behindChats + k) % chatIds.length);
      round_++;
      const senders = await openSockets(behind.map((i) => ({ url: target.socketUrl(chatIds[i]!), user: peers[i]! })), 50);
      const tag = context.nextTag("sr");
      senders.forEach((sender, k) => {
        for (let m = 0; m < p.behindBy; m++) sender.sendMessage(`${tag}.${k}.${m}`, `${tag}.${k}.${m}`, context.body);
      });
      await waitUntil(() => senders.every((sender) => sender.repliesOk + sender.repliesFailed >= p.behindBy), 30_000);
      const heads = new Map(behind.map((i, k) => [chatIds[i]!, senders[k]!.ready!.headSeq + senders[k]!.repliesOk]));
      await closeAll(senders);
      return heads;
    };

    const reconnect = async (kind: ReconnectKind, heads: Map<string, number>, index: number): Promise<ReconnectSample> => {
      const reachedAt = new Map<string, number>();
      const startsBefore = await startsNow(target);
      const meter = new PhaseMeter(target, context, `stream-reconnect-${kind}-${index}`);
      await meter.start();
      const stream = new StreamSocket({
        url: target.streamUrl(),
        user: me!,
        cursors,
        handshakeTimeoutMs: p.timeoutMs,
        onMessage: (seq, _clientId, receivedAt, _socket, chatId) => {
          const head = heads.get(chatId);
          if (head !== undefined && seq >= head && !reachedAt.has(chatId)) reachedAt.set(chatId, receivedAt);
        },
      });
      await waitUntil(() => stream.failure !== null || (stream.isSynced && reachedAt.size === heads.size), p.timeoutMs, 2);
      const cpu = await meter.stop();
      const objectStarts = await startsSince(target, startsBefore);
      const complete = stream.failure === null && stream.isSynced && reachedAt.size === heads.size && stream.gaps === 0 && stream.duplicates === 0;
      const doneAt = Math.max(stream.syncedAt, ...reachedAt.values());
      const since = (at: number) => round(at - stream.startedAt, 1);
      const sample: ReconnectSample = {
        kind,
        ms: complete ? since(doneAt) : Number.NaN,
        readyMs: since(stream.readyAt),
        resumedMs: since(stream.resumedAt),
        syncedMs: since(stream.syncedAt),
        resume: stream.resumeResult && { behind: stream.resumeResult.behind, announced: stream.resumeResult.announced },
        events: stream.events,
        messages: stream.messages,
        expectedMessages: p.behindChats * p.behindBy,
        frames: stream.frames,
        bytes: stream.bytes,
        batches: stream.batches,
        gaps: stream.gaps,
        duplicates: stream.duplicates,
        failure: stream.failure ? `${stream.failure.stage}: ${stream.failure.detail}` : reachedAt.size < heads.size ? `${heads.size - reachedAt.size} chats not caught up after ${p.timeoutMs} ms` : null,
        complete,
        serverCpuMs: round(serverCpuSeconds(cpu) * 1000, 1),
        objectStarts,
        cpu,
      };
      context.log(
        `    ${target.name} ${kind} reconnect ${index + 1}/${p.samples}: ${complete ? `${sample.ms} ms` : `INCOMPLETE (${sample.failure})`}, ` +
          `${sample.messages}/${sample.expectedMessages} messages, ${sample.events} events, ${fmt(sample.bytes / 1024)} KiB, server CPU ${sample.serverCpuMs} ms${objectStarts ? `, objects started ${JSON.stringify(objectStarts)}` : ""}`,
      );
      cursors = { ...cursors, ...stream.cursors() };
      await closeAll([stream]);
      return sample;
    };

    const samples: ReconnectSample[] = [];
    for (let s = 0; s < p.samples; s++) {
      if (performance.now() + quietMs > context.deadline) break;
      // Away for a while: the account's and the chats' objects are evicted meanwhile.
      const coldHeads = await missMessages();
      if (quietMs > 0) await sleep(quietMs);
      samples.push(await reconnect("cold", coldHeads, s));
      // A blip: the device comes back right after missing more messages.
      const warmHeads = await missMessages();
      await sleep(200);
      samples.push(await reconnect("warm", warmHeads, s));
    }
    return {
      chats: chatIds.length,
      behindChats: p.behindChats,
      behindBy: p.behindBy,
      quietMs,
      samples,
      cold: summarizeReconnects(samples.filter((s) => s.kind === "cold"), p.samples),
      warm: summarizeReconnects(samples.filter((s) => s.kind === "warm"), p.samples),
    };
  },

  rows({ workerd, bare }, context) {
    const t = Targets.streamReconnect;
    const p = context.params.streamReconnect;
    const times = (f?: ReconnectSummary) => (f ? (f.complete ? `${ms(f.p50Ms)} / ${ms(f.maxMs)}` : `incomplete (${f.samples}/${p.samples} ran)`) : "-");
    const traffic = (f?: ReconnectSummary) => (f ? `${fmt(f.eventsPerReconnect)} events, ${fmt(f.bytesPerReconnect / 1024)} KiB` : "-");
    const phases = (f?: StreamReconnectFigures) => {
      const cold = f?.samples.filter((s) => s.kind === "cold") ?? [];
      return cold.length > 0 ? `${ms(median(cold.map((s) => s.readyMs)))} / ${ms(median(cold.map((s) => s.resumedMs)))} / ${ms(median(cold.map((s) => s.syncedMs)))}` : "-";
    };
    const starts = (f?: ReconnectSummary) => (f?.objectStarts ? Object.entries(f.objectStarts).map(([name, n]) => `${name} ${fmt(n)}`).join(", ") || "none" : "n/a");
    const integrity = (f?: StreamReconnectFigures) => {
      if (!f) return "-";
      const sum = (pick: (s: ReconnectSample) => number) => f.samples.reduce((total, s) => total + pick(s), 0);
      return `${fmt(sum((s) => s.messages))}/${fmt(sum((s) => s.expectedMessages))}, gaps ${sum((s) => s.gaps)}, dups ${sum((s) => s.duplicates)}`;
    };
    const allComplete = (f?: StreamReconnectFigures) => f && f.cold.complete && f.warm.complete;
    return [
      {
        metric: `${fmt(p.chats)} chats, ${p.behindChats} behind by ${p.behindBy}, after ${fmt((workerd?.quietMs ?? 0) / 1000)} s away: synced + every missed event, p50 / max of ${p.samples}`,
        workerd: times(workerd?.cold),
        bare: times(bare?.cold),
        ratio: ratio(workerd?.cold.p50Ms, bare?.cold.p50Ms),
        target: `p50 < ${t.p50Ms / 1000} s`,
        verdict: verdict(workerd && workerd.cold.complete && workerd.cold.p50Ms < t.p50Ms),
      },
      { metric: "  received per reconnect (p50)", workerd: traffic(workerd?.cold), bare: traffic(bare?.cold), ratio: ratio(workerd?.cold.bytesPerReconnect, bare?.cold.bytesPerReconnect), target: "", verdict: "" },
      { metric: "  stream.ready / resume reply / synced (p50)", workerd: phases(workerd), bare: phases(bare), ratio: "", target: "", verdict: "" },
      { metric: "  server CPU per reconnect (p50, every server process)", workerd: cpuMs(workerd?.cold.serverCpuMsPerReconnect), bare: cpuMs(bare?.cold.serverCpuMsPerReconnect), ratio: ratio(workerd?.cold.serverCpuMsPerReconnect, bare?.cold.serverCpuMsPerReconnect), target: "", verdict: "" },
      { metric: "  objects started per reconnect (p50)", workerd: starts(workerd?.cold), bare: "n/a", ratio: "", target: "", verdict: "" },
      {
        metric: "right after missing them (objects awake): p50 / max",
        workerd: times(workerd?.warm),
        bare: times(bare?.warm),
        ratio: ratio(workerd?.warm.p50Ms, bare?.warm.p50Ms),
        target: "",
        verdict: "",
      },
      { metric: "  server CPU per reconnect (p50); objects started", workerd: `${cpuMs(workerd?.warm.serverCpuMsPerReconnect)}; ${starts(workerd?.warm)}`, bare: cpuMs(bare?.warm.serverCpuMsPerReconnect), ratio: ratio(workerd?.warm.serverCpuMsPerReconnect, bare?.warm.serverCpuMsPerReconnect), target: "", verdict: "" },
      { metric: "missed messages received (every reconnect), gaps, duplicates", workerd: integrity(workerd), bare: integrity(bare), ratio: "", target: "all, 0 gaps, 0 dups", verdict: verdict(allComplete(workerd)) },
    ];
  },

  notes({ workerd, bare }, context) {
    const notes: string[] = [];
    const p = context.params.streamReconnect;
    if (workerd) {
      const cold = workerd.samples.filter((s) => s.kind === "cold");
      const accountWoke = cold.filter((s) => (s.objectStarts?.User ?? 0) > 0).length;
      const chatsWoke = cold.map((s) => s.objectStarts?.ChatRoom ?? 0);
      notes.push(
        workerd.quietMs > 0
          ? `stream reconnect: each cold reconnect came ${workerd.quietMs / 1000} s after the messages it misses; the account's object had been evicted (it started again) in ${accountWoke} of ${cold.length}, and ${chatsWoke.join(", ")} ChatRoom objects started (of ${p.chats} chats listed, ${p.behindChats} behind)`
          : "stream reconnect: --quick has no quiet period: the cold reconnects may find the account's and the chats' objects awake",
      );
    }
    for (const [name, f] of Object.entries({ workerd, bare })) {
      for (const sample of f?.samples ?? []) {
        if (!sample.complete) notes.push(`stream reconnect on ${name} (${sample.kind}): incomplete: ${sample.failure ?? `gaps ${sample.gaps}, dups ${sample.duplicates}`}`);
        // A phase of a few ms says nothing about the client's load.
        if (sample.cpu.clientBound && sample.cpu.wallMs >= 200) notes.push(`stream reconnect on ${name} (${sample.kind}): client-bound (${sample.cpu.clientCores} cores)`);
      }
    }
    return notes;
  },
};

// ---------------------------------------------------------------------------

export type StreamOneToOneFigures = {
  pairs: number;
  roundTrips: number;
  seconds: number;
  roundTripsPerSecond: number;
  /** From the send on A's stream to the message on B's stream: the figure the target is about. */
  delivery: LatencySummary;
  /** From the send to both the ack on A's stream and the delivery on B's. */
  roundTrip: LatencySummary;
  /** Sends that waited for their device's frame budget (then round trips/s is the pacing's, not the server's). */
  pacedSends: number;
  stalled: boolean;
  /** What the stalled round trip was missing. */
  stalledOn: string;
  gaps: number;
  duplicates: number;
  cpu: CpuFigures;
  serverCpuSeconds: number;
  /** Server CPU per round trip (send, store, ack, push to both accounts' streams), in µs. */
  serverCpuUsPerRoundTrip: number;
};

/** A direct chat between two new accounts, each on its device stream. */
type StreamPair = { chatId: string; a: StreamSocket; b: StreamSocket; lastSentAt: number };

/** A device sends at most this many frames per second here: under the stream's limit (Limits.streamFramesPerSecond), which answers more with rate_limited. */
const PER_DEVICE_RATE = Math.floor(0.8 * Limits.streamFramesPerSecond);

export const streamOneToOne: Scenario<StreamOneToOneFigures> = {
  name: "streamOneToOne",
  title: "device stream: 1:1, closed loop",
  targets: ["workerd", "bare"],

  async run(target, context) {
    const p = context.params.streamOneToOne;
    const users = await target.freshUsers(2 * p.pairs);
    const chatIds = await mapPool(Array.from({ length: p.pairs }, (_, k) => k), CREATE_CONCURRENCY, (k) => target.createDirect(users[2 * k]!, users[2 * k + 1]!));
    const streams = await openStreamsKnowing(target, users, []);
    const pairs: StreamPair[] = chatIds.map((chatId, k) => ({ chatId, a: streams[2 * k]!, b: streams[2 * k + 1]!, lastSentAt: -Infinity }));
    try {
      if (!(await waitUntil(() => pairs.every((pair) => pair.a.expected.has(pair.chatId) && pair.b.expected.has(pair.chatId)), 15_000, 20))) {
        throw new Error("some streams never got their direct chat");
      }
      await settleAfterSetup(target, context);
      await streamClosedLoop(target, context, pairs, Math.min(1, p.seconds / 2), "stream-1to1-warmup"); // wake, JIT
      return await streamClosedLoop(target, context, pairs, p.seconds, "stream-1to1");
    } finally {
      await closeAll(streams);
    }
  },

  rows({ workerd, bare }) {
    const t = Targets.streamOneToOne;
    const complete = (f?: StreamOneToOneFigures) => f && !f.stalled && f.gaps === 0 && f.duplicates === 0;
    return [
      {
        metric: "send on A's stream -> B's stream, p50",
        workerd: ms(workerd?.delivery.p50Ms),
        bare: ms(bare?.delivery.p50Ms),
        ratio: ratio(workerd?.delivery.p50Ms, bare?.delivery.p50Ms),
        target: `< ${t.p50Ms} ms`,
        verdict: verdict(workerd && complete(workerd) && workerd.delivery.p50Ms < t.p50Ms),
      },
      { metric: "  p99", workerd: ms(workerd?.delivery.p99Ms), bare: ms(bare?.delivery.p99Ms), ratio: ratio(workerd?.delivery.p99Ms, bare?.delivery.p99Ms), target: "", verdict: "" },
      {
        metric: `round trips/s (send -> ack + delivery, one in flight, ${workerd?.pairs ?? bare?.pairs} pairs in turn)`,
        workerd: perSecond(workerd?.roundTripsPerSecond),
        bare: perSecond(bare?.roundTripsPerSecond),
        ratio: ratio(workerd?.roundTripsPerSecond, bare?.roundTripsPerSecond),
        target: "",
        verdict: "",
      },
      { metric: "  round trip p50 / p99", workerd: `${ms(workerd?.roundTrip.p50Ms)} / ${ms(workerd?.roundTrip.p99Ms)}`, bare: `${ms(bare?.roundTrip.p50Ms)} / ${ms(bare?.roundTrip.p99Ms)}`, ratio: ratio(workerd?.roundTrip.p50Ms, bare?.roundTrip.p50Ms), target: "", verdict: "" },
      { metric: "server CPU per round trip (every server process)", workerd: micros(workerd?.serverCpuUsPerRoundTrip), bare: micros(bare?.serverCpuUsPerRoundTrip), ratio: ratio(workerd?.serverCpuUsPerRoundTrip, bare?.serverCpuUsPerRoundTrip), target: "", verdict: "" },
    ];
  },

  notes({ workerd, bare }) {
    const notes: string[] = [];
    for (const [name, f] of Object.entries({ workerd, bare })) {
      if (f?.stalled) notes.push(`stream 1:1 on ${name}: a round trip did not complete (${f.stalledOn}): the loop stalled`);
      if (f && (f.gaps > 0 || f.duplicates > 0)) notes.push(`stream 1:1 on ${name}: gaps ${f.gaps}, duplicates ${f.duplicates} on the receiving streams`);
      if (f && f.pacedSends > 0) notes.push(`stream 1:1 on ${name}: ${f.pacedSends} of ${f.roundTrips} sends waited to keep each device under ${PER_DEVICE_RATE} frames/s: round trips/s is capped at ${PER_DEVICE_RATE} x ${f.pairs} pairs`);
      if (f?.cpu.clientBound) notes.push(`stream 1:1 on ${name}: client-bound (${f.cpu.clientCores} cores)`);
    }
    return notes;
  },
};

/**
 * One message in flight: the next is sent once the previous one is acked on its A's
 * stream and delivered on its B's. The pairs take turns, so that no device goes over
 * PER_DEVICE_RATE (a send that would waits, and is counted).
 */
async function streamClosedLoop(target: Target, context: RunContext, pairs: StreamPair[], seconds: number, phase: string): Promise<StreamOneToOneFigures> {
  const p = context.params.streamOneToOne;
  const tagDot = `${context.nextTag("sc")}.`;
  const minGapMs = 1000 / PER_DEVICE_RATE;
  const delivery = new LatencyRecorder();
  const roundTrip = new LatencyRecorder();
  const receivers = pairs.map((pair) => pair.b);
  const integrityBefore = integrityOf(receivers);
  let index = -1;
  let pair = pairs[0]!;
  let sentAt = 0;
  let acked = false;
  let delivered = false;
  let pacedSends = 0;
  let refused = "";
  let stopAt = 0;
  let finished = false;
  let resolveDone!: () => void;
  const done = new Promise<void>((resolve) => (resolveDone = resolve));
  const send = (): void => {
    sentAt = performance.now();
    pair.lastSentAt = sentAt;
    pair.a.sendMessage(pair.chatId, `${tagDot}${index}`, `${tagDot}${index}`, context.body);
  };
  const next = (): void => {
    if (performance.now() >= stopAt || index + 1 >= p.maxRoundTrips) {
      finished = true;
      resolveDone();
      return;
    }
    index++;
    pair = pairs[index % pairs.length]!;
    acked = false;
    delivered = false;
    const waitMs = pair.lastSentAt + minGapMs - performance.now();
    if (waitMs > 0) {
      pacedSends++;
      setTimeout(send, waitMs);
    } else send();
  };
  const settle = (at: number): void => {
    if (!acked || !delivered || finished) return;
    roundTrip.recordMs(at - sentAt);
    next();
  };
  for (const { a, b, chatId } of pairs) {
    a.onReply = (reply, at) => {
      if (reply.id === `${tagDot}${index}`) {
        acked = reply.ok;
        if (!reply.ok) refused = reply.error.code;
        settle(at);
      }
    };
    b.onMessage = (_seq, clientId, at, _socket, fromChat) => {
      if (fromChat === chatId && clientId === `${tagDot}${index}` && !delivered) {
        delivered = true;
        delivery.recordMs(at - sentAt);
        settle(at);
      }
    };
  }
  const meter = new PhaseMeter(target, context, phase);
  await meter.start();
  const startedAt = performance.now();
  stopAt = startedAt + seconds * 1000;
  next();
  const stalled = !(await Promise.race([done.then(() => true), sleep(seconds * 1000 + p.roundTripTimeoutMs).then(() => false)]));
  finished = true;
  const elapsed = (performance.now() - startedAt) / 1000;
  const cpu = await meter.stop();
  const integrity = integrityOf(receivers);
  context.log(`    ${target.name} ${phase}: ${roundTrip.count} round trips, delivery p50 ${delivery.percentileMs(50)} ms, server CPU ${serverCpuMicrosPer(cpu, roundTrip.count)} µs per round trip`);
  return {
    pairs: pairs.length,
    roundTrips: roundTrip.count,
    seconds: round(elapsed, 2),
    roundTripsPerSecond: round(roundTrip.count / elapsed, 0),
    delivery: delivery.summary(),
    roundTrip: roundTrip.summary(),
    pacedSends,
    stalled,
    stalledOn: stalled ? `message ${index}: ${acked ? "acked" : refused ? `refused (${refused})` : "no ack"}, ${delivered ? "delivered" : "not delivered"}` : "",
    gaps: integrity.gaps - integrityBefore.gaps,
    duplicates: integrity.duplicates - integrityBefore.duplicates,
    cpu,
    serverCpuSeconds: round(serverCpuSeconds(cpu), 2),
    serverCpuUsPerRoundTrip: serverCpuMicrosPer(cpu, roundTrip.count),
  };
}

// ---------------------------------------------------------------------------

export const streamGroup: Scenario<FanOutFigures> = {
  name: "streamGroup",
  title: "device stream: group, 100 members",
  targets: ["workerd", "bare"],

  run(target, context) {
    const p = context.params.streamGroup;
    const open = async (): Promise<FanOutRoom[]> => {
      const users = await target.freshUsers(p.members);
      const chatId = await target.createGroup(users, "stream group");
      const streams = await openStreamsKnowing(target, users, [chatId]);
      context.log(`    ${target.name}: ${streams.length} device streams synced, each with the group`);
      // Every member sends in turn: one device may send only so many frames per second.
      return [{ chatId, sockets: streams, senders: streams, send: (k, id, clientId, body) => streams[k]!.sendMessage(chatId, id, clientId, body) }];
    };
    return runStepped(target, context, open, p, Targets.streamGroup.p99Ms, "stream-group");
  },

  rows(figures, context) {
    const p = context.params.streamGroup;
    return [{ metric: "members, each on its device stream only", workerd: String(p.members), bare: String(p.members), ratio: "", target: "", verdict: "" }, ...steppedRows(figures, Targets.streamGroup.kneeRate, p.rates)];
  },

  notes: (figures) => steppedNotes("stream group", figures),
};

// ---------------------------------------------------------------------------

export type StormRound = {
  label: string;
  streams: number;
  synced: number;
  failures: number;
  failureSamples: string[];
  /** From the first socket created to the last `synced` (NaN unless every stream synced). */
  allSyncedMs: number;
  /** Per stream, from its socket's creation to `stream.ready`, and to `synced`. */
  timeToReady: LatencySummary;
  timeToSynced: LatencySummary;
  /** Chats announced to each stream (each account has one). */
  announcedPerStream: number;
  serverCpuMsPerStream: number;
  /** Durable Objects started (woken) during the storm, per class (workerd only). */
  objectStarts: Record<string, number> | null;
  cpu: CpuFigures;
};

export type StreamStormFigures = {
  accounts: number;
  chatsPerAccount: number;
  /** Quiet time before the first storm (0: none, so it may find objects awake). */
  quietMs: number;
  /** After the quiet time, then again right after the first closed. */
  rounds: StormRound[];
};

export const streamStorm: Scenario<StreamStormFigures> = {
  name: "streamStorm",
  title: "device stream: connect storm",
  targets: ["workerd", "bare"],

  async run(target, context) {
    const p = context.params.streamStorm;
    const quietMs = target.name === "workerd" ? p.quietMs : 0;
    const users = await target.freshUsers(p.streams);
    // Every account in one direct chat with another: a resume with {} announces it and subscribes to it.
    const pairs = Array.from({ length: Math.floor(users.length / 2) }, (_, k) => [users[2 * k]!, users[2 * k + 1]!] as const);
    await mapPool(pairs, CREATE_CONCURRENCY, ([a, b]) => target.createDirect(a, b));
    // Every list holds its chat before the storm (the chat updates its members' lists after creation).
    if (target.api) {
      const listed = async () => (await mapPool(users, 16, async (user) => (await user.api!.chats({ limit: 1 })).chats.length)).every((n) => n >= 1);
      for (let attempt = 0; !(await listed()); attempt++) {
        if (attempt >= 10) throw new Error("some accounts' lists never showed their chat");
        await sleep(500);
      }
    }
    // Setup woke every account and chat: the storm comes after they are evicted, as after an outage.
    if (quietMs > 0) {
      context.log(`    ${target.name}: ${quietMs / 1000} s quiet (objects woken by setup get evicted)`);
      await sleep(quietMs);
    }
    const rounds: StormRound[] = [];
    for (const label of [quietMs > 0 ? `after ${quietMs / 1000} s quiet` : "first", "again at once"]) {
      const startsBefore = await startsNow(target);
      const meter = new PhaseMeter(target, context, `stream-storm-${rounds.length}`);
      await meter.start();
      const stormStartedAt = performance.now();
      // All at once: created in one synchronous loop; each resumes as a new device.
      const streams = users.map((user) => new StreamSocket({ url: target.streamUrl(), user, handshakeTimeoutMs: p.timeoutMs }));
      await waitUntil(() => streams.every((s) => s.isSynced || s.failure !== null), p.timeoutMs, 2);
      const cpu = await meter.stop();
      const objectStarts = await startsSince(target, startsBefore);
      const ready = new LatencyRecorder();
      const synced = new LatencyRecorder();
      let lastSyncedAt = stormStartedAt;
      let announced = 0;
      for (const stream of streams) {
        if (stream.isReady) ready.recordMs(stream.readyAt - stream.startedAt);
        if (!stream.isSynced || stream.failure) continue;
        synced.recordMs(stream.syncedAt - stream.startedAt);
        lastSyncedAt = Math.max(lastSyncedAt, stream.syncedAt);
        announced += stream.resumeResult?.announced ?? 0;
      }
      const integrity = integrityOf(streams);
      const syncedCount = synced.count;
      const notSynced = streams.length - syncedCount - integrity.failures;
      const figures: StormRound = {
        label,
        streams: streams.length,
        synced: syncedCount,
        failures: integrity.failures + Math.max(0, notSynced),
        failureSamples: notSynced > 0 ? [...integrity.failureSamples, `${notSynced} not synced after ${p.timeoutMs} ms`] : integrity.failureSamples,
        allSyncedMs: syncedCount === streams.length ? round(lastSyncedAt - stormStartedAt, 1) : Number.NaN,
        timeToReady: ready.summary(),
        timeToSynced: synced.summary(),
        announcedPerStream: round(announced / Math.max(1, syncedCount), 2),
        serverCpuMsPerStream: round((serverCpuSeconds(cpu) * 1000) / streams.length, 2),
        objectStarts,
        cpu,
      };
      rounds.push(figures);
      context.log(`    ${target.name} storm (${label}): ${syncedCount}/${streams.length} synced in ${round(lastSyncedAt - stormStartedAt, 0)} ms, synced p99 ${figures.timeToSynced.p99Ms} ms, ${figures.failures} failed${objectStarts ? `, objects started ${JSON.stringify(objectStarts)}` : ""}`);
      await closeAll(streams);
      await sleep(500);
    }
    return { accounts: users.length, chatsPerAccount: 1, quietMs, rounds };
  },

  rows({ workerd, bare }, context) {
    const t = Targets.streamStorm;
    const n = context.params.streamStorm.streams;
    const text = (r?: StormRound) => (r ? `${Number.isFinite(r.allSyncedMs) ? ms(r.allSyncedMs) : "incomplete"}, ${r.failures} failed` : "-");
    const starts = (r?: StormRound) => (r?.objectStarts ? Object.entries(r.objectStarts).map(([name, count]) => `${name} ${fmt(count)}`).join(", ") || "none" : "n/a");
    const [w, w2] = [workerd?.rounds[0], workerd?.rounds[1]];
    const [b, b2] = [bare?.rounds[0], bare?.rounds[1]];
    return [
      { metric: `${fmt(n)} streams open + resume {}${workerd?.quietMs ? ` after ${workerd.quietMs / 1000} s quiet` : ""}: all synced in, failures`, workerd: text(w), bare: text(b), ratio: ratio(w?.allSyncedMs, b?.allSyncedMs), target: `< ${t.allSyncedMs} ms, ${t.failures} failures`, verdict: verdict(w && w.allSyncedMs < t.allSyncedMs && w.failures === t.failures) },
      { metric: "  per stream: stream.ready p50 / p99", workerd: `${ms(w?.timeToReady.p50Ms)} / ${ms(w?.timeToReady.p99Ms)}`, bare: `${ms(b?.timeToReady.p50Ms)} / ${ms(b?.timeToReady.p99Ms)}`, ratio: ratio(w?.timeToReady.p99Ms, b?.timeToReady.p99Ms), target: "", verdict: "" },
      { metric: "  per stream: synced p50 / p99", workerd: `${ms(w?.timeToSynced.p50Ms)} / ${ms(w?.timeToSynced.p99Ms)}`, bare: `${ms(b?.timeToSynced.p50Ms)} / ${ms(b?.timeToSynced.p99Ms)}`, ratio: ratio(w?.timeToSynced.p99Ms, b?.timeToSynced.p99Ms), target: "", verdict: "" },
      { metric: "  server CPU per stream", workerd: ms(w?.serverCpuMsPerStream), bare: ms(b?.serverCpuMsPerStream), ratio: ratio(w?.serverCpuMsPerStream, b?.serverCpuMsPerStream), target: "", verdict: "" },
      { metric: "  objects started", workerd: starts(w), bare: "n/a", ratio: "", target: "", verdict: "" },
      { metric: "again at once (objects awake): all synced in, failures", workerd: text(w2), bare: text(b2), ratio: ratio(w2?.allSyncedMs, b2?.allSyncedMs), target: "", verdict: "" },
      { metric: "  per stream: synced p50 / p99; server CPU per stream", workerd: `${ms(w2?.timeToSynced.p50Ms)} / ${ms(w2?.timeToSynced.p99Ms)}; ${ms(w2?.serverCpuMsPerStream)}`, bare: `${ms(b2?.timeToSynced.p50Ms)} / ${ms(b2?.timeToSynced.p99Ms)}; ${ms(b2?.serverCpuMsPerStream)}`, ratio: ratio(w2?.timeToSynced.p99Ms, b2?.timeToSynced.p99Ms), target: "", verdict: "" },
    ];
  },

  notes({ workerd, bare }) {
    const notes: string[] = [];
    if (workerd) {
      notes.push(
        workerd.quietMs > 0
          ? `stream storm: ${workerd.accounts} accounts, each in one direct chat; the first storm came ${workerd.quietMs / 1000} s after setup (objects woken by setup evicted: each stream wakes its account, and the chats its resume asks), the second right after the first closed`
          : `stream storm: ${workerd.accounts} accounts, each in one direct chat; --quick has no quiet period, so the first storm may find objects woken by setup still awake`,
      );
    }
    for (const [name, f] of Object.entries({ workerd, bare })) {
      for (const r of f?.rounds ?? []) {
        if (r.failures > 0) notes.push(`stream storm (${r.label}) on ${name}: ${r.failures} failures: ${r.failureSamples.join("; ")}`);
        if (r.cpu.clientBound) notes.push(`stream storm (${r.label}) on ${name}: client-bound (${r.cpu.clientCores} cores)`);
      }
    }
    return notes;
  },
};
