/**
 * Group fan-out at stepped offered rates: one sender per chat sends open loop (or
 * several members in turn, see FanOutRoom) and
 * every member's socket must get every message once, in order. A step passes when
 * 100% arrived (within the drain timeout) with p99 <= 50 ms; the knee is the highest
 * passing rate (every lower rate passing too). Stepping goes on past latency-only
 * failures, to show throughput, and stops at the first step that loses or delays
 * deliveries beyond the drain timeout.
 *
 * Three shapes share this code: one chat of 100 members, one of 1,000, and 100
 * chats of 10 (the total rate spread evenly over the chats). The stepping takes any
 * member connection, so the device stream's group scenario runs it too
 * (device-streams.ts).
 */
import { Targets, type SteppedRates } from "../scenarios.ts";
import type { Target } from "../targets/target.ts";
import { closeAll, integrityOf, type CheckedSocket } from "../client.ts";
import { LatencyRecorder, type LatencySummary } from "../lib/latency.ts";
import { runOpenLoop, sleep, waitUntil } from "../lib/open-loop.ts";
import { round } from "../lib/process-stats.ts";
import { fmt, indexInPhase, micros, ms, openSockets, perSecond, PhaseMeter, ratio, serverCpuMicrosPer, serverCpuSeconds, settleAfterSetup, verdict, type CpuFigures, type FiguresByTarget, type RunContext, type Scenario, type TableRow } from "../lib/scenario.ts";

/** What the stepping needs of a member's connection: a chat socket or a device stream. */
export type MemberConnection = CheckedSocket & {
  /** Message events received. */
  messages: number;
  /** Replies to this connection's sends. */
  repliesOk: number;
  repliesFailed: number;
  onMessage?: ((seq: number, clientId: string, receivedAt: number, ...rest: never[]) => void) | undefined;
  close(): Promise<void>;
};

/**
 * One chat under load: every member's connection, and those that send, in turn (the
 * chat sockets' scenarios: one; `senders[k]` sends the room's messages k, k + n, ...).
 * `send(k, ...)` sends one message on `senders[k]`.
 */
export type FanOutRoom = {
  chatId: string;
  sockets: MemberConnection[];
  senders: MemberConnection[];
  send: (k: number, id: string, clientId: string, body: string) => void;
};

/** Which of the room's senders sends message `index` of a step (message i goes to room i mod rooms). */
const senderOf = (index: number, rooms: number, senders: number): number => Math.floor(index / rooms) % senders;

export type StepFigures = {
  offeredRate: number;
  sent: number;
  acked: number;
  ackFailures: number;
  /** Deliveries to members other than the sender (the sender's own copy is checked, not counted). */
  expectedDeliveries: number;
  deliveries: number;
  deliveriesPerSecond: number;
  latency: LatencySummary;
  gaps: number;
  duplicates: number;
  clientFellBehind: boolean;
  passed: boolean;
  cpu: CpuFigures;
  /** utime + stime of every server process over the step (sending and draining). */
  serverCpuSeconds: number;
  /** serverCpuSeconds per delivered copy (`deliveries`: the sender's own copy and ack are in the cost, not in the count), in µs. */
  serverCpuUsPerCopy: number;
};

/**
 * The rate at which the table shows server CPU per delivered copy, when that step
 * ran (otherwise the highest passing step). One fixed rate, because the cost per
 * copy falls as the rate rises: frames that wait are merged.
 */
export const CPU_REFERENCE_RATE = 100;

export type FanOutFigures = {
  chats: number;
  membersPerChat: number;
  setupSockets: number;
  steps: StepFigures[];
  /** Highest passing rate with every lower step passing too (0: none passed). */
  kneeRate: number;
  kneeDeliveriesPerSecond: number;
  /** Over the steps where every copy arrived. */
  maxDeliveriesPerSecond: number;
  /** The first failing step was client-bound: the knee may be the client's, not the server's. */
  failureClientBound: boolean;
  /** Server CPU per delivered copy for the table: at CPU_REFERENCE_RATE if that step ran, else at the highest passing step (every step has its own figure too). */
  serverCpuPerCopy: { atRate: number; step: "reference rate" | "highest passing step" | "first step"; usPerCopy: number } | null;
};

