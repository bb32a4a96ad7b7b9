import { describeError, log } from "../lib/log.ts";
import type { ReceiptsFrame } from "../protocol/index.ts";

/** Waits before trying a failed call again; after the last, the account hears at the next change or fan-out. */
const RETRY_DELAYS_MS = [100, 1_000, 5_000];

/**
 * Sends senders' new receipt watermarks to their accounts (which store them in the
 * chat list and forward them to the device streams): one call in flight per account,
 * and while it is, newer frames replace each other (watermarks only grow, so the
 * latest says everything the skipped ones did). A failed call is tried again.
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
    this.#attempt(userId, frame)
      .finally(() => {
        this.#inFlight.delete(userId);
        const next = this.#waiting.get(userId);
        if (!next) return;
        this.#waiting.delete(userId);
        this.push(userId, next);
      });
  }

  async #attempt(userId: string, frame: ReceiptsFrame): Promise<void> {
    for (let failures = 0; ; failures++) {
      try {
        await this.#send(userId, frame);
        return;
      } catch (error) {
        const delay = RETRY_DELAYS_MS[failures];
        // A newer frame waiting replaces this one: no need to try this one again.
        if (delay === undefined || this.#waiting.has(userId)) {
          log.warn("could not tell an account its receipts", describeError(error));
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }
}
