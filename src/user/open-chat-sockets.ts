/**
 * The chats on which each device opened a socket recently enough that the socket can
 * still be open. A chat socket closes when the access token it opened with expires, so
 * an entry lasts until that expiry. Revoking a device then asks only those chats to
 * close its sockets: one call per chat the device had open within a token's lifetime
 * (usually none or a few), not one per chat of the account.
 *
 * Kept in the object's key-value storage, one key per device, written with
 * `allowUnconfirmed`: a plain write would hold the upgrade's answer until it is
 * durable (the output gate), for a record that only speeds up a revocation. (A timer
 * does not do: one set while answering an RPC did not fire once the call returned.)
 * If the object dies before the write lands, the socket still closes when its token
 * expires.
 */
const KEY_PREFIX = "openChatSockets:";
/** Chats remembered per device; beyond it, revocation falls back to every chat. */
const MAX_CHATS_PER_DEVICE = 1024;
/** An open is written again only when it extends the stored expiry by this much. */
const REWRITE_AFTER_MS = 60_000;

/** `overflowUntil`: after too many chats, every chat is asked until the last listed token expires. */
type DeviceEntry = { chats: Record<string, number>; overflowUntil: number };

export class OpenChatSockets {
  readonly #storage: DurableObjectStorage;
  readonly #entries = new Map<string, DeviceEntry>();

  constructor(storage: DurableObjectStorage) {
    this.#storage = storage;
  }

  /** A socket of `deviceId` opened on `chatId` with a token valid until `expiresAt` (ms). */
  record(deviceId: string, chatId: string, expiresAt: number, now: number): void {
    const entry = this.#entry(deviceId);
    const known = entry.chats[chatId] ?? 0;
    if (known >= expiresAt - REWRITE_AFTER_MS) return;
    for (const [id, until] of Object.entries(entry.chats)) if (until <= now) delete entry.chats[id];
    entry.chats[chatId] = expiresAt;
    if (Object.keys(entry.chats).length > MAX_CHATS_PER_DEVICE) {
      entry.overflowUntil = Math.max(entry.overflowUntil, ...Object.values(entry.chats));
      entry.chats = {};
    }
    void this.#storage.put(KEY_PREFIX + deviceId, entry, { allowUnconfirmed: true });
  }

  /** The chats where the device may still have a socket; null when too many to list (ask every chat). */
  chatsOf(deviceId: string, now: number): string[] | null {
    const entry = this.#entry(deviceId);
    if (entry.overflowUntil > now) return null;
    return Object.entries(entry.chats)
      .filter(([, until]) => until > now)
      .map(([chatId]) => chatId);
  }

  /** Forgets a revoked device. */
  forget(deviceId: string): void {
    this.#entries.delete(deviceId);
    this.#storage.kv.delete(KEY_PREFIX + deviceId);
  }

  #entry(deviceId: string): DeviceEntry {
    let entry = this.#entries.get(deviceId);
    if (!entry) {
      entry = this.#storage.kv.get<DeviceEntry>(KEY_PREFIX + deviceId) ?? { chats: {}, overflowUntil: 0 };
      this.#entries.set(deviceId, entry);
    }
    return entry;
  }
}