async function openRooms(target: Target, chats: number, membersPerChat: number, context: RunContext): Promise<FanOutRoom[]> {
  const users = await target.users(chats * membersPerChat);
  const chatIds: string[] = [];
  for (let c = 0; c < chats; c++) {
    const members = users.slice(c * membersPerChat, (c + 1) * membersPerChat);
    chatIds.push(await target.createGroup(members, `fan-out ${c}`));
  }
  const specs = chatIds.flatMap((chatId, c) => users.slice(c * membersPerChat, (c + 1) * membersPerChat).map((user) => ({ url: target.socketUrl(chatId), user })));
  const sockets = await openSockets(specs, 100);
  const rooms = chatIds.map((chatId, c) => {
    const members = sockets.slice(c * membersPerChat, (c + 1) * membersPerChat);
    const sender = members[0]!;
    return { chatId, sockets: members, senders: [sender], send: (_k: number, id: string, clientId: string, body: string) => sender.sendMessage(id, clientId, body) };
  });
  context.log(`    ${target.name}: ${sockets.length} sockets open in ${chats} chat(s)`);
  return rooms;
}

async function runStep(target: Target, rooms: FanOutRoom[], rate: number, stepping: SteppedRates, maxP99Ms: number, context: RunContext, phase: string): Promise<StepFigures> {
  const count = Math.max(1, Math.round(rate * stepping.stepSeconds));
  const tagDot = `${context.nextTag("f")}.`;
  const intendedAt = new Float64Array(count);
  const received = new Uint16Array(count);
  const receiversPerMessage = rooms[0]!.sockets.length; // every member's socket, the sender's included
  const latency = new LatencyRecorder();
  let deliveries = 0;
  let lastDeliveryAt = 0;
  const allSockets = rooms.flatMap((room) => room.sockets);
  for (const room of rooms) {
    for (const socket of room.sockets) {
      const slot = room.senders.indexOf(socket);
      socket.onMessage = (_seq, clientId, receivedAt) => {
        const index = indexInPhase(clientId, tagDot);
        if (index < 0 || index >= count) return; // a straggler from an earlier step
        received[index]!++;
        if (slot >= 0 && senderOf(index, rooms.length, room.senders.length) === slot) return; // the sender's own copy
        deliveries++;
        lastDeliveryAt = receivedAt;
        latency.recordMs(receivedAt - intendedAt[index]!);
      };
    }
  }
  const senders = rooms.flatMap((room) => room.senders);
  const repliesBefore = senders.reduce((sum, s) => sum + s.repliesOk, 0);
  const failuresBefore = senders.reduce((sum, s) => sum + s.repliesFailed, 0);
  const integrityBefore = integrityOf(allSockets);
  const meter = new PhaseMeter(target, context, `${phase}-${rooms.length}x${receiversPerMessage}-${rate}`);
  await meter.start();
  const loop = await runOpenLoop({
    count,
    ratePerSecond: rate,
    // Message i goes to chat i mod chats: each chat gets rate/chats, evenly spaced.
    send: (index, intended) => {
      intendedAt[index] = intended;
      const room = rooms[index % rooms.length]!;
      room.send(senderOf(index, rooms.length, room.senders.length), `${tagDot}${index}`, `${tagDot}${index}`, context.body);
    },
  });
  const expectedDeliveries = loop.sent * (receiversPerMessage - 1);
  const lastIntendedAt = loop.startedAt + (loop.sent - 1) * (1000 / rate);
  await waitUntil(() => deliveries >= expectedDeliveries, Math.max(0, lastIntendedAt + stepping.drainTimeoutMs - performance.now()), 5);
  const cpu = await meter.stop();
  const integrity = integrityOf(allSockets);
  const acked = senders.reduce((sum, s) => sum + s.repliesOk, 0) - repliesBefore;
  const ackFailures = senders.reduce((sum, s) => sum + s.repliesFailed, 0) - failuresBefore;
  let everyCopy = !loop.abandoned;
  for (let i = 0; i < loop.sent && everyCopy; i++) if (received[i] !== receiversPerMessage) everyCopy = false;
  const summary = latency.summary();
  const gaps = integrity.gaps - integrityBefore.gaps;
  const duplicates = integrity.duplicates - integrityBefore.duplicates;
  const seconds = (Math.max(lastDeliveryAt, lastIntendedAt) - loop.startedAt) / 1000;
  return {
    offeredRate: rate,
    sent: loop.sent,
    acked,
    ackFailures,
    expectedDeliveries,
    deliveries,
    deliveriesPerSecond: round(deliveries / Math.max(seconds, 0.001), 0),
    latency: summary,
    gaps,
    duplicates,
    clientFellBehind: loop.abandoned,
    passed: everyCopy && deliveries === expectedDeliveries && gaps === 0 && duplicates === 0 && ackFailures === 0 && summary.p99Ms <= maxP99Ms,
    cpu,
    serverCpuSeconds: round(serverCpuSeconds(cpu), 2),
    serverCpuUsPerCopy: serverCpuMicrosPer(cpu, deliveries),
  };
}

