/**
 * Sockets in bulk. Connect storm: N clients open their chat socket at the same
 * moment; how long until all are ready, the handshake (upgrade + ready frame)
 * percentiles, and failures. Idle sockets: resident memory of the process holding
 * the sockets as idle sockets are added, after the chat objects have had time to
 * hibernate; the slope of a least-squares line is the cost per socket.
 *
 * Both use two groups whose members are the same users (every user opens one socket
 * per group), so 2,000 sockets need only 1,000 accounts.
 */
import { Targets } from "../scenarios.ts";
import type { Target } from "../targets/target.ts";
import { ChatSocket, closeAll, integrityOf, type BenchUser } from "../client.ts";
import { LatencyRecorder, type LatencySummary } from "../lib/latency.ts";
import { sleep, waitUntil } from "../lib/open-loop.ts";
import { openDescriptors, residentKiB, round } from "../lib/process-stats.ts";
import { readChatRoomStarts } from "../lib/instance-start-probe.ts";
import { CdpSession } from "../lib/cdp.ts";
import { fmt, ms, openSockets, PhaseMeter, ratio, verdict, type CpuFigures, type RunContext, type Scenario } from "../lib/scenario.ts";

type SocketSlot = { url: string; user: BenchUser };

/** Below this r2 the memory slope is noise, not a measurement. */
const MIN_R_SQUARED = 0.5;

/** Socket slots: first every member of group A, then every member of group B. */
async function socketSlots(target: Target, sockets: number): Promise<SocketSlot[]> {
  const perGroup = Math.ceil(sockets / 2);
  const users = await target.users(perGroup);
  const groupA = await target.createGroup(users, "sockets A");
  const groupB = await target.createGroup(users, "sockets B");
  return [...users.map((user) => ({ url: target.socketUrl(groupA), user })), ...users.map((user) => ({ url: target.socketUrl(groupB), user }))].slice(0, sockets);
}

/** `sockets` slots on one chat, spread evenly over `accounts` accounts (several sockets per token). */
async function accountSocketSlots(target: Target, sockets: number, accounts: number): Promise<SocketSlot[]> {
  const users = await target.users(accounts);
  const chat = await target.createGroup(users, "idle sockets");
  return Array.from({ length: sockets }, (_, index) => ({ url: target.socketUrl(chat), user: users[index % users.length]! }));
}

// ---------------------------------------------------------------------------

export type StormStep = {
  clients: number;
  ready: number;
  failures: number;
  failureSamples: string[];
  /** From the first socket created to the last ready frame. */
  allReadyMs: number;
  /** Per socket: from its creation to its ready frame (upgrade, auth, membership, ready). */
  handshake: LatencySummary;
  /** Per socket: to the 101 response only. */
  upgrade: LatencySummary;
  cpu: CpuFigures;
};

export type StormFigures = { steps: StormStep[] };

export const connectStorm: Scenario<StormFigures> = {
  name: "connectStorm",
  title: "connect storm",
  targets: ["workerd", "bare"],

  async run(target, context) {
    const p = context.params.connectStorm;
    const slots = await socketSlots(target, Math.max(...p.clients));
    const steps: StormStep[] = [];
    for (const clients of p.clients) {
      const meter = new PhaseMeter(target, context, `connect-storm-${clients}`);
      await meter.start();
      const stormStartedAt = performance.now();
      // All at once: the sockets are created in one synchronous loop.
      const sockets = slots.slice(0, clients).map((slot) => new ChatSocket({ url: slot.url, user: slot.user, handshakeTimeoutMs: p.timeoutMs }));
      await waitUntil(() => sockets.every((s) => s.isReady || s.failure !== null), p.timeoutMs, 2);
      const cpu = await meter.stop();
      const handshake = new LatencyRecorder();
      const upgrade = new LatencyRecorder();
      let lastReadyAt = stormStartedAt;
      for (const socket of sockets) {
        if (!socket.isReady) continue;
        handshake.recordMs(socket.readyAt - socket.startedAt);
        upgrade.recordMs(socket.openedAt - socket.startedAt);
        lastReadyAt = Math.max(lastReadyAt, socket.readyAt);
      }
      const integrity = integrityOf(sockets);
      const ready = sockets.filter((s) => s.isReady).length;
      const notReady = clients - ready - integrity.failures;
      steps.push({
        clients,
        ready,
        failures: integrity.failures + notReady,
        failureSamples: notReady > 0 ? [...integrity.failureSamples, `${notReady} not ready after ${p.timeoutMs} ms`] : integrity.failureSamples,
        allReadyMs: ready === clients ? round(lastReadyAt - stormStartedAt, 1) : Number.NaN,
        handshake: handshake.summary(),
        upgrade: upgrade.summary(),
        cpu,
      });
      context.log(`    ${target.name}: ${ready}/${clients} ready in ${round(lastReadyAt - stormStartedAt, 0)} ms, handshake p99 ${handshake.summary().p99Ms} ms`);
      await closeAll(sockets);
      await sleep(500);
    }
    return { steps };
  },

  rows({ workerd, bare }, context) {
    const t = Targets.connectStorm;
    const clients = context.params.connectStorm.clients;
    return clients.flatMap((n, index) => {
      const w = workerd?.steps.find((s) => s.clients === n);
      const b = bare?.steps.find((s) => s.clients === n);
      const isFirstTarget = n === t.firstClients;
      const isLast = index === clients.length - 1;
      const target = [isFirstTarget ? `<= ${t.firstWithinMs} ms` : "", isLast ? `${t.lastFailures} failures` : ""].filter(Boolean).join(", ");
      const ok = w && (!isFirstTarget || w.allReadyMs <= t.firstWithinMs) && (!isLast || w.failures === t.lastFailures);
      const text = (s?: StormStep) => (s ? `${Number.isFinite(s.allReadyMs) ? ms(s.allReadyMs) : "incomplete"}, ${s.failures} failed` : "-");
      return [
        { metric: `${fmt(n)} clients: all ready in, failures`, workerd: text(w), bare: text(b), ratio: ratio(w?.allReadyMs, b?.allReadyMs), target, verdict: target ? verdict(ok) : "" },
        { metric: `  handshake p50 / p99`, workerd: `${ms(w?.handshake.p50Ms)} / ${ms(w?.handshake.p99Ms)}`, bare: `${ms(b?.handshake.p50Ms)} / ${ms(b?.handshake.p99Ms)}`, ratio: ratio(w?.handshake.p99Ms, b?.handshake.p99Ms), target: "", verdict: "" },
      ] as const;
    });
  },

  notes({ workerd, bare }) {
    const notes: string[] = [];
    for (const [name, f] of Object.entries({ workerd, bare })) {
      for (const step of f?.steps ?? []) {
        if (step.failures > 0) notes.push(`connect storm ${step.clients} on ${name}: ${step.failures} failures: ${step.failureSamples.join("; ")}`);
      }
    }
    return notes;
  },
};

