import { describeError, log } from "./log.ts";

const KEY_PREFIX = "deadline:";
/** Marks a handler that started and has not finished: a run cut short (a reset) runs it again. */
const RUNNING_PREFIX = "deadline-running:";
/** A handler that threw runs again this much later. */
const RETRY_AFTER_FAILURE_MS = 30_000;

/** Runs when its deadline is due; it may schedule itself again. */
export type DeadlineHandler = (now: number) => void | Promise<void>;

/**
 * A Durable Object has one alarm; this keeps any number of named deadlines in its
 * storage (the synchronous key-value API, so a deadline set next to SQL writes commits
 * with them, alarm included) and sets the alarm to the earliest. The object's `alarm()`
 * calls `run()`. Alarms are delivered at least once and may come early or late, so
 * handlers must be idempotent; a deadline is deleted before its handler runs and set
 * again (30 s later) if the handler throws. A handler that was cut short (the object
 * reset while it awaited) is run again by the alarm's retry, from a marker written
 * with the deletion. Due handlers run concurrently, each with the time it starts, so a
 * slow one (a webhook) does not hold up another (a presence sweep).
 */
export class Scheduler<Name extends string> {
  readonly #storage: DurableObjectStorage;
  readonly #handlers: Record<Name, DeadlineHandler>;
  /** The deadlines, read from storage on first use. */
  #deadlines: Map<Name, number> | null = null;
  /** The alarm as last set by this instance (undefined: unknown, so set it). */
  #alarmAt: number | null | undefined;
  /** While handlers run: when the alarm fires at the latest (so a run cut short is retried). */
  #runningUntil: number | null = null;

  constructor(storage: DurableObjectStorage, handlers: Record<Name, DeadlineHandler>) {
    this.#storage = storage;
    this.#handlers = handlers;
  }

  /** When `name` is due, or null. */
  dueAt(name: Name): number | null {
    return this.#load().get(name) ?? null;
  }

  /**
   * Makes `name` due no later than `at` (an earlier deadline stays). Synchronous and
   * cheap when it changes nothing, so hot paths can call it on every commit.
   */
  noLaterThan(name: Name, at: number): void {
    const current = this.#load().get(name);
    if (current !== undefined && current <= at) return;
    this.#set(name, at);
  }

  /** Makes `name` due exactly at `at`. */
  at(name: Name, at: number): void {
    if (this.#load().get(name) === at) return;
    this.#set(name, at);
  }

  cancel(name: Name): void {
    if (!this.#load().delete(name)) return;
    this.#storage.kv.delete(KEY_PREFIX + name);
    this.#syncAlarm();
  }

  /**
   * The object's alarm: runs every due deadline, then sets the alarm to the next one.
   * The alarm was set for the earliest deadline, so that one runs even if the alarm
   * fires early (as when a test runs it).
   */
  async run(now = Date.now()): Promise<void> {
    const deadlines = [...this.#load()];
    const earliest = Math.min(...deadlines.map(([, at]) => at));
    const cutoff = Number.isFinite(earliest) ? Math.max(now, earliest) : now;
    const due = new Set(deadlines.filter(([, at]) => at <= cutoff).map(([name]) => name));
    // Handlers a previous run started and never finished (their deadline is gone).
    for (const [key] of this.#storage.kv.list({ prefix: RUNNING_PREFIX })) {
      const name = key.slice(RUNNING_PREFIX.length) as Name;
      if (Object.hasOwn(this.#handlers, name)) due.add(name);
      else this.#storage.kv.delete(key);
    }
    for (const name of due) {
      this.#deadlines!.delete(name);
      this.#storage.kv.delete(KEY_PREFIX + name);
      this.#storage.kv.put(RUNNING_PREFIX + name, now);
    }
    this.#alarmAt = undefined; // this alarm has fired
    this.#runningUntil = now + RETRY_AFTER_FAILURE_MS;
    this.#syncAlarm();
    await Promise.all(
      [...due].map(async (name) => {
        try {
          await this.#handlers[name](Math.max(now, Date.now()));
        } catch (error) {
          log.warn("deadline failed; retrying later", { deadline: name, ...describeError(error) });
          this.noLaterThan(name, Date.now() + RETRY_AFTER_FAILURE_MS);
        } finally {
          this.#storage.kv.delete(RUNNING_PREFIX + name);
        }
      }),
    );
    this.#runningUntil = null;
    this.#syncAlarm();
  }

  #set(name: Name, at: number): void {
    this.#deadlines!.set(name, at);
    this.#storage.kv.put(KEY_PREFIX + name, at);
    this.#syncAlarm();
  }

  #load(): Map<Name, number> {
    if (this.#deadlines) return this.#deadlines;
    this.#deadlines = new Map();
    for (const [key, at] of this.#storage.kv.list<number>({ prefix: KEY_PREFIX })) {
      this.#deadlines.set(key.slice(KEY_PREFIX.length) as Name, at);
    }
    return this.#deadlines;
  }

  /** Sets the alarm to the earliest deadline (no call when it is already there). */
  #syncAlarm(): void {
    let earliest: number | null = this.#runningUntil;
    for (const at of this.#load().values()) if (earliest === null || at < earliest) earliest = at;
    if (earliest === this.#alarmAt) return;
    this.#alarmAt = earliest;
    // Both commit with the storage writes of the same turn (no await needed).
    if (earliest === null) void this.#storage.deleteAlarm();
    else void this.#storage.setAlarm(earliest);
  }
}