/**
 * Opens the rooms (`open`, setup), then steps through the rates; `phase` names the
 * measured phases (CPU profiles).
 */
export async function runStepped(target: Target, context: RunContext, open: () => Promise<FanOutRoom[]>, stepping: SteppedRates, maxP99Ms: number, phase = "fan-out"): Promise<FanOutFigures> {
  const rooms = await open();
  try {
    await settleAfterSetup(target, context);
    return await stepThrough(target, context, rooms, stepping, maxP99Ms, phase);
  } finally {
    await closeAll(rooms.flatMap((room) => room.sockets));
  }
}

/** Called around each step of `stepThrough` (outside its measured phase). */
export type StepHooks = {
  beforeStep?: (rate: number) => void;
  afterStep?: (step: StepFigures) => Promise<void> | void;
};

/**
 * The stepping on rooms already open and settled: a warm-up at the first rate, then
 * each rate in turn until deliveries fall behind; the knee is the highest passing rate
 * with every lower one passing. The rooms stay open (the caller closes them).
 */
export async function stepThrough(target: Target, context: RunContext, rooms: FanOutRoom[], stepping: SteppedRates, maxP99Ms: number, phase = "fan-out", hooks: StepHooks = {}): Promise<FanOutFigures> {
  const shape = { chats: rooms.length, membersPerChat: rooms[0]?.sockets.length ?? 0 };
  const steps: StepFigures[] = [];
  await warmUp(rooms, stepping, context);
  for (const rate of stepping.rates) {
    if (performance.now() > context.deadline) break;
    hooks.beforeStep?.(rate);
    const step = await runStep(target, rooms, rate, stepping, maxP99Ms, context, phase);
    steps.push(step);
    context.log(
      `    ${target.name} @ ${rate} msg/s: ${step.deliveries}/${step.expectedDeliveries} delivered, p99 ${step.latency.p99Ms} ms, ` +
        `${step.deliveriesPerSecond} deliveries/s, server CPU ${step.serverCpuUsPerCopy} µs per copy, client ${step.cpu.clientCores} cores, ${step.passed ? "pass" : "FAIL"}`,
    );
    await hooks.afterStep?.(step);
    // Past the knee, keep stepping while every copy still arrives (only latency
    // failed): those steps show the throughput. Stop once deliveries fall behind.
    if (!step.passed && step.deliveries < step.expectedDeliveries) break;
    if (!step.passed && step.clientFellBehind) break;
    await sleep(stepping.pauseMs);
  }
  const passing = steps.filter((s, i) => s.passed && steps.slice(0, i).every((earlier) => earlier.passed));
  const knee = passing.at(-1);
  const failure = steps.find((s) => !s.passed);
  const reference = steps.find((s) => s.offeredRate === CPU_REFERENCE_RATE);
  const cpuStep = reference ?? knee ?? steps[0];
  return {
    chats: shape.chats,
    membersPerChat: shape.membersPerChat,
    setupSockets: shape.chats * shape.membersPerChat,
    steps,
    kneeRate: knee?.offeredRate ?? 0,
    kneeDeliveriesPerSecond: knee?.deliveriesPerSecond ?? 0,
    maxDeliveriesPerSecond: Math.max(0, ...steps.filter((s) => s.deliveries === s.expectedDeliveries).map((s) => s.deliveriesPerSecond)),
    failureClientBound: failure?.cpu.clientBound ?? false,
    serverCpuPerCopy: cpuStep
      ? { atRate: cpuStep.offeredRate, step: cpuStep === reference ? "reference rate" : cpuStep === knee ? "highest passing step" : "first step", usPerCopy: cpuStep.serverCpuUsPerCopy }
      : null,
  };
}