// ---------------------------------------------------------------------------

export type IdlePoint = { sockets: number; residentKiB: number; jsHeapUsedKiB: number | null; descriptors: Record<string, number> };
export type IdleFigures = {
  points: IdlePoint[];
  /** Slope of the resident memory (VmRSS) of the process holding the sockets. */
  kibPerSocket: number;
  /** Slope of the isolate's used JS heap (workerd only, through the inspector). */
  jsHeapKibPerSocket: number | null;
  /** How well a line fits (1 = perfectly linear). */
  rSquared: number;
  descriptorsPerSocket: Record<string, number>;
  settleMs: number;
  /**
   * Whether the first message after the idle period had to start the chat's object
   * again (proof that it had hibernated); null when not checked.
   */
  hibernationProven: boolean | null;
  hibernationCheck: string;
};

export const idleSockets: Scenario<IdleFigures> = {
  name: "idleSockets",
  title: "idle hibernated sockets",
  targets: ["workerd", "bare"],

  async run(target, context) {
    const p = context.params.idleSockets;
    const slots = await accountSocketSlots(target, Math.max(...p.steps), p.accounts);
    const open: ChatSocket[] = [];
    const points: IdlePoint[] = [];
    let hibernation: { proven: boolean | null; detail: string } = { proven: null, detail: "not checked (quick mode or bare server)" };
    try {
      // The socket path once before the baseline: its code, the chat objects and the
      // runtime's first-use allocations must not count as the first sockets' memory.
      const warm = await openSockets([...slots.slice(0, p.openBatch), ...slots.slice(-p.openBatch)], p.openBatch);
      await closeAll(warm);
      for (const sockets of p.steps) {
        for (let from = open.length; from < sockets; from += p.openBatch) {
          open.push(...(await openSockets(slots.slice(from, Math.min(sockets, from + p.openBatch)), p.openBatch)));
        }
        // Idle: no frame in either direction, so the chat objects may hibernate.
        await sleep(target.name === "workerd" ? p.settleMs : p.bareSettleMs);
        const samples: number[] = [];
        for (let i = 0; i < 5; i++) {
          samples.push(residentKiB(target.memoryPid));
          await sleep(50);
        }
        samples.sort((a, b) => a - b);
        const descriptors: Record<string, number> = {};
        for (const process of target.processes) descriptors[process.role] = openDescriptors(process.pid);
        points.push({ sockets, residentKiB: samples[2]!, jsHeapUsedKiB: await jsHeapUsedKiB(target), descriptors });
        context.log(`    ${target.name}: ${sockets} idle sockets, ${fmt(samples[2]! / 1024)} MiB resident`);
      }
      if (target.inspectorPort !== undefined && p.settleMs >= 11_000 && open.length > 0) {
        hibernation = await checkHibernated(target.inspectorPort, open[0]!, context);
      }
    } finally {
      await closeAll(open);
    }
    const fit = leastSquares(points.map((point) => [point.sockets, point.residentKiB]));
    const heapFit = points.every((point) => point.jsHeapUsedKiB !== null) ? leastSquares(points.map((point) => [point.sockets, point.jsHeapUsedKiB!])) : null;
    const descriptorsPerSocket: Record<string, number> = {};
    for (const process of target.processes) {
      descriptorsPerSocket[process.role] = round(leastSquares(points.map((point) => [point.sockets, point.descriptors[process.role]!])).slope, 2);
    }
    return { points, kibPerSocket: round(fit.slope, 2), jsHeapKibPerSocket: heapFit ? round(heapFit.slope, 2) : null, rSquared: round(fit.rSquared, 3), descriptorsPerSocket, settleMs: target.name === "workerd" ? p.settleMs : p.bareSettleMs, hibernationProven: hibernation.proven, hibernationCheck: hibernation.detail };
  },

  rows({ workerd, bare }, context) {
    const t = Targets.idleSockets;
    const top = Math.max(...context.params.idleSockets.steps);
    const fds = (f?: IdleFigures) => (f ? Object.entries(f.descriptorsPerSocket).map(([role, n]) => `${role} ${n}`).join(", ") : "-");
    return [
      {
        metric: `resident memory per idle socket (0 -> ${fmt(top)})`,
        workerd: workerd ? `${fmt(workerd.kibPerSocket)} KiB (r2 ${workerd.rSquared})` : "-",
        bare: bare ? `${fmt(bare.kibPerSocket)} KiB` : "-",
        ratio: ratio(workerd?.kibPerSocket, bare?.kibPerSocket),
        target: `<= ${t.kibPerSocket} KB`,
        // A line that explains less than half the variance decides nothing.
        verdict: workerd && workerd.rSquared < MIN_R_SQUARED ? "n/c" : verdict(workerd && workerd.kibPerSocket <= t.kibPerSocket),
      },
      { metric: "  JS heap used per socket (workerd isolate)", workerd: workerd?.jsHeapKibPerSocket != null ? `${fmt(workerd.jsHeapKibPerSocket)} KiB` : "-", bare: "n/a", ratio: "", target: "", verdict: "" },
      { metric: "  file descriptors per socket", workerd: fds(workerd), bare: fds(bare), ratio: "", target: "", verdict: "" },
    ];
  },

  notes({ workerd }, context) {
    const p = context.params.idleSockets;
    return [
      p.settleMs >= 11_000
        ? `idle sockets: each step waited ${p.settleMs / 1000} s without traffic (longer than the ~10 s after which a hibernatable object hibernates locally) before sampling the user runtime's VmRSS`
        : `idle sockets: --quick waits only ${p.settleMs / 1000} s per step, less than the ~10 s hibernation delay: the slope is of awake, idle sockets`,
      ...(workerd && workerd.rSquared < 0.8
        ? [`idle sockets: memory did not grow linearly (r2 ${workerd.rSquared}): the slope is approximate${workerd.rSquared < MIN_R_SQUARED ? ", the verdict inconclusive (n/c)" : ""}; resident memory is a high-water mark, so growth below it is invisible`]
        : []),
      ...(workerd ? [`idle sockets: hibernation check: ${workerd.hibernationCheck}`] : []),
    ];
  },
};

