/**
 * A WebSocket the test plays the server of, for the SDK's connections: it opens on the
 * next tick and sends `firstFrame()` (what a server sends first), records what the
 * client sends, and lets the test answer, refuse or drop. Each test file subclasses it
 * with its own first frame and helpers, and passes the subclass as the `WebSocket`.
 */
export abstract class FakeServerSocket extends EventTarget {
  /** Every socket made, in order (a test file resets it with `Subclass.instances = []`). */
  static instances: FakeServerSocket[] = [];

  /** The newest socket, as the subclass it is called on. */
  static latest<T extends FakeServerSocket>(this: (abstract new (...args: never[]) => T) & { instances: FakeServerSocket[] }): T {
    return this.instances.at(-1) as T;
  }

  readyState = 0;
  binaryType = "blob";
  readonly sent: string[] = [];
  closedAt: number | undefined;

  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {
    super();
    (this.constructor as typeof FakeServerSocket).instances.push(this);
    setTimeout(() => {
      if (this.readyState !== 0) return;
      this.readyState = 1;
      this.dispatchEvent(new Event("open"));
      this.receive(this.firstFrame());
    }, 0);
  }

  /** What the server sends first (`ready`, `stream.ready`). */
  protected abstract firstFrame(): object;

  send(data: string): void {
    this.sent.push(data);
  }

  close(): void {
    this.readyState = 3;
    this.closedAt = Date.now();
  }

  /** The client's JSON frames, parsed. */
  frames(): { type: string; id: string; [key: string]: unknown }[] {
    return this.sent.filter((text) => text.startsWith("{")).map((text) => JSON.parse(text) as { type: string; id: string });
  }

  framesOf(type: string) {
    return this.frames().filter((frame) => frame.type === type);
  }

  lastFrame(type: string) {
    const frame = this.frames().findLast((f) => f.type === type);
    if (!frame) throw new Error(`no ${type} frame sent`);
    return frame;
  }

  receive(frame: object): void {
    this.dispatchEvent(new MessageEvent("message", { data: JSON.stringify(frame) }));
  }

  reply(id: string, result: unknown): void {
    this.receive({ type: "reply", id, ok: true, result });
  }

  refuse(id: string, error: object): void {
    this.receive({ type: "reply", id, ok: false, error });
  }

  /** The connection ends: closed by the server with `code`, or lost (1006) when none is given. */
  drop(code = 1006, reason = ""): void {
    this.readyState = 3;
    this.dispatchEvent(Object.assign(new Event("close"), { code, reason, wasClean: code !== 1006 }));
  }
}
