/**
 * Message receipts (DELIVERED / SEEN as per-member watermarks, src/protocol/receipts.ts).
 *
 * - receiptLatency: a direct chat of two new accounts, closed loop, one cycle in
 *   flight: A sends, B gets the message and sends `read {seq}` at once, A gets the
 *   `receipts` frame with `seenUpTo >= seq`. The figure is from B's `read` to A's
 *   frame. On chat sockets, then on device streams (paced under the stream's frame
 *   limit). Server CPU per receipt is the difference between the cycles with the read
 *   and as many cycles of the same pair without it (send, ack, delivery only).
 * - groupReceipts: one group on chat sockets, stepped like fanOut100 (fan-out.ts) twice
 *   on the same sockets: without receipts, then with every member reporting
 *   `delivered` and `read` for what it receives, coalesced to one report of each per
 *   250 ms per device (ReceiptReporter, as the SDK). The knees side by side, how long
 *   the sender waits for SEEN by everyone, and whether the last message ends SEEN.
 */
import { Targets } from "../scenarios.ts";
import type { Target } from "../targets/target.ts";
import { Limits, MessageStatus } from "../../src/client/index.ts";
import { closeAll, integrityOf, ReceiptReporter, type ChatSocket, type CheckedSocket } from "../client.ts";
import { openStreams, type StreamSocket } from "../stream-client.ts";
import { LatencyRecorder, type LatencySummary } from "../lib/latency.ts";
import { sleep, waitUntil } from "../lib/open-loop.ts";
import { round } from "../lib/process-stats.ts";
import { fmt, micros, ms, openSockets, PhaseMeter, ratio, serverCpuMicrosPer, serverCpuSeconds, settleAfterSetup, verdict, type CpuFigures, type RunContext, type Scenario, type TableRow } from "../lib/scenario.ts";
import { stepThrough, steppedNotes, steppedRows, type FanOutFigures, type FanOutRoom, type StepFigures } from "./fan-out.ts";

// ---------------------------------------------------------------------------
// receiptLatency

/** The two sides of a direct chat, over chat sockets or device streams. */
type ReceiptPair = {
  /** A sends the message with this clientId. */
  send(clientId: string): void;
  /** B marks the chat read up to seq. */
  read(seq: number): void;
  /** B got message `clientId` at seq. */
  onDelivered(handler: (clientId: string, seq: number, at: number) => void): void;
  /** A's send was answered. */
  onAck(handler: (id: string, ok: boolean, at: number) => void): void;
  /** A was told its messages are SEEN up to seenUpTo. */
  onSeen(handler: (seenUpTo: number, at: number) => void): void;
  /** B's read was refused (code). */
  onReadRefused(handler: (code: string) => void): void;
  /** Each cycle starts at least this long after the previous one (a device stream's frame budget). */
  minCycleMs: number;
  receivers: CheckedSocket[];
  close(): Promise<void>;
};

export type ReceiptLoopFigures = {
  cycles: number;
  /** The seq of the last message of the phase: how many events the chat held (a receipt's cost may grow with it). */
  lastSeq: number;
  /** From B sending `read` to A getting `receipts` with seenUpTo >= seq: the figure the target is about. */
  readToReceipts: LatencySummary;
  /** From A's send to A knowing the message SEEN (send, store, ack, delivery, read, receipts). */
  sendToSeen: LatencySummary;
  stalled: boolean;
  stalledOn: string;
  gaps: number;
  duplicates: number;
  cpu: CpuFigures;
  serverCpuSeconds: number;
  serverCpuUsPerCycle: number;
};

export type ReceiptVariantFigures = {
  withRead: ReceiptLoopFigures;
  /** The same pair, the same number of cycles, no read: send -> ack + delivery. */
  messagesOnly: ReceiptLoopFigures;
  /** withRead's CPU per cycle minus messagesOnly's: what one read and its receipts cost the server (µs). */
  serverCpuUsPerReceipt: number;
};

export type ReceiptLatencyFigures = { socket: ReceiptVariantFigures; stream: ReceiptVariantFigures | null; streamError?: string };

