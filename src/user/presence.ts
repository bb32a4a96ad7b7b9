import { describeError, log } from "../lib/log.ts";
import { Limits, type AppState, type Presence } from "../protocol/index.ts";
import type { StreamSession } from "./device-streams.ts";

/** The latest time the account was known online (ms), kept across the end of its sockets and eviction. */
const LAST_SEEN_KEY = "presence:last-seen";
/** The presence its watchers were last told (only written while someone watches). */
const TOLD_KEY = "presence:told";
/** One key per watching account: `{chatId, expiresAt}`. */
const LEASE_PREFIX = "presence:lease:";
/** Watchers told of a change at once. */
const PUSHES_AT_ONCE = 16;

type Lease = { chatId: string; expiresAt: number };
/** What a watcher may see, without the user id. */
type Seen = { online: boolean; lastSeenAt?: number };

/** What the account's presence needs from its object. */
export type PresenceAccount = {
  ctx: DurableObjectState;
  /** The account's device streams with their sessions. */
  streams(): Iterable<[WebSocket, StreamSession]>;
  saveStream(ws: WebSocket, session: StreamSession): void;
  heartbeatMs: number;
  /** False for an id with no account: nothing is stored, no one may watch. */
  exists(): boolean;
  ownId(): string;
  hidesLastSeen(): boolean;
  /** Whether the account is a member of this chat (in its own list: no chat is asked). */
  isMemberOf(chatId: string): boolean;
  /** Whether the account blocked `userId`. */
  blocks(userId: string): boolean;
  /** Makes the sweep due no later than `at`. */
  sweepBy(at: number): void;
  /** Tells a watching account of a change; false when none of its streams watches any more. */
  tell(watcherId: string, presence: Presence): Promise<boolean>;
};

/**
 * This account's presence, computed when read from its device streams: online while a
 * stream in the foreground has been heard from within 2 x HEARTBEAT_MS. Heartbeats are
 * answered by the runtime (`getWebSocketAutoResponseTimestamp`), so they never wake the
 * object; a frame or the stream's opening counts too.
 *
 * Accounts that share a chat with this one may watch it: each holds a lease (stored,
 * at most `Limits.maxPresenceWatchers`) renewed by its device about every minute. While
 * a lease lasts, every change is pushed to the watchers, at most one round every
 * `Limits.presencePushIntervalMs` (the latest presence; flips in between are not told).
 * While the account is online and watched, a sweep is due when its last fresh stream
 * would turn silent (2 x HEARTBEAT_MS after it was last heard from): it notices a stream
 * that went silent without a close, or finds it heard from since and is due again.
 * Offline, nothing could change without waking the object (a stream opening, a state
 * change, a frame), so no sweep is due: an account that is offline or nobody watches
 * gets no alarm. Ended leases are dropped when next seen.
 */
export class AccountPresence {
  readonly #account: PresenceAccount;
  /** When each stream last sent a frame, in memory (the heartbeat's time survives eviction; frames are extra). */
  readonly #lastFrameAt = new Map<WebSocket, number>();
  #leases: Map<string, Lease> | null = null;
  /** When the lease that ends first ends (Infinity: none), so ended ones are dropped without scanning them all. */
  #firstExpiry = Infinity;
  /** When the account turns offline unless heard from again (the last compute; null: offline). */
  #staleAt: number | null = null;
  #lastSeen: number | null | undefined;
  /** What watchers were last told, or last computed when none watches (undefined: unknown yet). */
  #told: Seen | null | undefined;
  /** What the push in flight carries; one round at a time, so watchers get changes in order. */
  #pushing: Promise<void> | null = null;
  #sent: Seen | null = null;
  /** When the last push round started. */
  #lastRoundAt = 0;

  constructor(account: PresenceAccount) {
    this.#account = account;
  }

