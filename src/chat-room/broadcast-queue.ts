/**
 * Sends broadcast frames a chunk of sockets at a time. A `ws.send` costs ~30 µs of
 * the object's one thread (locally), so a frame to 1,000 members is ~30 ms of sends:
 * done in one go, nothing leaves the process until the last one is queued, and the
 * object reads no other frame meanwhile. In chunks, the first members' frames are
 * written while the rest are still being sent, and other frames get a turn between
 * chunks. Chats up to one chunk are sent at once.
 *
 * Order: one queue, drained first in, first out, so every socket gets frames in the
 * order they were broadcast. A frame's sockets are fixed when it is queued (those
 * live then); a socket that goes live later reads those events from storage in its
 * catch-up page instead.
 *
 * Coalescing: events broadcast while a frame waits behind another join the waiting
 * frame when its sockets are the same, so a busy chat sends fewer, bigger frames
 * instead of falling behind.
 */
type Job<Event> = {
  events: Event[];
  sockets: WebSocket[];
  /** Sessions' live-set version when the sockets were listed. */
  liveVersion: number;
  text: string | null;
  next: number;
};

export type BroadcastQueueOptions<Event> = {
  serialize: (events: Event[]) => string;
  /** Must not throw; called for every socket of a frame, in order, with the drain's time. */
  send: (ws: WebSocket, text: string, now: number) => void;
  /** Sockets sent to per turn. */
  chunk: number;
  /** Events at most in one coalesced frame. */
  maxEventsPerFrame: number;
};

export class BroadcastQueue<Event> {
  readonly #options: BroadcastQueueOptions<Event>;
  readonly #jobs: Job<Event>[] = [];
  #scheduled = false;

  constructor(options: BroadcastQueueOptions<Event>) {
    this.#options = options;
  }

  /** Nothing queued: a frame pushed now is sent (its first chunk) before push returns. */
  get idle(): boolean {
    return this.#jobs.length === 0;
  }

  /**
   * `liveVersion` changes whenever a socket joins the live set, so two frames with the
   * same version go to the same sockets (less any that closed, which `send` skips).
   */
  push(events: Event[], sockets: WebSocket[], liveVersion: number): void {
    if (events.length === 0 || sockets.length === 0) return;
    const waiting = this.#jobs.at(-1);
    if (waiting && waiting.next === 0 && waiting.liveVersion === liveVersion && waiting.events.length + events.length <= this.#options.maxEventsPerFrame) {
      waiting.events.push(...events);
      return;
    }
    this.#jobs.push({ events: [...events], sockets, liveVersion, text: null, next: 0 });
    if (!this.#scheduled) this.#drain();
  }

  #drain(): void {
    this.#scheduled = false;
    const { serialize, send } = this.#options;
    let budget = this.#options.chunk;
    const now = Date.now();
    while (budget > 0 && this.#jobs.length > 0) {
      const job = this.#jobs[0]!;
      const text = (job.text ??= serialize(job.events)); // once per frame, for every socket
      const end = Math.min(job.sockets.length, job.next + budget);
      for (let i = job.next; i < end; i++) send(job.sockets[i]!, text, now);
      budget -= end - job.next;
      job.next = end;
      if (job.next === job.sockets.length) this.#jobs.shift();
    }
    if (this.#jobs.length > 0) {
      this.#scheduled = true;
      // A macrotask: the object's other input (frames, requests) runs between chunks.
      setTimeout(() => this.#drain(), 0);
    }
  }
}
