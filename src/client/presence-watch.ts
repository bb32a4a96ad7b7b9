import { Limits, PresenceSubscribeResult, type AppState, type Presence, type PresenceWatch, type StreamClientFrame } from "../protocol/index.ts";

/** What presence needs of the device stream it rides on. */
export type PresenceTransport = {
  /** Whether the stream is open and resumed. */
  ready(): boolean;
  /** Whether a socket is open (frames may go before the resume). */
  open(): boolean;
  /** Sends a frame and resolves with its reply's result; rejects when refused or when the socket goes. */
  request(frame: StreamClientFrame): Promise<unknown>;
  nextId(): string;
  /** The stream stopped for good. */
  stopped(): boolean;
};

/** A refusal with a `retryAfterMs` (the subscription rate), as the stream reports it. */
type MaybeRetry = { error?: { retryAfterMs?: number } };

/**
 * Presence on a device stream (docs/protocol.md §8.6): the app's foreground/background
 * state, and the people on screen, subscribed while the stream is up and renewed before
 * each lease ends (three quarters of `leaseMs`, 45 s), and sent again on every new
 * connection. Used by DeviceStream; apps call its `setAppState` and `watchPresence`.
 */
export class PresenceWatcher {
  readonly #transport: PresenceTransport;
  readonly #emit: (presence: Presence) => void;
  #watch: PresenceWatch[] = [];
  #appState: AppState = "foreground";
  #renewal: ReturnType<typeof setTimeout> | null = null;
  /** Counts subscriptions: the reply to an older one does not schedule a renewal. */
  #generation = 0;
  readonly #known = new Map<string, Presence>();

  constructor(transport: PresenceTransport, emit: (presence: Presence) => void) {
    this.#transport = transport;
    this.#emit = emit;
  }

  /** The latest presence of each watched user. */
  get known(): ReadonlyMap<string, Presence> {
    return this.#known;
  }

  get appState(): AppState {
    return this.#appState;
  }

  /**
   * Replaces the people watched (at most `Limits.maxPresenceWatches`; an empty list
   * stops watching). Resolves with the server's answer when the stream is up, or null
   * when it is not (the list is sent when it is).
   */
  async watch(list: PresenceWatch[]): Promise<PresenceSubscribeResult | null> {
    if (list.length > Limits.maxPresenceWatches) throw new RangeError(`at most ${Limits.maxPresenceWatches} people at once`);
    this.#watch = [...list];
    const watched = new Set(list.map((entry) => entry.userId));
    for (const userId of this.#known.keys()) if (!watched.has(userId)) this.#known.delete(userId);
    if (!this.#transport.ready()) return null;
    return this.#subscribe();
  }

  /** The app went to the foreground or the background; sent now when a socket is open, else on the next one. */
  async setAppState(state: AppState): Promise<void> {
    this.#appState = state;
    if (this.#transport.open()) await this.#sendState().catch(() => undefined);
  }

  /** A socket opened (`stream.ready`): a stream starts in the foreground, so the background is said at once. */
  connected(): void {
    if (this.#appState !== "foreground") void this.#sendState().catch(() => undefined);
  }

  /** The stream resumed: the subscription goes again on this socket. */
  resumed(): void {
    if (this.#watch.length > 0) void this.#subscribe().catch(() => undefined);
  }

  /** A `presence` frame. */
  received(presence: Presence): void {
    if (!this.#watch.some((entry) => entry.userId === presence.userId)) return;
    this.#known.set(presence.userId, presence);
    this.#emit(presence);
  }

  /** The socket closed: the renewal waits for the next one. */
  disconnected(): void {
    this.#cancelRenewal();
  }

  stop(): void {
    this.#cancelRenewal();
  }

  #sendState(): Promise<unknown> {
    return this.#transport.request({ type: "presence.state", id: this.#transport.nextId(), state: this.#appState });
  }

  async #subscribe(): Promise<PresenceSubscribeResult | null> {
    this.#cancelRenewal();
    const generation = ++this.#generation;
    const watch = this.#watch;
    let result: PresenceSubscribeResult;
    try {
      result = PresenceSubscribeResult.parse(await this.#transport.request({ type: "presence.subscribe", id: this.#transport.nextId(), watch }));
    } catch (error) {
      // Refused for now (too many subscriptions): again when the server says. Lost with the socket: at the next resume.
      const retryAfterMs = (error as MaybeRetry).error?.retryAfterMs;
      if (retryAfterMs !== undefined && generation === this.#generation) this.#renewIn(retryAfterMs);
      throw error;
    }
    if (generation !== this.#generation) return result;
    for (const presence of result.presence) this.received(presence);
    for (const userId of result.refused) this.#known.delete(userId);
    if (watch.length > 0) this.#renewIn(Math.floor(result.leaseMs * 0.75));
    return result;
  }

  #renewIn(delayMs: number): void {
    this.#cancelRenewal();
    this.#renewal = setTimeout(() => {
      this.#renewal = null;
      if (this.#transport.stopped() || !this.#transport.ready() || this.#watch.length === 0) return;
      void this.#subscribe().catch(() => undefined);
    }, delayMs);
  }

  #cancelRenewal(): void {
    if (this.#renewal) clearTimeout(this.#renewal);
    this.#renewal = null;
  }
}