/** One message per chat, delivered everywhere, before the first step: wakes hibernated objects. */
/**
 * Messages at the first rate before the first step, not measured: the first frames
 * through a chat run cold code (V8 optimizes the send and broadcast paths after a
 * few hundred calls), which would otherwise land in the first step's p99.
 */
async function warmUp(rooms: FanOutRoom[], stepping: SteppedRates, context: RunContext): Promise<void> {
  const tag = context.nextTag("fw");
  const before = rooms.map((room) => room.sockets.map((socket) => socket.messages));
  const count = Math.max(1, stepping.warmupMessages);
  for (let i = 0; i < count; i++) {
    const room = rooms[i % rooms.length]!;
    room.send(senderOf(i, rooms.length, room.senders.length), `${tag}.${i}`, `${tag}.${i}`, context.body);
    await sleep(1000 / stepping.rates[0]!);
  }
  // Every socket has every warm-up message of its chat.
  const perRoom = rooms.map((_, c) => Math.floor(count / rooms.length) + (c < count % rooms.length ? 1 : 0));
  await waitUntil(() => rooms.every((room, c) => room.sockets.every((socket, s) => socket.messages >= before[c]![s]! + perRoom[c]!)), 10_000);
  await sleep(200);
}

export function steppedRows(figures: FiguresByTarget<FanOutFigures>, kneeTarget: number, rates: number[]): TableRow[] {
  const { workerd, bare } = figures;
  const kneeText = (f?: FanOutFigures) => {
    if (!f) return "-";
    const top = f.steps.length > 0 && f.steps.every((s) => s.passed) && f.steps.length === rates.length;
    return `${fmt(f.kneeRate)} msg/s${top ? " (all steps passed)" : ""}${f.failureClientBound ? " (client-bound)" : ""}`;
  };
  const rows: TableRow[] = [
    { metric: "knee (100% delivered, p99 <= 50 ms)", workerd: kneeText(workerd), bare: kneeText(bare), ratio: ratio(workerd?.kneeRate, bare?.kneeRate), target: `>= ${kneeTarget} msg/s`, verdict: verdict(workerd && workerd.kneeRate >= kneeTarget) },
    { metric: "deliveries/s at the knee", workerd: perSecond(workerd?.kneeDeliveriesPerSecond), bare: perSecond(bare?.kneeDeliveriesPerSecond), ratio: ratio(workerd?.kneeDeliveriesPerSecond, bare?.kneeDeliveriesPerSecond), target: "", verdict: "" },
    { metric: "deliveries/s, best step with every copy delivered", workerd: perSecond(workerd?.maxDeliveriesPerSecond), bare: perSecond(bare?.maxDeliveriesPerSecond), ratio: ratio(workerd?.maxDeliveriesPerSecond, bare?.maxDeliveriesPerSecond), target: "", verdict: "" },
    cpuPerCopyRow(workerd, bare),
  ];
  const stepText = (step?: StepFigures) =>
    step ? `p99 ${ms(step.latency.p99Ms)}, ${step.deliveries === step.expectedDeliveries ? "100%" : `${fmt(round((100 * step.deliveries) / Math.max(1, step.expectedDeliveries), 1))}%`}${step.passed ? "" : " FAIL"}` : "-";
  for (const rate of rates) {
    const w = workerd?.steps.find((s) => s.offeredRate === rate);
    const b = bare?.steps.find((s) => s.offeredRate === rate);
    if (!w && !b) continue;
    rows.push({ metric: `  @ ${fmt(rate)} msg/s`, workerd: stepText(w), bare: stepText(b), ratio: ratio(w?.latency.p99Ms, b?.latency.p99Ms), target: "", verdict: "" });
  }
  return rows;
}

/**
 * Server CPU per delivered copy, both targets at the same step so the ratio means
 * something: CPU_REFERENCE_RATE when it ran, else the highest step both passed, else
 * the first step both ran. The metric names the step.
 */
