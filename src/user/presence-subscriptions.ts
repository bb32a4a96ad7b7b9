import { AppError } from "../lib/app-error.ts";
import { describeError, log } from "../lib/log.ts";
import { TokenBuckets } from "../lib/token-buckets.ts";
import { Limits, type Presence, type PresenceSubscribeResult, type PresenceWatch } from "../protocol/index.ts";
import { sendFrame } from "../sockets/socket-io.ts";
import type { StreamSession } from "./device-streams.ts";

/** Accounts asked at once for one subscription. */
const ASKS_AT_ONCE = 16;

/** What the watching side needs from its account. */
export type PresenceWatcher = {
  streams(): Iterable<[WebSocket, StreamSession]>;
  session(ws: WebSocket): StreamSession | undefined;
  saveStream(ws: WebSocket, session: StreamSession): void;
  ownId(): string;
  hidesLastSeen(): boolean;
  /** Whether the account is a member of this chat (in its own list: no chat is asked). */
  isMemberOf(chatId: string): boolean;
  /** Whether an id was issued by this server (a made-up one wakes no object). */
  isIssuedUserId(userId: string): Promise<boolean>;
  /** Asks the watched account (which checks the chat on its side) for its presence and a lease; null: refused. */
  watch(userId: string, chatId: string): Promise<Presence | null>;
};

/**
 * The people each of the account's streams watches (`presence.subscribe`): kept in the
 * stream's attachment with the end of its lease, so a change pushed by a watched
 * account goes only to the streams watching it, also after an eviction.
 */
export class PresenceSubscriptions {
  readonly #account: PresenceWatcher;
  /** Subscriptions per device: each asks up to 64 accounts. */
  readonly #budget = new TokenBuckets(Limits.presenceSubscribesPerMinute / 60, Limits.presenceSubscribeBurst);
  /** Counts each socket's subscriptions: an older one still asking does not overwrite a newer one. */
  readonly #generation = new Map<WebSocket, number>();

  constructor(account: PresenceWatcher) {
    this.#account = account;
  }

  /**
   * Replaces the stream's watch list. Each listed user is asked only when the chat named
   * with them is one the account is a member of, and then refuses unless it is a member
   * of it too. Refused users are not watched; nothing is stored for them.
   */
  async subscribe(ws: WebSocket, watch: PresenceWatch[], now = Date.now()): Promise<PresenceSubscribeResult> {
    const account = this.#account;
    const session = account.session(ws);
    if (!session) throw new AppError("validation_failed", 400, "this stream is closing", { retryable: false });
    const waitMs = this.#budget.waitMs(session.deviceId, now);
    if (waitMs > 0) throw new AppError("rate_limited", 429, "presence subscriptions too often: wait, then send it again", { retryAfterMs: waitMs });
    this.#budget.take(session.deviceId, now);

    const unique = [...new Map(watch.map((entry) => [entry.userId, entry])).values()];
    const generation = (this.#generation.get(ws) ?? 0) + 1;
    this.#generation.set(ws, generation);
    const watchUntil = now + Limits.presenceLeaseMs;
    // Watching from now: a change pushed while the accounts are asked is not missed.
    account.saveStream(ws, { ...session, watching: unique, watchUntil });

    const presence: Presence[] = [];
    const refused: string[] = [];
    const kept: PresenceWatch[] = [];
    let next = 0;
    const worker = async () => {
      while (next < unique.length) {
        const entry = unique[next++]!;
        const allowed = entry.userId !== account.ownId() && account.isMemberOf(entry.chatId) && (await account.isIssuedUserId(entry.userId));
        if (!allowed) {
          refused.push(entry.userId);
          continue;
        }
        try {
          const answer = await account.watch(entry.userId, entry.chatId);
          if (answer) {
            presence.push(answer);
            kept.push(entry);
          } else refused.push(entry.userId);
        } catch (error) {
          // Not a refusal: that account could not answer now; the next renewal asks again.
          log.warn("a presence subscription could not ask an account", { userId: entry.userId, ...describeError(error) });
          kept.push(entry);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(ASKS_AT_ONCE, unique.length) }, worker));

    const current = account.session(ws);
    if (current && this.#generation.get(ws) === generation) account.saveStream(ws, { ...current, watching: kept, watchUntil });
    const hides = account.hidesLastSeen();
    return { presence: presence.map((p) => visible(p, hides)), refused, leaseMs: Limits.presenceLeaseMs };
  }

  /**
   * A watched account's presence changed: to the streams watching it, through a chat
   * this account is still a member of (one it left shows no one). False when none does.
   */
  deliver(presence: Presence, now = Date.now()): boolean {
    let told = false;
    let frame: Presence | null = null;
    const member = new Map<string, boolean>();
    const isMember = (chatId: string) => member.get(chatId) ?? member.set(chatId, this.#account.isMemberOf(chatId)).get(chatId)!;
    for (const [ws, session] of this.#account.streams()) {
      if (session.watchUntil <= now || !session.watching.some((entry) => entry.userId === presence.userId && isMember(entry.chatId))) continue;
      frame ??= visible(presence, this.#account.hidesLastSeen());
      sendFrame(ws, { type: "presence", presence: frame });
      told = true;
    }
    return told;
  }

  /** A stream ended. */
  forget(ws: WebSocket): void {
    this.#generation.delete(ws);
  }
}

/** An account that hides its own last seen sees no one's. */
function visible(presence: Presence, watcherHidesLastSeen: boolean): Presence {
  if (!watcherHidesLastSeen || presence.lastSeenAt === undefined) return presence;
  return { userId: presence.userId, online: presence.online };
}
