import { describeError, log } from "../lib/log.ts";
import { Limits } from "../protocol/index.ts";
import type { EventLog } from "./event-log.ts";
import type { Membership, Period } from "./membership.ts";
import { visibleAfter } from "./visible-events.ts";

/**
 * A run of a chat's events for one account's device streams: exactly the events after
 * `afterSeq` up to `lastSeq`. `final`: the run ends the account's membership, and the
 * chat pushes nothing more to it.
 */
export type StreamPush = { chatId: string; afterSeq: number; lastSeq: number; events: string[]; seqs: number[]; final: boolean };

/** A page of a chat for a device stream's catch-up. */
export type StreamPage = {
  /** The events, each as its JSON text (sent to the device as is). */
  events: string[];
  /** Where the device is after this page: the last event's seq, or the head when nothing more is visible. */
  cursor: number;
  hasMore: boolean;
  headSeq: number;
  /** Whether the chat pushes its events to the account (false for big chats and former members). */
  streamed: boolean;
};

const KEY_PREFIX = "stream:";
/** Delays before a failed push is tried again; after the last, the next commit tries again. */
const RETRY_DELAYS_MS = [100, 1_000, 5_000];

export type StreamPushesOptions = {
  storage: DurableObjectStorage;
  log: () => EventLog;
  membership: () => Membership;
  /** Delivers a push to the account's User object; false when it has no stream left (unsubscribe). */
  push: (userId: string, push: StreamPush) => Promise<boolean>;
  pageSize: number;
};

/** `epoch` counts the account's opens: an answer "no stream left" to an older push does not drop a newer subscription. */
type Subscription = { pushedSeq: number; running: boolean; epoch: number };
type Run = { lastSeq: number; events: string[]; seqs: number[] };

/**
 * The accounts with a device stream open on this chat, and the live pushes to them.
 *
 * A stream subscribes its account when it resumes (`open`, which also reads the first
 * page in the same turn). From then on every committed event is pushed to the account
 * in order: one call in flight per account, carrying everything after the last push
 * (a busy chat batches by itself), so the account sees each event once, in seq order,
 * and can tell from `afterSeq` that nothing is missing. The account answers false when
 * it has no stream left, and is dropped (unless it opened again meanwhile). A failed push
 * is tried again a few times, then by the next commit: a subscription is never dropped
 * for a failure, since the account could not tell.
 *
 * Subscriptions are stored (one key per account) so that a chat that restarts keeps
 * pushing. Where each account's pushes stopped is not stored (a write per push): a
 * restarted chat pushes again from the account's chat-list watermark (`notifiedSeq`),
 * at or before it, and the account drops what it already delivered.
 */
export class StreamPushes {
  readonly #options: StreamPushesOptions;
  #accounts: Map<string, Subscription> | null = null;
  /**
   * Runs read at the current head, by the seq they start after: members who see the
   * whole run share one read and one serialization (usually every account is pushed
   * the same run: what the last commit stored).
   */
  #run: { headSeq: number; after: number; run: Run | null } | null = null;

  constructor(options: StreamPushesOptions) {
    this.#options = options;
  }

