/**
 * Counts ChatRoom constructor runs without changing the server. The Worker counts
 * them in src/lib/instance-starts.ts but does not expose the count over HTTP, so the
 * benchmark asks the debugger instead: through wrangler's inspector port it finds the
 * bundled line `countInstanceStart("ChatRoom")` and sets a breakpoint there whose
 * condition logs a marker and returns false (it never pauses). Each marker that comes
 * back as a console event is one object start: after an idle period, a start on the
 * first message proves the object had been evicted.
 *
 * Attach only around the measurement: with the debugger on, every console line the
 * Worker writes travels over this socket too.
 */
import { CdpSession } from "./cdp.ts";

const MARKER = "__edgechat_bench_instance_start__";
const NEEDLE = 'countInstanceStart("ChatRoom")';

export class InstanceStartProbe {
  readonly #session: CdpSession;
  #starts = 0;

  private constructor(session: CdpSession) {
    this.#session = session;
  }

  /** Connects and sets the breakpoint; throws with the reason when it cannot. */
  static async attach(inspectorPort: number, timeoutMs = 5_000): Promise<InstanceStartProbe> {
    const session = await CdpSession.connect(inspectorPort, timeoutMs);
    const probe = new InstanceStartProbe(session);
    const scripts: { scriptId: string; url: string }[] = [];
    session.onEvent((message) => {
      if (message.method === "Debugger.scriptParsed") scripts.push(message.params as { scriptId: string; url: string });
      if (message.method === "Runtime.consoleAPICalled") {
        const args = (message.params?.args ?? []) as { value?: unknown }[];
        if (args.some((arg) => arg.value === MARKER)) probe.#starts++;
      }
    });
    try {
      await session.call("Runtime.enable", {}, timeoutMs);
      await session.call("Debugger.enable", {}, timeoutMs);
      // scriptParsed events for the loaded scripts follow Debugger.enable.
      const deadline = performance.now() + timeoutMs;
      let location: { scriptId: string; lineNumber: number } | null = null;
      while (!location && performance.now() < deadline) {
        for (const script of scripts.filter((s) => s.url.includes("/.wrangler/tmp/"))) {
          const found = await session.call("Debugger.searchInContent", { scriptId: script.scriptId, query: NEEDLE }, timeoutMs);
          const hit = (found.result as { lineNumber: number }[] | undefined)?.[0];
          if (hit) location = { scriptId: script.scriptId, lineNumber: hit.lineNumber };
        }
        if (!location) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      if (!location) throw new Error(`no loaded script contains ${NEEDLE}`);
      await session.call("Debugger.setBreakpoint", { location, condition: `(console.debug(${JSON.stringify(MARKER)}), false)` }, timeoutMs);
      return probe;
    } catch (error) {
      session.terminate();
      throw error;
    }
  }

  /** ChatRoom constructor runs seen since attach. */
  get starts(): number {
    return this.#starts;
  }

  async detach(): Promise<void> {
    try {
      await this.#session.call("Debugger.disable", {}, 2_000);
      await this.#session.call("Runtime.disable", {}, 2_000);
    } catch {
      // closing anyway
    }
    this.#session.close();
  }
}
