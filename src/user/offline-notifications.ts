import type { Undelivered } from "../chat-room/undelivered.ts";
import type { NotifySettings } from "../lib/config.ts";
import { randomId } from "../lib/crypto.ts";
import { describeError, log } from "../lib/log.ts";
import type { Outcome } from "../lib/result.ts";
import { postSignedWebhook } from "../lib/webhook.ts";
import type { ChatIndexUpdate, ChatSummary, UndeliveredWebhook } from "../protocol/index.ts";

const KEY_PREFIX = "notify:";
/** Chats with a record at most: a record is a few numbers, so this bounds the account's storage and memory. */
export const MAX_NOTIFY_CHATS = 1_000;
/** Chats looked at per alarm, and at once: more wait for the next alarm, set at once. */
const CHECKS_PER_RUN = 64;
const CHECKS_AT_ONCE = 8;
/**
 * A webhook is POSTed at most this many times per notification, with full-jitter
 * exponential backoff from 1 s up to 5 min apart (about 10 minutes in all), or after
 * the receiver's `Retry-After` when it sends one (at most an hour).
 */
export const MAX_ATTEMPTS = 8;
const FIRST_BACKOFF_MS = 1_000;
const MAX_BACKOFF_MS = 5 * 60_000;
const MAX_RETRY_AFTER_MS = 3_600_000;
/**
 * A look is never planned sooner than this after the account heard of the message (a
 * busy chat's list can hear late, near or past the delay: its online devices still get
 * time to report), and is spread by up to `LOOK_JITTER_MS` so that the members of a big
 * group do not all ask their chat at the same moment.
 */
const MIN_NOTICE_MS = 1_000;
const LOOK_JITTER_MS = 1_000;
/** When the chat could not be asked (a failed call): look again this much later. */
const RECHECK_AFTER_FAILURE_MS = 30_000;

/** One chat's notification state, in the account's key-value storage under `notify:<chatId>`. */
type NotifyRecord = {
  /** When to ask the chat what is undelivered; null: nothing planned. */
  dueAt: number | null;
  /** The latest message already dealt with (notified, or found delivered, muted or part of a notified burst): messages up to it plan nothing. */
  handledSeq: number;
  /** The latest message of the last notification sent (or given up): its burst lasts until the devices have it. 0: none. */
  notifiedSeq: number;
  /** The notification being tried (kept across its retries) and the attempts made so far. */
  notificationId: string | null;
  attempts: number;
};

export type OfflineNotificationsDeps = {
  storage: DurableObjectStorage;
  /** Null when no webhook URL is configured: then nothing is stored or scheduled. */
  settings: NotifySettings | null;
  userId: () => string;
  /** The account's chat-list entry (its own settings: muted). */
  entry: (chatId: string) => ChatSummary | null;
  /** Asks the chat what has reached no device of this account. */
  undelivered: (chatId: string) => Promise<Outcome<Undelivered>>;
  /** Makes the object's `offline-notifications` deadline due no later than `at`. */
  schedule: (at: number) => void;
};

const muted = (entry: ChatSummary | null, now: number) => (entry?.mutedUntil ?? 0) > now;

/**
 * Offline notifications for a push bridge (FCM, APNs…): when messages from others
 * have reached no device of this account NOTIFY_AFTER_MS after they were sent, the
 * account POSTs one signed webhook per chat and burst (docs/protocol.md, "Offline
 * notifications"). Driven by the chat-list fan-out (`chatChanged` plans a look at the
 * chat) and the object's scheduler (`run` asks the chat and POSTs).
 *
 * A burst: after a notification, further messages of that chat notify again only once
 * the account's devices have caught up to what was notified, and newer ones then stay
 * undelivered for the delay again.
 */
export class OfflineNotifications {
  readonly #deps: OfflineNotificationsDeps;
  /** The records, read from storage on first use. */
  #loaded: Map<string, NotifyRecord> | null = null;
  /** Chats whose check is awaiting the chat or the webhook. */
  readonly #inFlight = new Set<string>();
  #warnedFull = false;

  constructor(deps: OfflineNotificationsDeps) {
    this.#deps = deps;
  }