async function socketPair(target: Target, body: string): Promise<ReceiptPair> {
  const [alice, bob] = await target.freshUsers(2);
  const chatId = await target.createDirect(alice!, bob!);
  const [a, b] = (await openSockets([
    { url: target.socketUrl(chatId), user: alice! },
    { url: target.socketUrl(chatId), user: bob! },
  ])) as [ChatSocket, ChatSocket];
  let refused: (code: string) => void = () => {};
  return {
    send: (clientId) => a.sendMessage(clientId, clientId, body),
    read: (seq) => {
      void b.request({ type: "read", seq }).then((reply) => {
        if (!reply || !reply.ok) refused(reply ? reply.error.code : "no reply");
      });
    },
    onDelivered: (handler) => (b.onMessage = (seq, clientId, at) => handler(clientId, seq, at)),
    onAck: (handler) => (a.onReply = (reply, at) => handler(reply.id, reply.ok, at)),
    onSeen: (handler) => (a.onReceipts = (frame, at) => handler(frame.seenUpTo, at)),
    onReadRefused: (handler) => (refused = handler),
    // Reads are frames the chat socket's per-device budget counts, as on the stream.
    minCycleMs: 1000 / CYCLES_PER_SECOND,
    receivers: [b],
    close: () => closeAll([a, b]),
  };
}

/** A device sends at most this many frames per second here, under the stream's limit (each cycle is one frame from each device). */
const CYCLES_PER_SECOND = Math.floor(0.8 * Limits.streamFramesPerSecond);

async function streamPair(target: Target, body: string): Promise<ReceiptPair> {
  const [alice, bob] = await target.freshUsers(2);
  const chatId = await target.createDirect(alice!, bob!);
  const [a, b] = (await openStreams([
    { url: target.streamUrl(), user: alice! },
    { url: target.streamUrl(), user: bob! },
  ])) as [StreamSocket, StreamSocket];
  if (!(await waitUntil(() => a.expected.has(chatId) && b.expected.has(chatId), 15_000, 20))) {
    await closeAll([a, b]);
    throw new Error("the streams never got their direct chat");
  }
  let reads = 0;
  let refused: (code: string) => void = () => {};
  return {
    send: (clientId) => a.sendMessage(chatId, clientId, clientId, body),
    read: (seq) => b.sendRead(chatId, `read-${++reads}`, seq),
    onDelivered: (handler) => (b.onMessage = (seq, clientId, at, _socket, fromChat) => fromChat === chatId && handler(clientId, seq, at)),
    onAck: (handler) => (a.onReply = (reply, at) => handler(reply.id, reply.ok, at)),
    onSeen: (handler) => (a.onReceipts = (frame, at) => frame.chatId === chatId && handler(frame.seenUpTo, at)),
    onReadRefused: (handler) => {
      refused = handler;
      b.onReply = (reply) => {
        if (!reply.ok) refused(reply.error.code);
      };
    },
    minCycleMs: 1000 / CYCLES_PER_SECOND,
    receivers: [b],
    close: () => closeAll([a, b]),
  };
}

/**
 * `count` cycles, one in flight: A sends; with `withRead`, B reads the message as soon
 * as it arrives and the cycle ends when A is told it is SEEN (and its send acked);
 * without, it ends at the ack and the delivery.
 */