  /** A frame arrived on a stream. */
  heard(ws: WebSocket, now: number): void {
    this.#lastFrameAt.set(ws, now);
    // Watchers were told offline, and no sweep looks any more: a frame from a stream found
    // silent (or in the background) may be news.
    if (this.#loadLeases().size > 0 && this.#loadTold()?.online === false) this.#evaluate(now);
  }

  /** A stream opened (or a socket was closed by the server: the count changed). */
  changed(now = Date.now()): void {
    this.#evaluate(now);
  }

  /** The app of one stream went to the foreground or the background. */
  setAppState(ws: WebSocket, state: AppState, now = Date.now()): AppState {
    const session = [...this.#account.streams()].find(([socket]) => socket === ws)?.[1];
    if (!session) return state;
    if (session.appState === state) return state;
    if (session.appState === "foreground") this.#recordSeen(this.#seenWhenLeaving(ws, session, now));
    this.#account.saveStream(ws, { ...session, appState: state });
    this.#lastFrameAt.set(ws, now);
    this.#evaluate(now);
    return state;
  }

  /** A stream ended (closed, failed); `session` is its state if it was still tracked. */
  ended(ws: WebSocket, session: StreamSession | undefined, now = Date.now()): void {
    if (session?.appState === "foreground") this.#recordSeen(this.#seenWhenLeaving(ws, session, now));
    // Closed by the server before (revoked, replaced): it may have been the one online.
    else if (!session && this.#loadTold()?.online) this.#recordSeen(now);
    this.#lastFrameAt.delete(ws);
    this.#evaluate(now);
  }

  /** This account blocked `userId`: a lease it holds ends now, so nothing more is pushed to it. */
  blocked(userId: string): void {
    this.#dropLease(userId);
  }

  /** A setting that changes what watchers see (hiding last seen) changed. */
  settingsChanged(now = Date.now()): void {
    this.#evaluate(now);
  }

  /**
   * Another account (`watcherId`) asks, naming the chat they share: this account's
   * presence, or null when it may not see it (not a member of that chat here, blocked,
   * no account, itself). With `lease`, its changes are pushed to the watcher until the
   * lease ends. Nothing is stored for a refusal.
   */
  presenceFor(watcherId: string, chatId: string, lease: boolean, now = Date.now()): Presence | null {
    const account = this.#account;
    if (!account.exists() || watcherId === account.ownId() || !account.isMemberOf(chatId) || account.blocks(watcherId)) return null;
    const seen = this.#evaluate(now);
    if (lease) this.#lease(watcherId, chatId, now);
    return { userId: account.ownId(), ...seen };
  }

  /**
   * The sweep: drops ended leases, tells watchers of a stream gone silent, and is due
   * again only while the account is online and watched (see `#evaluate`).
   */
  async sweep(now = Date.now()): Promise<void> {
    if (!this.#account.exists()) return;
    // Nobody watches: no alarm until someone does.
    if (this.#pruneLeases(now) === 0) return;
    this.#evaluate(now);
    await this.#pushing;
  }

  // ---- Computing ----

  /** When a stream was last heard from: a heartbeat, a frame, or its opening. */
  #aliveAt(ws: WebSocket, session: StreamSession): number {
    let heartbeat = 0;
    try {
      heartbeat = this.#account.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0;
    } catch {
      // A socket already gone has no timestamp to give.
    }
    return Math.max(session.openedAt, heartbeat, this.#lastFrameAt.get(ws) ?? 0);
  }

  #fresh(alive: number, now: number): boolean {
    return now - alive < 2 * this.#account.heartbeatMs;
  }

  /** The last seen time of a foreground stream that leaves (closes, goes background): now if it was online, else when it was last heard. */
  #seenWhenLeaving(ws: WebSocket, session: StreamSession, now: number): number {
    const alive = this.#aliveAt(ws, session);
    return this.#fresh(alive, now) ? now : alive;
  }

  /**
   * Online (and until when, unless heard from again: `staleAt`), or offline since when
   * (stored, or a silent foreground stream's last heartbeat).
   */
  #compute(now: number): { online: boolean; lastSeenAt: number | null; staleAt: number | null } {
    let staleAt: number | null = null;
    let lastSeenAt = this.#storedLastSeen();
    for (const [ws, session] of this.#account.streams()) {
      if (session.appState !== "foreground") continue;
      const alive = this.#aliveAt(ws, session);
      if (this.#fresh(alive, now)) staleAt = Math.max(staleAt ?? 0, alive + 2 * this.#account.heartbeatMs);
      else lastSeenAt = Math.max(lastSeenAt ?? 0, alive);
    }
    return { online: staleAt !== null, lastSeenAt, staleAt };
  }

  /**
   * Computes the presence now and, when what watchers see changed, tells them (only
   * while someone watches). Offline since a silent stream's last heartbeat stores that
   * time, so it outlives the socket. (A stream that closes or goes to the background
   * stores its own time first, see `ended` and `setAppState`.) While the account is
   * online and watched, the sweep is due when it would turn offline.
   */
  #evaluate(now: number): Seen {
    const computed = this.#compute(now);
    this.#staleAt = computed.staleAt;
    if (!computed.online && computed.lastSeenAt !== null) this.#recordSeen(computed.lastSeenAt);
    const seen: Seen =
      computed.online || computed.lastSeenAt === null || this.#account.hidesLastSeen() ? { online: computed.online } : { online: false, lastSeenAt: computed.lastSeenAt };
    const watched = this.#pruneLeases(now) > 0;
    const before = this.#loadTold();
    if (before === null || !sameSeen(before, seen)) {
      this.#told = seen;
      if (watched) {
        this.#account.ctx.storage.kv.put(TOLD_KEY, seen);
        this.#push();
      }
    }
    if (watched) this.#armSweep();
    return seen;
  }

  /** Only a fresh stream can go silent unseen: while one is, the sweep is due when the last would be stale. */
  #armSweep(): void {
    if (this.#staleAt !== null) this.#account.sweepBy(this.#staleAt);
  }

  #storedLastSeen(): number | null {
    if (this.#lastSeen === undefined) this.#lastSeen = this.#account.exists() ? (this.#account.ctx.storage.kv.get<number>(LAST_SEEN_KEY) ?? null) : null;
    return this.#lastSeen;
  }

  #recordSeen(at: number): void {
    if (!this.#account.exists()) return;
    if (at <= (this.#storedLastSeen() ?? 0)) return;
    this.#lastSeen = at;
    this.#account.ctx.storage.kv.put(LAST_SEEN_KEY, at);
  }

  #loadTold(): Seen | null {
    if (this.#told === undefined) this.#told = this.#account.exists() ? (this.#account.ctx.storage.kv.get<Seen>(TOLD_KEY) ?? null) : null;
    return this.#told;
  }

  #forgetTold(): void {
    this.#sent = null;
    if (this.#account.ctx.storage.kv.get(TOLD_KEY) !== undefined) this.#account.ctx.storage.kv.delete(TOLD_KEY);
  }

  // ---- Leases ----

  #loadLeases(): Map<string, Lease> {
    if (this.#leases) return this.#leases;
    this.#leases = new Map();
    if (!this.#account.exists()) return this.#leases;
    for (const [key, lease] of this.#account.ctx.storage.kv.list<Lease>({ prefix: LEASE_PREFIX })) {
      this.#leases.set(key.slice(LEASE_PREFIX.length), lease);
      this.#firstExpiry = Math.min(this.#firstExpiry, lease.expiresAt);
    }
    return this.#leases;
  }

  /** Drops the leases that ended (forgetting what watchers were told when none is left); returns how many last. */
  #pruneLeases(now: number): number {
    const leases = this.#loadLeases();
    if (this.#firstExpiry > now) return leases.size;
    this.#firstExpiry = Infinity;
    for (const [watcherId, lease] of leases) {
      if (lease.expiresAt <= now) this.#dropLease(watcherId);
      else this.#firstExpiry = Math.min(this.#firstExpiry, lease.expiresAt);
    }
    if (leases.size === 0) this.#forgetTold();
    return leases.size;
  }

  #lease(watcherId: string, chatId: string, now: number): void {
    const leases = this.#loadLeases();
    if (!leases.has(watcherId) && leases.size >= Limits.maxPresenceWatchers) {
      // Bounded: the lease that ends first makes room (its watcher renews, or has gone).
      let first: [string, Lease] | null = null;
      for (const entry of leases) if (!first || entry[1].expiresAt < first[1].expiresAt) first = entry;
      if (first) this.#dropLease(first[0]);
    }
    const lease: Lease = { chatId, expiresAt: now + Limits.presenceLeaseMs };
    if (leases.size === 0) {
      // The first watcher was just told what was computed now: changes are measured from it.
      const told = this.#told ?? null;
      this.#sent = told;
      if (told) this.#account.ctx.storage.kv.put(TOLD_KEY, told);
    }
    leases.set(watcherId, lease);
    this.#firstExpiry = Math.min(this.#firstExpiry, lease.expiresAt);
    this.#account.ctx.storage.kv.put(LEASE_PREFIX + watcherId, lease);
    this.#armSweep();
  }

  #dropLease(watcherId: string): void {
    if (!this.#loadLeases().delete(watcherId)) return;
    this.#account.ctx.storage.kv.delete(LEASE_PREFIX + watcherId);
  }

  // ---- Pushes ----

  /**
   * Tells every watcher the latest presence; one round at a time, then another if it
   * changed meanwhile, rounds at least `Limits.presencePushIntervalMs` apart: what
   * changed in between goes as one push of the latest presence (none if it changed back).
   */
  #push(): void {
    if (this.#pushing) return;
    this.#pushing = (async () => {
      try {
        for (;;) {
          const waitMs = this.#lastRoundAt + Limits.presencePushIntervalMs - Date.now();
          if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs));
          const seen = this.#told;
          if (!seen || (this.#sent && sameSeen(this.#sent, seen))) return;
          this.#sent = seen;
          this.#lastRoundAt = Date.now();
          await this.#pushRound({ userId: this.#account.ownId(), ...seen });
        }
      } finally {
        this.#pushing = null;
      }
    })();
  }

  async #pushRound(presence: Presence, now = Date.now()): Promise<void> {
    const account = this.#account;
    // Checked on this side at each push: a chat this account left shows it to no one any more.
    const member = new Map<string, boolean>();
    const isMember = (chatId: string) => member.get(chatId) ?? member.set(chatId, account.isMemberOf(chatId)).get(chatId)!;
    const due = [...this.#loadLeases()].filter(([, lease]) => lease.expiresAt > now && isMember(lease.chatId));
    let next = 0;
    const worker = async () => {
      while (next < due.length) {
        const [watcherId, lease] = due[next++]!;
        try {
          const watching = await account.tell(watcherId, presence);
          // No stream of the watcher watches any more: no more pushes (unless it renewed meanwhile).
          if (!watching && this.#leases?.get(watcherId)?.expiresAt === lease.expiresAt) this.#dropLease(watcherId);
        } catch (error) {
          log.warn("a presence push failed", { watcherId, ...describeError(error) });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(PUSHES_AT_ONCE, due.length) }, worker));
  }
}

function sameSeen(a: Seen, b: Seen): boolean {
  return a.online === b.online && a.lastSeenAt === b.lastSeenAt;
}
