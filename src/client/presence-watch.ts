import { Limits, PresenceSubscribeResult, type AppState, type ErrorBody, type Presence, type PresenceWatch, type StreamClientFrame } from "../protocol/index.ts";
import { backoffMs } from "./retry.ts";

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

/** A refusal as the stream reports it (a StreamRequestError); a lost socket has no `error`. */
type MaybeRefusal = { error?: Partial<ErrorBody> };

/**
 * Presence on a device stream (docs/protocol.md §8.6): the app's foreground/background
 * state, and the people on screen, subscribed while the stream is up and renewed before
 * each lease ends (three quarters of `leaseMs`, 45 s), and sent again on every new
 * connection. A refused subscription is sent again: after `retryAfterMs` when rate
 * limited, with backoff after any other failure but `validation_failed`. Used by
 * DeviceStream; apps call its `setAppState` and `watchPresence`.
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
  /**
   * Users pushed since the latest subscription was sent: its reply may be older than
   * those pushes (the server watches before it asks), so it does not replace them.
   */
  #pushedSince = new Set<string>();
  /** Subscriptions refused in a row (not counting rate limits), for the backoff. */
  #failures = 0;

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
    this.#failures = 0;
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

  /** A `presence` frame (a push). */
  received(presence: Presence): void {
    this.#pushedSince.add(presence.userId);
    this.#apply(presence);
  }

  /** The socket closed: the renewal waits for the next one. */
  disconnected(): void {
    this.#cancelRenewal();
  }

  stop(): void {
    this.#cancelRenewal();
  }

  #apply(presence: Presence): void {
    if (!this.#watch.some((entry) => entry.userId === presence.userId)) return;
    this.#known.set(presence.userId, presence);
    this.#emit(presence);
  }

  #sendState(): Promise<unknown> {
    return this.#transport.request({ type: "presence.state", id: this.#transport.nextId(), state: this.#appState });
  }

  async #subscribe(): Promise<PresenceSubscribeResult | null> {
    this.#cancelRenewal();
    const generation = ++this.#generation;
    const watch = this.#watch;
    const pushed = (this.#pushedSince = new Set());
    let result: PresenceSubscribeResult;
    try {
      result = PresenceSubscribeResult.parse(await this.#transport.request({ type: "presence.subscribe", id: this.#transport.nextId(), watch }));
    } catch (error) {
      if (generation === this.#generation) this.#retryAfter(error);
      throw error;
    }
    if (generation !== this.#generation) return result;
    this.#failures = 0;
    // A push that arrived after the subscription was sent is at least as new as the reply.
    for (const presence of result.presence) if (!pushed.has(presence.userId)) this.#apply(presence);
    for (const userId of result.refused) this.#known.delete(userId);
    if (watch.length > 0) this.#renewIn(Math.floor(result.leaseMs * 0.75));
    return result;
  }

  /**
   * A subscription failed. Rate limited: again after `retryAfterMs`. Any other refusal
   * but `validation_failed` (which the same list would get again): again with backoff.
   * Lost with the socket (no error body): at the next resume.
   */
  #retryAfter(error: unknown): void {
    const refusal = (error as MaybeRefusal).error;
    if (!refusal?.code) return;
    if (refusal.retryAfterMs !== undefined) this.#renewIn(refusal.retryAfterMs);
    else if (refusal.code !== "validation_failed") this.#renewIn(backoffMs(++this.#failures));
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
