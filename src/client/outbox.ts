import type { ErrorBody, ReplyFrame, SendFrame, SendResult } from "../protocol/index.ts";

/** A message the app asked to send, until the server acknowledges it. */
type Pending = {
  clientId: string;
  body: string;
  replyToSeq: number | undefined;
  frameId: string | null;
  resolve: (result: SendResult) => void;
  reject: (error: SendError) => void;
};

/** A send the server refused for good (not retried). */
export class SendError extends Error {
  readonly error: ErrorBody;
  constructor(error: ErrorBody) {
    super(`${error.code}: ${error.message}`);
    this.name = "SendError";
    this.error = error;
  }
}

/**
 * The messages of one chat waiting for their SENT ack, sent strictly in order: one
 * in flight at a time, so a refused or rate-limited message can never be overtaken
 * by the one after it. Every message keeps its clientId across reconnects, so a
 * resend after a lost ack is stored once (the server answers it as a duplicate).
 */
export class Outbox {
  readonly #queue: Pending[] = [];
  readonly #transmit: (frame: SendFrame) => boolean;
  #connected = false;
  #retryTimer: ReturnType<typeof setTimeout> | null = null;
  #frameCounter = 0;

  constructor(transmit: (frame: SendFrame) => boolean) {
    this.#transmit = transmit;
  }

  get size(): number {
    return this.#queue.length;
  }

  enqueue(body: string, options: { replyToSeq?: number; clientId?: string } = {}): Promise<SendResult> {
    return new Promise((resolve, reject) => {
      this.#queue.push({
        clientId: options.clientId ?? crypto.randomUUID(),
        body,
        replyToSeq: options.replyToSeq,
        frameId: null,
        resolve,
        reject,
      });
      if (this.#queue.length === 1) this.#sendHead();
    });
  }

  /** The socket is open and ready: (re)send the head of the queue. */
  connected(): void {
    this.#connected = true;
    this.#sendHead();
  }

  /** The socket dropped: whatever was in flight is sent again on the next connection. */
  disconnected(): void {
    this.#connected = false;
    for (const pending of this.#queue) pending.frameId = null;
  }

  /** Returns true when the reply belonged to the outbox. */
  handleReply(reply: ReplyFrame): boolean {
    const head = this.#queue[0];
    if (!head || head.frameId !== reply.id) return false;
    if (reply.ok) {
      this.#queue.shift();
      head.resolve(reply.result as SendResult);
      this.#sendHead();
    } else if (reply.error.retryable) {
      head.frameId = null;
      this.#retryLater(reply.error.retryAfterMs ?? 1000);
    } else {
      this.#queue.shift();
      head.reject(new SendError(reply.error));
      this.#sendHead();
    }
    return true;
  }

  /** The connection closed for good: every waiting send fails. */
  failAll(error: ErrorBody): void {
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    for (const pending of this.#queue.splice(0)) pending.reject(new SendError(error));
  }

  #retryLater(delayMs: number): void {
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      this.#sendHead();
    }, delayMs);
  }

  #sendHead(): void {
    const head = this.#queue[0];
    if (!head || !this.#connected || head.frameId !== null || this.#retryTimer) return;
    head.frameId = `m${++this.#frameCounter}`;
    const frame: SendFrame = { type: "send", id: head.frameId, clientId: head.clientId, body: head.body };
    if (head.replyToSeq !== undefined) frame.replyToSeq = head.replyToSeq;
    if (!this.#transmit(frame)) head.frameId = null; // not open after all: resent on connect
  }
}
