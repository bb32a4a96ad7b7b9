import { describeError, log } from "../lib/log.ts";
import type { ReceiptsFrame } from "../protocol/index.ts";

/**
 * Sends senders' new receipt watermarks to their accounts (which store them in the
 * chat list and forward them to the device streams): one call in flight per account,
 * and while it is, newer frames replace each other (watermarks only grow, so the
 * latest says everything the skipped ones did).
 */
export class ReceiptPushes {
  readonly #send: (userId: string, frame: ReceiptsFrame) => Promise<unknown>;
  readonly #inFlight = new Set<string>();
  readonly #waiting = new Map<string, ReceiptsFrame>();

  constructor(send: (userId: string, frame: ReceiptsFrame) => Promise<unknown>) {
    this.#send = send;
  }

  push(userId: string, frame: ReceiptsFrame): void {
    if (this.#inFlight.has(userId)) {
      this.#waiting.set(userId, frame);
      return;
    }
    this.#inFlight.add(userId);
    this.#send(userId, frame)
      .catch((error: unknown) => log.warn("could not tell an account its receipts", describeError(error)))
      .finally(() => {
        this.#inFlight.delete(userId);
        const next = this.#waiting.get(userId);
        if (!next) return;
        this.#waiting.delete(userId);
        this.push(userId, next);
      });
  }
}