async function receiptCycles(target: Target, context: RunContext, pair: ReceiptPair, count: number, withRead: boolean, phase: string): Promise<ReceiptLoopFigures> {
  const timeoutMs = context.params.receiptLatency.timeoutMs;
  const tagDot = `${context.nextTag(withRead ? "rr" : "rm")}.`;
  const readToReceipts = new LatencyRecorder();
  const sendToSeen = new LatencyRecorder();
  const integrityBefore = integrityOf(pair.receivers);
  let index = -1;
  let sentAt = 0;
  let readAt = 0;
  let seq = 0;
  let acked = false;
  let delivered = false;
  let seen = false;
  let refused = "";
  let lastSeen = 0;
  let finished = false;
  let resolveDone!: () => void;
  const done = new Promise<void>((resolve) => (resolveDone = resolve));
  let lastStartAt = -Infinity;
  let lastProgressAt = performance.now();
  const start = (): void => {
    lastStartAt = sentAt = performance.now();
    pair.send(`${tagDot}${index}`);
  };
  const next = (): void => {
    if (index + 1 >= count) {
      finished = true;
      resolveDone();
      return;
    }
    index++;
    lastProgressAt = performance.now();
    acked = delivered = seen = false;
    const waitMs = lastStartAt + pair.minCycleMs - performance.now();
    if (waitMs > 0) setTimeout(start, waitMs);
    else start();
  };
  const settle = (at: number): void => {
    if (finished || !acked || !delivered || (withRead && !seen)) return;
    if (withRead) sendToSeen.recordMs(at - sentAt);
    next();
  };
  pair.onAck((id, ok, at) => {
    if (id !== `${tagDot}${index}`) return;
    acked = ok;
    if (!ok) refused = "send refused";
    settle(at);
  });
  pair.onDelivered((clientId, messageSeq, at) => {
    if (clientId !== `${tagDot}${index}` || delivered) return;
    delivered = true;
    seq = messageSeq;
    if (withRead) {
      readAt = performance.now();
      pair.read(seq);
    }
    settle(at);
  });
  pair.onSeen((seenUpTo, at) => {
    if (seenUpTo > lastSeen) lastSeen = seenUpTo;
    if (!withRead || !delivered || seen || seenUpTo < seq) return;
    seen = true;
    readToReceipts.recordMs(at - readAt);
    settle(at);
  });
  pair.onReadRefused((code) => (refused = `read refused (${code})`));
  const meter = new PhaseMeter(target, context, phase);
  await meter.start();
  next();
  // One cycle that never completes (a lost frame) stalls the loop: bound the wait.
  let stalled = false;
  while (!finished) {
    await Promise.race([done, sleep(Math.min(100, timeoutMs))]);
    if (!finished && performance.now() - lastProgressAt > timeoutMs) {
      stalled = true;
      finished = true;
    }
  }
  const cpu = await meter.stop();
  const integrity = integrityOf(pair.receivers);
  const cycles = withRead ? readToReceipts.count : stalled ? index : index + 1;
  const stalledOn = stalled
    ? `cycle ${index}: ${acked ? "acked" : "no ack"}, ${delivered ? `delivered (seq ${seq})` : "not delivered"}${withRead ? `, ${seen ? "seen" : `not seen (latest seenUpTo ${lastSeen})`}` : ""}${refused ? `, ${refused}` : ""}`
    : "";
  return {
    cycles,
    lastSeq: seq,
    readToReceipts: readToReceipts.summary(),
    sendToSeen: sendToSeen.summary(),
    stalled,
    stalledOn,
    gaps: integrity.gaps - integrityBefore.gaps,
    duplicates: integrity.duplicates - integrityBefore.duplicates,
    cpu,
    serverCpuSeconds: round(serverCpuSeconds(cpu), 2),
    serverCpuUsPerCycle: serverCpuMicrosPer(cpu, cycles),
  };
}

async function receiptVariant(target: Target, context: RunContext, pair: ReceiptPair, samples: number, label: string): Promise<ReceiptVariantFigures> {
  const p = context.params.receiptLatency;
  try {
    await settleAfterSetup(target, context);
    await receiptCycles(target, context, pair, p.warmupSamples, true, `${label}-warmup`); // wake, JIT
    await sleep(200);
    const messagesOnly = await receiptCycles(target, context, pair, samples, false, `${label}-messages-only`);
    await sleep(200);
    const withRead = await receiptCycles(target, context, pair, samples, true, label);
    const serverCpuUsPerReceipt = round(withRead.serverCpuUsPerCycle - messagesOnly.serverCpuUsPerCycle, 1);
    context.log(
      `    ${target.name} ${label}: read -> receipts p50 ${withRead.readToReceipts.p50Ms} ms, p99 ${withRead.readToReceipts.p99Ms} ms over ${withRead.cycles}; ` +
        `server CPU ${withRead.serverCpuUsPerCycle} µs per cycle with the read, ${messagesOnly.serverCpuUsPerCycle} without: ${serverCpuUsPerReceipt} µs per receipt`,
    );
    return { withRead, messagesOnly, serverCpuUsPerReceipt };
  } finally {
    await pair.close();
  }
}

