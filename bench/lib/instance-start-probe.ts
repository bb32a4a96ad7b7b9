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
 * that enables the Runtime domain after the runtime starts; later sessions must pass
 * its id. So `learnWorkerContext` runs right after wrangler dev is up, before any
 * other inspector session, and the id is kept per inspector port.
 */
const workerContexts = new Map<number, string>();

export async function learnWorkerContext(inspectorPort: number, timeoutMs = 5_000): Promise<void> {
  const session = await CdpSession.connect(inspectorPort, timeoutMs);
  try {
    let uniqueId: string | null = null;
    session.onEvent((message) => {
      if (message.method === "Runtime.executionContextCreated") uniqueId = (message.params as { context: { uniqueId: string } }).context.uniqueId;
    });
    await session.call("Runtime.enable", {}, timeoutMs);
    const deadline = performance.now() + timeoutMs;
    while (uniqueId === null && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    if (uniqueId === null) throw new Error("the inspector announced no execution context");
    workerContexts.set(inspectorPort, uniqueId);
    await session.call("Runtime.disable", {}, timeoutMs).catch(() => undefined);
  } finally {
    session.close();
  }
}

export async function readChatRoomStarts(inspectorPort: number, timeoutMs = 5_000): Promise<number> {
  const uniqueContextId = workerContexts.get(inspectorPort);
  if (uniqueContextId === undefined) throw new Error("the Worker's execution context is unknown (learnWorkerContext did not run or failed)");
  const session = await CdpSession.connect(inspectorPort, timeoutMs);
  try {
    const answer = await session.call("Runtime.evaluate", { expression: EXPRESSION, returnByValue: true, uniqueContextId }, timeoutMs);
    const { result, exceptionDetails } = answer as { result?: { value?: unknown }; exceptionDetails?: { text?: string } };
    if (exceptionDetails) throw new Error(`evaluating the start count failed: ${exceptionDetails.text ?? "exception"}`);
    if (typeof result?.value !== "number") throw new Error(`the start count is not a number: ${JSON.stringify(result)}`);
    return result.value;
  } finally {
    session.close();
  }
}