  /**
   * A chat's news reached the account's list (`entry`: the list's entry after it, null
   * when the update was stale). A newer message from someone else than any dealt with
   * plans a look at the chat `afterMs` after that message was sent; while one is
   * planned, later messages change nothing (the look sees them). Synchronous and
   * without a write in the common cases: it runs on every fan-out call.
   */
  chatChanged(update: ChatIndexUpdate, entry: ChatSummary | null, now: number): void {
    const settings = this.#deps.settings;
    if (!settings) return;
    if (update.membership !== "member") {
      this.#delete(update.chatId);
      return;
    }
    const last = update.lastMessage;
    if (!entry || !last || last.senderId === this.#deps.userId() || muted(entry, now)) return;
    const records = this.#records();
    const record = records.get(update.chatId);
    // A look already planned is due again (a no-op unless its deadline was lost, say when
    // the object was reset in the middle of a look: the record then heals here).
    if (record?.dueAt !== null && record?.dueAt !== undefined) {
      // While the look runs its deadline is gone on purpose: the run sets the next one.
      if (!this.#inFlight.has(update.chatId)) this.#deps.schedule(record.dueAt);
      return;
    }
    if (record && last.seq <= record.handledSeq) return;
    if (!record && !this.#makeRoom()) return;
    const dueAt = Math.max(last.createdAt + settings.afterMs, now + MIN_NOTICE_MS) + Math.floor(Math.random() * LOOK_JITTER_MS);
    this.#write(update.chatId, { handledSeq: 0, notifiedSeq: 0, notificationId: null, attempts: 0, ...record, dueAt });
    this.#deps.schedule(dueAt);
  }

  /** The deadline: looks at every chat due (up to a batch), then sets the deadline to the next. */
  async run(now: number): Promise<void> {
    const settings = this.#deps.settings;
    if (!settings) {
      // The URL was removed: what was stored for it goes.
      for (const chatId of [...this.#records().keys()]) this.#delete(chatId);
      return;
    }
    const due = [...this.#records()]
      .filter(([chatId, record]) => record.dueAt !== null && record.dueAt <= now && !this.#inFlight.has(chatId))
      .sort(([, a], [, b]) => a.dueAt! - b.dueAt!)
      .slice(0, CHECKS_PER_RUN)
      .map(([chatId]) => chatId);
    for (let start = 0; start < due.length; start += CHECKS_AT_ONCE) {
      await Promise.all(due.slice(start, start + CHECKS_AT_ONCE).map((chatId) => this.#check(chatId, settings)));
    }
    let next: number | null = null;
    for (const record of this.#records().values()) {
      if (record.dueAt !== null && (next === null || record.dueAt < next)) next = record.dueAt;
    }
    if (next !== null) this.#deps.schedule(next);
  }

  /** Chats with a notification planned or being retried (for tests and logs). */
  pending(): string[] {
    if (!this.#deps.settings) return [];
    return [...this.#records()].filter(([, record]) => record.dueAt !== null).map(([chatId]) => chatId);
  }

  async #check(chatId: string, settings: NotifySettings): Promise<void> {
    this.#inFlight.add(chatId);
    try {
      await this.#checkChat(chatId, settings);
    } catch (error) {
      log.warn("offline notification check failed; retrying later", { chatId, ...describeError(error) });
      this.#update(chatId, (record) => ({ ...record, dueAt: Date.now() + RECHECK_AFTER_FAILURE_MS }));
    } finally {
      this.#inFlight.delete(chatId);
    }
  }

  async #checkChat(chatId: string, settings: NotifySettings): Promise<void> {
    const outcome = await this.#deps.undelivered(chatId);
    // Other calls ran during the await: read the record again.
    const record = this.#records().get(chatId);
    if (!record || record.dueAt === null) return;
    if (!outcome.ok) {
      if (outcome.error.code === "not_a_member" || outcome.error.code === "chat_not_found") this.#delete(chatId);
      else this.#write(chatId, { ...record, dueAt: Date.now() + RECHECK_AFTER_FAILURE_MS });
      return;
    }
    const { reachedSeq, count, latest, oldestAt } = outcome.value;
    // A device has everything: any burst is over, and there is nothing to keep.
    if (count === 0 || !latest) return this.#delete(chatId);
    const now = Date.now();
    // The first undelivered message is younger than the delay (it came after the look was
    // planned, after earlier ones reached a device): look again when it is old enough.
    const oldEnoughAt = (oldestAt ?? latest.createdAt) + settings.afterMs;
    if (record.notificationId === null && oldEnoughAt > now) {
      this.#write(chatId, { ...record, dueAt: oldEnoughAt });
      return;
    }
    const sameBurst = record.notifiedSeq > reachedSeq;
    if (sameBurst || muted(this.#deps.entry(chatId), now)) {
      this.#write(chatId, { ...record, dueAt: null, handledSeq: latest.seq, notificationId: null, attempts: 0 });
      return;
    }
    const attempts = record.attempts + 1;
    const notificationId = record.notificationId ?? randomId("n");
    const body: UndeliveredWebhook = {
      type: "messages.undelivered",
      notificationId,
      userId: this.#deps.userId(),
      chatId,
      senderId: latest.senderId,
      count,
      seq: latest.seq,
      at: latest.createdAt,
      sentAt: now,
    };
    // Stored before the POST leaves (the output gate holds it until this is durable):
    // a retry after a crash carries the same id, so the receiver can drop a repeat.
    this.#write(chatId, { ...record, attempts, notificationId });
    const result = await postSignedWebhook(settings.webhookUrl, settings.webhookSecret, JSON.stringify(body), now);
    if (result.kind === "retry" && attempts < MAX_ATTEMPTS) {
      // Full jitter: accounts that failed together do not come back together.
      const backoff = Math.random() * Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** attempts);
      const retryAt = Date.now() + Math.max(backoff, Math.min(result.retryAfterMs ?? 0, MAX_RETRY_AFTER_MS));
      log.warn("offline notification failed; retrying", { chatId, notificationId, attempts, status: result.status });
      this.#update(chatId, (current) => ({ ...current, dueAt: retryAt }));
      return;
    }
    if (result.kind !== "delivered") {
      // Given up: the burst counts as notified, so a broken bridge is not called per message.
      log.error("offline notification dropped", { chatId, notificationId, attempts, status: result.status });
    }
    this.#update(chatId, (current) => ({ ...current, dueAt: null, handledSeq: latest.seq, notifiedSeq: latest.seq, notificationId: null, attempts: 0 }));
  }

  /**
   * Room for one more chat: at the cap, a chat with nothing planned is forgotten (at
   * worst it notifies once more for a burst it already notified). False when every
   * record is planned.
   */
  #makeRoom(): boolean {
    const records = this.#records();
    if (records.size < MAX_NOTIFY_CHATS) return true;
    for (const [chatId, record] of records) {
      if (record.dueAt === null) {
        this.#delete(chatId);
        return true;
      }
    }
    if (!this.#warnedFull) log.warn("offline notifications: too many chats pending; skipping new ones", { max: MAX_NOTIFY_CHATS });
    this.#warnedFull = true;
    return false;
  }

  /** Changes a record that still exists (a chat the account left meanwhile stays forgotten). */
  #update(chatId: string, change: (record: NotifyRecord) => NotifyRecord): void {
    const record = this.#records().get(chatId);
    if (record) this.#write(chatId, change(record));
  }

  #write(chatId: string, record: NotifyRecord): void {
    this.#records().set(chatId, record);
    this.#deps.storage.kv.put(KEY_PREFIX + chatId, record);
  }

  #delete(chatId: string): void {
    if (this.#records().delete(chatId)) this.#deps.storage.kv.delete(KEY_PREFIX + chatId);
  }

  #records(): Map<string, NotifyRecord> {
    if (this.#loaded) return this.#loaded;
    this.#loaded = new Map();
    for (const [key, record] of this.#deps.storage.kv.list<NotifyRecord>({ prefix: KEY_PREFIX })) {
      this.#loaded.set(key.slice(KEY_PREFIX.length), record);
    }
    return this.#loaded;
  }
}