export const receiptLatency: Scenario<ReceiptLatencyFigures> = {
  name: "receiptLatency",
  title: "receipts: 1:1 read -> sender",
  targets: ["workerd", "bare"],

  async run(target, context) {
    const p = context.params.receiptLatency;
    const socket = await receiptVariant(target, context, await socketPair(target, context.body), p.samples, "receipt-socket");
    if (p.streamSamples <= 0) return { socket, stream: null };
    try {
      return { socket, stream: await receiptVariant(target, context, await streamPair(target, context.body), p.streamSamples, "receipt-stream") };
    } catch (error) {
      return { socket, stream: null, streamError: error instanceof Error ? error.message : String(error) };
    }
  },

  rows({ workerd, bare }) {
    const t = Targets.receiptLatency;
    const rows: TableRow[] = [];
    const complete = (f?: ReceiptLoopFigures) => f && !f.stalled && f.gaps === 0 && f.duplicates === 0;
    for (const [variant, label] of [
      ["socket", "chat sockets"],
      ["stream", "device streams"],
    ] as const) {
      const w = workerd?.[variant] ?? undefined;
      const b = bare?.[variant] ?? undefined;
      if (!w && !b) continue;
      const main = variant === "socket";
      rows.push(
        {
          metric: `${label}: B's read -> A's receipts (seenUpTo >= seq), p50 (${fmt(w?.withRead.cycles ?? b?.withRead.cycles ?? 0)} cycles)`,
          workerd: ms(w?.withRead.readToReceipts.p50Ms),
          bare: ms(b?.withRead.readToReceipts.p50Ms),
          ratio: ratio(w?.withRead.readToReceipts.p50Ms, b?.withRead.readToReceipts.p50Ms),
          target: main ? `< ${t.p50Ms} ms` : "",
          verdict: main ? verdict(w && complete(w.withRead) && w.withRead.readToReceipts.p50Ms < t.p50Ms) : "",
        },
        { metric: "  p99", workerd: ms(w?.withRead.readToReceipts.p99Ms), bare: ms(b?.withRead.readToReceipts.p99Ms), ratio: ratio(w?.withRead.readToReceipts.p99Ms, b?.withRead.readToReceipts.p99Ms), target: "", verdict: "" },
        {
          metric: "  A's send -> A knows SEEN, p50 / p99",
          workerd: `${ms(w?.withRead.sendToSeen.p50Ms)} / ${ms(w?.withRead.sendToSeen.p99Ms)}`,
          bare: `${ms(b?.withRead.sendToSeen.p50Ms)} / ${ms(b?.withRead.sendToSeen.p99Ms)}`,
          ratio: ratio(w?.withRead.sendToSeen.p50Ms, b?.withRead.sendToSeen.p50Ms),
          target: "",
          verdict: "",
        },
        {
          metric: "  server CPU per cycle, with the read / message only",
          workerd: `${micros(w?.withRead.serverCpuUsPerCycle)} / ${micros(w?.messagesOnly.serverCpuUsPerCycle)}`,
          bare: `${micros(b?.withRead.serverCpuUsPerCycle)} / ${micros(b?.messagesOnly.serverCpuUsPerCycle)}`,
          ratio: ratio(w?.withRead.serverCpuUsPerCycle, b?.withRead.serverCpuUsPerCycle),
          target: "",
          verdict: "",
        },
        { metric: "  server CPU per receipt (the difference)", workerd: micros(w?.serverCpuUsPerReceipt), bare: micros(b?.serverCpuUsPerReceipt), ratio: ratio(w?.serverCpuUsPerReceipt, b?.serverCpuUsPerReceipt), target: "", verdict: "" },
      );
    }
    return rows;
  },

  notes({ workerd, bare }) {
    const notes: string[] = [];
    for (const [name, f] of Object.entries({ workerd, bare })) {
      if (f?.streamError) notes.push(`receipt latency on ${name}: the device stream variant failed: ${f.streamError}`);
      for (const [variant, v] of [
        ["chat sockets", f?.socket],
        ["device streams", f?.stream],
      ] as const) {
        if (!v) continue;
        for (const loop of [v.withRead, v.messagesOnly]) {
          if (loop.stalled) notes.push(`receipt latency on ${name} (${variant}): a cycle did not complete (${loop.stalledOn}): the loop stalled`);
          if (loop.gaps || loop.duplicates) notes.push(`receipt latency on ${name} (${variant}): gaps ${loop.gaps}, duplicates ${loop.duplicates}`);
          if (loop.cpu.clientBound) notes.push(`receipt latency on ${name} (${variant}): client-bound (${loop.cpu.clientCores} cores)`);
        }
        notes.push(`receipt latency on ${name} (${variant}): the chat held ${v.withRead.lastSeq} events at the end; A never reads, so its own watermarks stay at the chat's start`);
        if (v.withRead.serverCpuSeconds < 1) notes.push(`receipt latency on ${name} (${variant}): ${v.withRead.serverCpuSeconds} s of server CPU in the phase: the CPU per receipt is good to a few 10 ms ticks only`);
      }
    }
    if (workerd?.stream) notes.push(`receipt latency: cycles paced at ${CYCLES_PER_SECOND}/s (each device sends one read a cycle, under the ${Limits.streamFramesPerSecond} frames/s a device may send other than messages)`);
    return notes;
  },
};