function cpuPerCopyRow(workerd: FanOutFigures | undefined, bare: FanOutFigures | undefined): TableRow {
  const at = (f: FanOutFigures | undefined, rate: number) => f?.steps.find((s) => s.offeredRate === rate);
  const ranByBoth = (workerd?.steps ?? bare?.steps ?? []).map((s) => s.offeredRate).filter((rate) => (!workerd || at(workerd, rate)) && (!bare || at(bare, rate)));
  const passedByBoth = ranByBoth.filter((rate) => (!workerd || at(workerd, rate)!.passed) && (!bare || at(bare, rate)!.passed));
  let rate: number | undefined;
  let which = "";
  if (at(workerd, CPU_REFERENCE_RATE) || at(bare, CPU_REFERENCE_RATE)) {
    rate = CPU_REFERENCE_RATE;
  } else if (passedByBoth.length > 0) {
    rate = passedByBoth.at(-1)!;
    which = ` (highest step both targets passed; no ${CPU_REFERENCE_RATE} msg/s step)`;
  } else {
    rate = ranByBoth[0];
    which = ` (first step: none passed on both targets; no ${CPU_REFERENCE_RATE} msg/s step)`;
  }
  const w = rate === undefined ? undefined : at(workerd, rate)?.serverCpuUsPerCopy;
  const b = rate === undefined ? undefined : at(bare, rate)?.serverCpuUsPerCopy;
  return {
    metric: `server CPU per delivered copy${rate === undefined ? "" : ` @ ${fmt(rate)} msg/s${which}`}`,
    workerd: micros(w),
    bare: micros(b),
    ratio: ratio(w, b),
    target: "",
    verdict: "",
  };
}

export function steppedNotes(label: string, figures: FiguresByTarget<FanOutFigures>): string[] {
  const notes: string[] = [];
  for (const [name, f] of Object.entries(figures)) {
    if (!f) continue;
    if (f.failureClientBound) notes.push(`${label} on ${name}: the first failing step was client-bound (client CPU >= 0.9 cores): the knee is at least the client's limit, not necessarily the server's`);
    const bound = f.steps.filter((s) => s.cpu.clientBound).map((s) => s.offeredRate);
    if (bound.length > 0 && !f.failureClientBound) notes.push(`${label} on ${name}: client-bound at ${bound.join(", ")} msg/s`);
    const behind = f.steps.filter((s) => s.clientFellBehind).map((s) => s.offeredRate);
    if (behind.length > 0) notes.push(`${label} on ${name}: the client fell > 5 s behind its schedule at ${behind.join(", ")} msg/s and stopped sending`);
  }
  return notes;
}

/** One chat with `members` sockets, at stepped rates: the 100- and 1,000-member scenarios. */
function singleChatFanOut(name: "fanOut100" | "fanOut1000", title: string, label: string): Scenario<FanOutFigures> {
  return {
    name,
    title,
    targets: ["workerd", "bare"],
    run(target, context) {
      const p = context.params[name];
      return runStepped(target, context, () => openRooms(target, 1, p.members, context), p, Targets[name].p99Ms);
    },
    rows(figures, context) {
      const p = context.params[name];
      return [{ metric: `members`, workerd: String(p.members), bare: String(p.members), ratio: "", target: "", verdict: "" }, ...steppedRows(figures, Targets[name].kneeRate, p.rates)];
    },
    notes: (figures) => steppedNotes(label, figures),
  };
}

export const fanOut100 = singleChatFanOut("fanOut100", "fan-out, 100 members", "fan-out 100");
export const fanOut1000 = singleChatFanOut("fanOut1000", "fan-out, 1,000 members", "fan-out 1,000");

export const manyChats: Scenario<FanOutFigures> = {
  name: "manyChats",
  title: "100 chats x 10 members",
  targets: ["workerd", "bare"],
  run(target, context) {
    const p = context.params.manyChats;
    return runStepped(target, context, () => openRooms(target, p.chats, p.membersPerChat, context), p, Targets.manyChats.p99Ms);
  },
  rows(figures, context) {
    const p = context.params.manyChats;
    const shape = `${p.chats} x ${p.membersPerChat}`;
    return [{ metric: "chats x members (rates are totals)", workerd: shape, bare: shape, ratio: "", target: "", verdict: "" }, ...steppedRows(figures, Targets.manyChats.kneeRate, p.rates)];
  },
  notes: (figures) => steppedNotes("100 chats x 10", figures),
};
