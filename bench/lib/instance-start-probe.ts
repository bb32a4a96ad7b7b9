/**
 * Reads the Worker's count of ChatRoom constructor runs (src/lib/instance-starts.ts)
 * without changing the server: it keeps the counts on globalThis under a registered
 * symbol, and this reads them with one `Runtime.evaluate` through wrangler's
 * inspector port. No breakpoint and no debugger stay attached, so the starts being
 * counted run at full speed (a conditional-breakpoint probe that stayed attached
 * added ~13 ms to the first wake after an idle period).
 *
 * A constructor runs only when an object starts: read before and after an idle
 * period's first messages, a difference of one start per chat proves every chat's
 * object had been evicted.
 */
import { CdpSession } from "./cdp.ts";

const EXPRESSION = `globalThis[Symbol.for("edgechat.instanceStarts")]?.ChatRoom ?? 0`;

/**
 * The inspector names the Worker's execution context only once, to the first session
 * that enables the Runtime domain after the runtime starts (wrangler's own session may
 * be first); later sessions must pass its id. The Debugger domain names it too, in
 * every `scriptParsed` event. So `learnWorkerContext` enables both briefly, right after
 * wrangler dev is up, and keeps the id per inspector port.
 */
const workerContexts = new Map<number, number>();

export async function learnWorkerContext(inspectorPort: number, timeoutMs = 5_000): Promise<void> {
  const session = await CdpSession.connect(inspectorPort, timeoutMs);
  try {
    let contextId: number | null = null;
    session.onEvent((message) => {
      const params = message.params as { context?: { id: number }; executionContextId?: number; url?: string } | undefined;
      if (message.method === "Runtime.executionContextCreated" && params?.context) contextId ??= params.context.id;
      if (message.method === "Debugger.scriptParsed" && params?.executionContextId !== undefined && params.url?.includes("/.wrangler/tmp/")) contextId ??= params.executionContextId;
    });
    await session.call("Runtime.enable", {}, timeoutMs);
    await session.call("Debugger.enable", {}, timeoutMs);
    const deadline = performance.now() + timeoutMs;
    while (contextId === null && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    await session.call("Debugger.disable", {}, timeoutMs).catch(() => undefined);
    await session.call("Runtime.disable", {}, timeoutMs).catch(() => undefined);
    if (contextId === null) throw new Error("the inspector announced no execution context");
    workerContexts.set(inspectorPort, contextId);
  } finally {
    session.close();
  }
}

export async function readChatRoomStarts(inspectorPort: number, timeoutMs = 5_000): Promise<number> {
  const value = await evaluateInWorker(inspectorPort, EXPRESSION, timeoutMs);
  if (typeof value !== "number") throw new Error(`the start count is not a number: ${JSON.stringify(value)}`);
  return value;
}

/** Evaluates `expression` in the Worker's isolate (one Runtime.evaluate, nothing left attached); returns its JSON value. */
export async function evaluateInWorker(inspectorPort: number, expression: string, timeoutMs = 5_000): Promise<unknown> {
  const contextId = workerContexts.get(inspectorPort);
  if (contextId === undefined) throw new Error("the Worker's execution context is unknown (learnWorkerContext did not run or failed)");
  const session = await CdpSession.connect(inspectorPort, timeoutMs);
  try {
    const answer = await session.call("Runtime.evaluate", { expression, returnByValue: true, contextId }, timeoutMs);
    const { result, exceptionDetails } = answer as { result?: { value?: unknown }; exceptionDetails?: { text?: string } };
    if (exceptionDetails) throw new Error(`evaluating in the Worker failed: ${exceptionDetails.text ?? "exception"}`);
    return result?.value;
  } finally {
    session.close();
  }
}

/** Constructor runs per Durable Object class so far (e.g. `{ ChatRoom: 12, User: 40 }`). */
export async function readInstanceStarts(inspectorPort: number, timeoutMs = 5_000): Promise<Record<string, number>> {
  const value = await evaluateInWorker(inspectorPort, `globalThis[Symbol.for("edgechat.instanceStarts")] ?? {}`, timeoutMs);
  if (typeof value !== "object" || value === null) throw new Error(`the start counts are not an object: ${JSON.stringify(value)}`);
  return value as Record<string, number>;
}

/** Object starts between two readings, per class (classes that started none are left out). */
export function startsBetween(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(after).map(([name, n]) => [name, n - (before[name] ?? 0)] as const).filter(([, n]) => n > 0));
}
