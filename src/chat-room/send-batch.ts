/**
 * Group commit for sends. Every storage write in one turn of a Durable Object
 * commits in one transaction (one fsync); without batching, each message is its own
 * turn and its own commit, which caps a chat at about 1,500 messages/s locally.
 * Sends are queued and stored together on the next macrotask, so the frames that
 * arrived meanwhile (from every socket and REST) share a commit. Order is kept: the
 * queue is stored in arrival order.
 */
export class SendBatch<Item> {
  readonly #store: (batch: Item[]) => void | Promise<void>;
  readonly #maxBatch: number;
  #pending: Item[] = [];
  #scheduled = false;
  #storing = false;

  /** `store` may be async (it may first lease send tokens); batches are stored one at a time, in order. */
  constructor(store: (batch: Item[]) => void | Promise<void>, maxBatch: number) {
    this.#store = store;
    this.#maxBatch = maxBatch;
  }

  add(item: Item): void {
    this.#pending.push(item);
    this.#schedule();
  }

  #schedule(): void {
    if (this.#scheduled || this.#storing) return;
    this.#scheduled = true;
    // A macrotask, not a microtask: frames from other sockets get to run first.
    setTimeout(() => this.#flush(), 0);
  }

  #flush(): void {
    this.#scheduled = false;
    const batch = this.#pending.splice(0, this.#maxBatch);
    const stored = this.#store(batch);
    if (stored instanceof Promise) {
      // Sends arriving meanwhile wait for the next batch, behind this one.
      this.#storing = true;
      void stored.finally(() => {
        this.#storing = false;
        if (this.#pending.length > 0) this.#schedule();
      });
      return;
    }
    if (this.#pending.length > 0) this.#schedule();
  }
}