  /**
   * A device stream resumes this chat from `after` (null: from the head, for a chat
   * new to the device). Subscribes the account if the chat is small enough and it is
   * a member, and returns the first page, read in the same turn.
   */
  open(userId: string, after: number | null): StreamPage {
    const membership = this.#options.membership();
    const headSeq = this.#options.log().headSeq;
    const periods = membership.periodsOf(userId); // not_a_member if never one
    const streamed = membership.isMember(userId) && membership.memberCount <= Limits.maxStreamedChatMembers;
    if (streamed) {
      const accounts = this.#subscriptions();
      const subscription = accounts.get(userId);
      if (subscription) subscription.epoch++;
      else {
        accounts.set(userId, { pushedSeq: headSeq, running: false, epoch: 0 });
        this.#options.storage.kv.put(KEY_PREFIX + userId, 1);
      }
    }
    if (after === null) return { events: [], cursor: headSeq, hasMore: false, headSeq, streamed };
    return { ...this.#page(periods, after), streamed };
  }

  /** The next page of a catch-up. */
  page(userId: string, after: number): StreamPage {
    const membership = this.#options.membership();
    const periods = membership.periodsOf(userId);
    return { ...this.#page(periods, after), streamed: this.#subscriptions().has(userId) };
  }

  #page(periods: readonly Period[], after: number): Omit<StreamPage, "streamed"> {
    const log = this.#options.log();
    const headSeq = log.headSeq;
    const page = visibleAfter(log, periods, after, this.#options.pageSize, Limits.maxPageBytes);
    // Decided in the turn of the read: events after `cursor` are in a later page or pushed.
    const cursor = page.hasMore ? (page.events.at(-1)?.seq ?? after) : Math.max(after, headSeq);
    return { events: page.json, cursor, hasMore: page.hasMore, headSeq };
  }

  /** The accounts subscribed to this chat's pushes (those with device streams on it). */
  subscribed(): IterableIterator<string> {
    return this.#subscriptions().keys();
  }

  /** Called after each commit: every subscribed account gets what it has not been pushed. */
  committed(): void {
    for (const [userId, subscription] of this.#subscriptions()) {
      if (!subscription.running) void this.#drain(userId, subscription);
    }
  }

  /** Pushes to one account until it has everything up to the head (one call in flight). */
  async #drain(userId: string, subscription: Subscription): Promise<void> {
    subscription.running = true;
    try {
      let failures = 0;
      while (this.#accounts?.get(userId) === subscription) {
        const push = this.#nextPush(userId, subscription.pushedSeq);
        if (push === null) {
          if (!this.#options.membership().isMember(userId)) this.#drop(userId);
          return;
        }
        const epoch = subscription.epoch;
        let keep: boolean;
        try {
          keep = await this.#options.push(userId, push);
        } catch (error) {
          const delay = RETRY_DELAYS_MS[failures++];
          if (delay === undefined) {
            log.warn("device stream pushes keep failing; the next commit tries again", { userId, ...describeError(error) });
            return;
          }
          await new Promise((resolve) => setTimeout(resolve, delay));
          continue;
        }
        failures = 0;
        subscription.pushedSeq = Math.max(subscription.pushedSeq, push.lastSeq);
        if (push.final || (!keep && subscription.epoch === epoch)) this.#drop(userId);
      }
    } finally {
      subscription.running = false;
    }
  }

  /** What the account has not been pushed, or null when it has everything it may see. */
  #nextPush(userId: string, after: number): StreamPush | null {
    const log = this.#options.log();
    const membership = this.#options.membership();
    const headSeq = log.headSeq;
    if (after >= headSeq) return null;
    const chatId = membership.requireChat().chatId;
    const current = membership.isMember(userId) ? membership.requireMember(userId) : null;
    // A chat that grew past the streamed size stops pushing: this push is the last.
    const tooBig = membership.memberCount > Limits.maxStreamedChatMembers;
    if (current && current.joinedSeq <= after + 1) {
      // A member since before `after` sees every event after it: the shared run.
      if (this.#run?.headSeq !== headSeq || this.#run.after !== after) {
        this.#run = { headSeq, after, run: this.#read([{ joinedSeq: current.joinedSeq, leftSeq: null }], after) };
      }
      const run = this.#run.run;
      return run && { chatId, afterSeq: after, ...run, final: tooBig };
    }
    const periods = membership.periodsOf(userId);
    const run = this.#read(periods, after);
    const end = current ? null : periods.at(-1)?.leftSeq;
    return run && { chatId, afterSeq: after, ...run, final: tooBig || (end !== null && end !== undefined && run.lastSeq >= end) };
  }

  #read(periods: readonly Period[], after: number): Run | null {
    const page = visibleAfter(this.#options.log(), periods, after, this.#options.pageSize, Limits.maxPageBytes);
    const last = page.events.at(-1);
    return last ? { lastSeq: last.seq, events: page.json, seqs: page.events.map((event) => event.seq) } : null;
  }

  #drop(userId: string): void {
    this.#accounts?.delete(userId);
    this.#options.storage.kv.delete(KEY_PREFIX + userId);
  }

  /**
   * Reads the stored subscriptions when the object starts, before anything is stored.
   * Each member's pushes resume after its chat-list watermark: at or before where they
   * stopped (an object that restarts mid-push loses nothing), and the account drops
   * what it already delivered.
   */
  restore(): void {
    const headSeq = this.#options.log().headSeq;
    const membership = this.#options.membership();
    this.#accounts = new Map();
    for (const [key] of this.#options.storage.kv.list({ prefix: KEY_PREFIX })) {
      const userId = key.slice(KEY_PREFIX.length);
      const from = membership.isMember(userId) ? Math.min(headSeq, membership.requireMember(userId).notifiedSeq) : headSeq;
      this.#accounts.set(userId, { pushedSeq: from, running: false, epoch: 0 });
    }
  }

  #subscriptions(): Map<string, Subscription> {
    return (this.#accounts ??= new Map());
  }
}