// ---------------------------------------------------------------------------
// groupReceipts

/** What the receipts-on stepping adds per step. */
export type ReceiptStepFigures = {
  offeredRate: number;
  /** `receipts` frames the sender got during the step (and its drain). */
  receiptFrames: number;
  /** `delivered` + `read` frames the members sent, and how many of them were refused. */
  reportFrames: number;
  reportsRefused: number;
  /** From the sender's ack of a message to its `receipts` frame saying SEEN by every member (the 250 ms coalescing included). */
  ackToSeen: LatencySummary;
  /** Messages of the step still not SEEN when the next began (or 3 s after the step). */
  notSeen: number;
};

export type GroupReceiptsFigures = {
  members: number;
  withoutReceipts: FanOutFigures;
  withReceipts: FanOutFigures;
  receiptSteps: ReceiptStepFigures[];
  /** After the last step: the sender's `receipts` said its last message SEEN (ms after the stepping ended; NaN: not within the timeout). */
  lastMessageSeq: number;
  lastSeenAfterMs: number;
  /** `status` of the last message, asked on the sender's socket. */
  lastStatus: { status: string; recipients: number; delivered: number; seen: number } | null;
  lastStatusError?: string;
};

export const groupReceipts: Scenario<GroupReceiptsFigures> = {
  name: "groupReceipts",
  title: "receipts: group, 100 members",
  targets: ["workerd", "bare"],

  async run(target, context) {
    const p = context.params.groupReceipts;
    const users = await target.users(p.members);
    const chatId = await target.createGroup(users, "receipts group");
    const sockets = await openSockets(users.map((user) => ({ url: target.socketUrl(chatId), user })));
    const reporters = sockets.map((socket) => new ReceiptReporter(socket, { intervalMs: p.reportIntervalMs, enabled: false }));
    const sender = sockets[0]!;
    const rooms: FanOutRoom[] = [{ chatId, sockets, senders: [sender], send: (_k, id, clientId, body) => sender.sendMessage(id, clientId, body) }];
    context.log(`    ${target.name}: ${sockets.length} sockets open in the group`);
    try {
      await settleAfterSetup(target, context);
      const withoutReceipts = await stepThrough(target, context, rooms, p, Targets.groupReceipts.p99Ms, "group-receipts-off");
      await sleep(p.pauseMs);
      for (const reporter of reporters) reporter.enable();
      // Every member has reported what it got so far before the stepping with receipts.
      await waitUntil(() => reporters.every((reporter, i) => reporter.reportedSeq >= sockets[i]!.lastSeq), 5_000, 20);
      await sleep(2 * p.reportIntervalMs);

      // The sender's acks (seq, time) wait for a receipts frame that says SEEN.
      const receiptSteps: ReceiptStepFigures[] = [];
      let pending: { seq: number; at: number }[] = [];
      let recorder: LatencyRecorder | null = null;
      let framesBefore = 0;
      let reportsBefore = 0;
      let refusedBefore = 0;
      const reportFrames = () => sockets.reduce((sum, s) => sum + s.receiptRepliesOk + s.receiptRepliesFailed, 0);
      const refusedReports = () => sockets.reduce((sum, s) => sum + s.receiptRepliesFailed, 0);
      sender.onReply = (reply, at) => {
        if (!recorder || !reply.ok) return;
        const seq = (reply.result as { seq?: unknown }).seq;
        if (typeof seq === "number") pending.push({ seq, at });
      };
      sender.onReceipts = (frame, at) => {
        if (!recorder) return;
        let covered = 0;
        while (covered < pending.length && pending[covered]!.seq <= frame.seenUpTo) recorder.recordMs(at - pending[covered++]!.at);
        if (covered > 0) pending = pending.slice(covered);
      };
      const withReceipts = await stepThrough(target, context, rooms, p, Targets.groupReceipts.p99Ms, "group-receipts-on", {
        beforeStep: () => {
          recorder = new LatencyRecorder();
          pending = [];
          framesBefore = sender.receiptFrames;
          reportsBefore = reportFrames();
          refusedBefore = refusedReports();
        },
        afterStep: async (step: StepFigures) => {
          // The step's last messages are SEEN a report interval or two after their delivery.
          await waitUntil(() => pending.length === 0, 3_000, 10);
          const figures: ReceiptStepFigures = {
            offeredRate: step.offeredRate,
            receiptFrames: sender.receiptFrames - framesBefore,
            reportFrames: reportFrames() - reportsBefore,
            reportsRefused: refusedReports() - refusedBefore,
            ackToSeen: recorder!.summary(),
            notSeen: pending.length,
          };
          receiptSteps.push(figures);
          recorder = null;
          context.log(
            `      receipts: ${figures.receiptFrames} frames to the sender, ${figures.reportFrames} reports from members (${figures.reportsRefused} refused), ` +
              `ack -> SEEN by all p50 ${figures.ackToSeen.p50Ms} ms, p99 ${figures.ackToSeen.p99Ms} ms, ${figures.notSeen} not SEEN`,
          );
        },
      });

      // Correctness: the last message ends SEEN, live and when asked.
      const endedAt = performance.now();
      const lastMessageSeq = sender.lastSeq;
      const seenInTime = await waitUntil(() => sender.seenUpTo >= lastMessageSeq, p.finalSeenTimeoutMs, 10);
      const lastSeenAfterMs = seenInTime ? round(performance.now() - endedAt, 1) : Number.NaN;
      const reply = await sender.request({ type: "status", seq: lastMessageSeq });
      let lastStatus: GroupReceiptsFigures["lastStatus"] = null;
      let lastStatusError: string | undefined;
      if (!reply) lastStatusError = "no reply to status";
      else if (!reply.ok) lastStatusError = `status refused: ${reply.error.code} ${reply.error.message}`;
      else {
        const parsed = MessageStatus.safeParse(reply.result);
        if (parsed.success) lastStatus = { status: parsed.data.status, recipients: parsed.data.recipients, delivered: parsed.data.delivered, seen: parsed.data.seen };
        else lastStatusError = `invalid status: ${parsed.error.message}`;
      }
      context.log(`    ${target.name}: last message (seq ${lastMessageSeq}) ${seenInTime ? `SEEN by all ${lastSeenAfterMs} ms after the stepping` : "not SEEN in time"}; status ${lastStatus ? JSON.stringify(lastStatus) : lastStatusError}`);
      return { members: p.members, withoutReceipts, withReceipts, receiptSteps, lastMessageSeq, lastSeenAfterMs, lastStatus, ...(lastStatusError ? { lastStatusError } : {}) };
    } finally {
      await closeAll(sockets);
    }
  },

  rows(figures, context) {
    const p = context.params.groupReceipts;
    const { workerd, bare } = figures;
    const off = steppedRows({ workerd: workerd?.withoutReceipts, bare: bare?.withoutReceipts }, Targets.groupReceipts.kneeRate, p.rates);
    const on = steppedRows({ workerd: workerd?.withReceipts, bare: bare?.withReceipts }, Targets.groupReceipts.kneeRate, p.rates);
    const receiptStep = (f: GroupReceiptsFigures | undefined, rate: number) => f?.receiptSteps.find((s) => s.offeredRate === rate);
    const stepText = (s?: ReceiptStepFigures) => (s ? `${ms(s.ackToSeen.p50Ms)} / ${ms(s.ackToSeen.p99Ms)}${s.notSeen ? ` (${fmt(s.notSeen)} not SEEN)` : ""}, ${fmt(s.receiptFrames)} frames` : "-");
    const lastText = (f?: GroupReceiptsFigures) =>
      f ? `${Number.isFinite(f.lastSeenAfterMs) ? `SEEN ${ms(f.lastSeenAfterMs)} after` : "not SEEN"}; status ${f.lastStatus ? `${f.lastStatus.status} (${f.lastStatus.seen}/${f.lastStatus.recipients})` : (f.lastStatusError ?? "-")}` : "-";
    const lastOk = (f?: GroupReceiptsFigures) => f && Number.isFinite(f.lastSeenAfterMs) && f.lastStatus?.status === "seen" && f.lastStatus.seen === f.members - 1;
    const rows: TableRow[] = [
      { metric: "members, each on a chat socket", workerd: String(p.members), bare: String(p.members), ratio: "", target: "", verdict: "" },
      // Without receipts: fanOut100's stepping, measured here in the same run (no verdict: fanOut100 has it).
      ...off.slice(0, 4).map((row) => ({ ...row, metric: `no receipts: ${row.metric}`, target: "", verdict: "" as const })),
      ...on.slice(0, 4).map((row) => ({ ...row, metric: `receipts on: ${row.metric}` })),
    ];
    // Per rate: the step without receipts, with them, and how long the sender waited for SEEN.
    const rateOf = (row: TableRow) => Number(row.metric.replace(/[^\d]/g, ""));
    for (const rate of p.rates) {
      const without = off.slice(4).find((row) => rateOf(row) === rate);
      const withOn = on.slice(4).find((row) => rateOf(row) === rate);
      if (!without && !withOn) continue;
      if (without) rows.push({ ...without, metric: `  @ ${fmt(rate)} msg/s, no receipts` });
      if (withOn) {
        rows.push({ ...withOn, metric: `  @ ${fmt(rate)} msg/s, receipts on` });
        rows.push({ metric: "    ack -> SEEN by all p50 / p99, receipts frames", workerd: stepText(receiptStep(workerd, rate)), bare: stepText(receiptStep(bare, rate)), ratio: "", target: "", verdict: "" });
      }
    }
    rows.push({ metric: "last message SEEN by all (live frame; status)", workerd: lastText(workerd), bare: lastText(bare), ratio: "", target: "seen", verdict: verdict(workerd && lastOk(workerd)) });
    return rows;
  },

  notes(figures) {
    const notes = [
      ...steppedNotes("group receipts (no receipts)", { workerd: figures.workerd?.withoutReceipts, bare: figures.bare?.withoutReceipts }),
      ...steppedNotes("group receipts (receipts on)", { workerd: figures.workerd?.withReceipts, bare: figures.bare?.withReceipts }),
    ];
    for (const [name, f] of Object.entries(figures)) {
      const refused = f?.receiptSteps.reduce((sum, s) => sum + s.reportsRefused, 0) ?? 0;
      if (refused > 0) notes.push(`group receipts on ${name}: ${refused} delivered/read reports were refused`);
    }
    return notes;
  },
};
