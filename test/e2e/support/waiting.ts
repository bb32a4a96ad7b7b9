import type { ChatConnection, ChatEvent, ChatSummary, ConnectionStatus, DeviceStream } from "../../../src/client/index.ts";

/** Polls `condition` until it holds, failing with `what` after `timeoutMs`. */
export async function waitFor(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Collects what a connection delivers, for assertions. */
export function record(connection: ChatConnection): { events: ChatEvent[]; statuses: ConnectionStatus[] } {
  const events: ChatEvent[] = [];
  const statuses: ConnectionStatus[] = [];
  connection.on("event", (event) => events.push(event));
  connection.on("status", (status) => statuses.push(status));
  return { events, statuses };
}

/** What a device stream delivered, in arrival order. */
export type StreamRecord = {
  /** Events per chat. */
  events: Map<string, ChatEvent[]>;
  /** Every `chat` entry. */
  chats: ChatSummary[];
  statuses: ConnectionStatus[];
  /** The final close, if any. */
  closes: { code: number; reason: string }[];
  /** The events of one chat (empty when none came). */
  of(chatId: string): ChatEvent[];
};

/** Collects what a device stream delivers, for assertions. */
export function recordStream(stream: DeviceStream): StreamRecord {
  const recorded: StreamRecord = {
    events: new Map(),
    chats: [],
    statuses: [],
    closes: [],
    of: (chatId) => recorded.events.get(chatId) ?? [],
  };
  stream.on("event", (chatId, event) => recorded.events.set(chatId, [...recorded.of(chatId), event]));
  stream.on("chat", (chat) => recorded.chats.push(chat));
  stream.on("status", (status) => recorded.statuses.push(status));
  stream.on("closed", (code, reason) => recorded.closes.push({ code, reason }));
  return recorded;
}