/** The isolate's used JS heap, through the inspector (null for the bare server or on failure). */
async function jsHeapUsedKiB(target: Target): Promise<number | null> {
  if (target.inspectorPort === undefined) return null;
  let session: CdpSession | null = null;
  try {
    session = await CdpSession.connect(target.inspectorPort);
    const usage = (await session.call("Runtime.getHeapUsage")) as { usedSize?: number };
    return usage.usedSize === undefined ? null : Math.round(usage.usedSize / 1024);
  } catch {
    return null;
  } finally {
    session?.close();
  }
}

/**
 * After the last idle period: one message on a socket of the first group. If the
 * ChatRoom constructor runs for it, that object had hibernated while idle.
 */
async function checkHibernated(inspectorPort: number, socket: ChatSocket, context: RunContext): Promise<{ proven: boolean | null; detail: string }> {
  try {
    const before = await readChatRoomStarts(inspectorPort);
    const clientId = `${context.nextTag("i")}.0`;
    const repliesBefore = socket.repliesOk;
    socket.sendMessage(clientId, clientId, context.body);
    await waitUntil(() => socket.repliesOk > repliesBefore, 5_000);
    const proven = (await readChatRoomStarts(inspectorPort)) > before;
    return { proven, detail: proven ? "the first message after the idle period started the ChatRoom object again (it had hibernated)" : "the first message after the idle period found the ChatRoom object awake: hibernation not observed" };
  } catch (error) {
    return { proven: null, detail: `could not read the start count through the inspector: ${error instanceof Error ? error.message : String(error)}` };
  }
}

function leastSquares(points: [number, number][]): { slope: number; rSquared: number } {
  const n = points.length;
  if (n < 2) return { slope: Number.NaN, rSquared: Number.NaN };
  const meanX = points.reduce((s, [x]) => s + x, 0) / n;
  const meanY = points.reduce((s, [, y]) => s + y, 0) / n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (const [x, y] of points) {
    sxy += (x - meanX) * (y - meanY);
    sxx += (x - meanX) ** 2;
    syy += (y - meanY) ** 2;
  }
  const slope = sxx === 0 ? Number.NaN : sxy / sxx;
  return { slope, rSquared: syy === 0 ? 1 : (sxy * sxy) / (sxx * syy) };
}
