/**
 * A minimal Chrome DevTools Protocol client for the Worker's inspector (wrangler dev
 * proxies it on --inspector-port). Used for two things the server does not expose:
 * counting object starts (instance-start-probe.ts) and CPU profiles (cpu-profile.ts).
 */
import WebSocket from "ws";

export type CdpMessage = { id?: number; method?: string; params?: Record<string, unknown>; result?: Record<string, unknown>; error?: { message: string } };

export class CdpSession {
  readonly #ws: WebSocket;
  readonly #pending = new Map<number, (message: CdpMessage) => void>();
  readonly #listeners: ((message: CdpMessage) => void)[] = [];
  #nextId = 0;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.on("message", (data: Buffer) => {
      const message = JSON.parse(data.toString()) as CdpMessage;
      if (message.id !== undefined) {
        this.#pending.get(message.id)?.(message);
        this.#pending.delete(message.id);
      } else {
        for (const listener of this.#listeners) listener(message);
      }
    });
  }

  static async connect(inspectorPort: number, timeoutMs = 5_000): Promise<CdpSession> {
    // Profiles of a busy isolate are large: allow big frames.
    const ws = new WebSocket(`ws://127.0.0.1:${inspectorPort}/ws`, { perMessageDeflate: false, handshakeTimeout: timeoutMs, maxPayload: 512 * 1024 * 1024 });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    return new CdpSession(ws);
  }

  /** Events (messages without an id). */
  onEvent(listener: (message: CdpMessage) => void): void {
    this.#listeners.push(listener);
  }

  /** Sends a command; rejects on a protocol error or when no answer comes in time. */
  call(method: string, params: object = {}, timeoutMs = 5_000): Promise<Record<string, unknown>> {
    const id = ++this.#nextId;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`${method}: no answer in ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, (message) => {
        clearTimeout(timer);
        if (message.error) reject(new Error(`${method}: ${message.error.message}`));
        else resolve(message.result ?? {});
      });
      this.#ws.send(JSON.stringify({ id, method, params }));
    });
  }

  close(): void {
    this.#ws.close();
  }

  terminate(): void {
    this.#ws.terminate();
  }
}
