import type { z } from "zod";
import { AppError, validationError } from "../lib/app-error.ts";
import { TokenBuckets } from "../lib/token-buckets.ts";
import { failureOf } from "../lib/failure.ts";
import type { Outcome } from "../lib/result.ts";
import { CloseCode } from "../protocol/close-codes.ts";
import type { ErrorBody } from "../protocol/index.ts";
import type { SocketAttachments, SocketSession } from "./attachments.ts";
import { closeQuietly, sendErrorFrame, sendFrame } from "./socket-io.ts";

/** Answers a client frame; called exactly once, possibly after the frame's turn (sends). */
export type Respond<T> = (outcome: Outcome<T>) => void;

type TypedFrame = { type: string; id: string };

/**
 * One handler per client frame type (a frame type without a handler fails to compile).
 * A handler gets the narrow context its object gives it, never the object itself: a
 * public method of a Durable Object can be called by anyone holding a stub, over RPC.
 */
export type CommandTable<Context, Session, Frame extends TypedFrame> = {
  [K in Frame["type"]]: (context: Context, ws: WebSocket, session: Session, frame: Extract<Frame, { type: K }>, respond: Respond<unknown>) => void;
};

type FrameUnion = z.ZodType & { options: readonly z.ZodType[] };

export type FrameDispatchOptions<Context, Session extends SocketSession, Frame extends TypedFrame> = {
  /** The discriminated union of client frames (each option an object with a literal `type`). */
  frames: FrameUnion;
  commands: CommandTable<Context, Session, Frame>;
  context: Context;
  sessions: SocketAttachments<Session>;
  maxFrameBytes: number;
  /** Named in logs when a handler fails unexpectedly. */
  object: string;
  /** Frames a device may send per second (a token bucket per device, `burst` deep); beyond it frames are answered `rate_limited`. */
  frameRate?: {
    perSecond: number;
    burst: number;
    /** Frame types the budget does not count (they have limits of their own, such as sends on a chat socket). */
    unmetered?: readonly Frame["type"][];
  };
};

/**
 * A client frame from text to handler, the same for every object that holds sockets:
 * the session is looked up (an expired token closes the socket), the text is checked
 * (JSON, size), parsed with the schema of its `type` only, and the handler's outcome
 * or error becomes a reply. A frame that cannot be answered by id gets an error frame.
 * Nothing a client sends can throw out of here or disturb another socket.
 */
export class FrameDispatcher<Context, Session extends SocketSession, Frame extends TypedFrame> {
  readonly #options: FrameDispatchOptions<Context, Session, Frame>;
  // Maps, not plain objects: a frame `type` such as `constructor` or `__proto__` must
  // not find what every object inherits.
  readonly #schemas: ReadonlyMap<string, z.ZodType>;
  readonly #frameBudget: TokenBuckets | null;

  constructor(options: FrameDispatchOptions<Context, Session, Frame>) {
    this.#options = options;
    this.#frameBudget = options.frameRate ? new TokenBuckets(options.frameRate.perSecond, options.frameRate.burst) : null;
    this.#schemas = new Map(
      options.frames.options.map((option) => [String((option as unknown as { shape: { type: { value: string } } }).shape.type.value), option]),
    );
  }

  receive(ws: WebSocket, message: string | ArrayBuffer, now = Date.now()): void {
    const { sessions, maxFrameBytes } = this.#options;
    const session = sessions.get(ws);
    if (!session) return closeQuietly(ws, CloseCode.tryAgain, "unknown session");
    // A socket lives as long as the token it opened with; the client resumes with a new one.
    if (session.expiresAt <= now) return sessions.expire(ws);
    if (typeof message !== "string") {
      return sendErrorFrame(ws, { code: "binary_not_supported", message: "frames are JSON text", retryable: false });
    }
    if (message.length > maxFrameBytes) {
      return sendErrorFrame(ws, { code: "too_large", message: `frames are at most ${maxFrameBytes} bytes`, retryable: false });
    }
    let raw: unknown;
    try {
      raw = JSON.parse(message);
    } catch {
      return sendErrorFrame(ws, { code: "invalid_json", message: "the frame is not JSON", retryable: false });
    }
    const fields = typeof raw === "object" && raw !== null ? (raw as Record<string, unknown>) : {};
    const id = typeof fields.id === "string" ? fields.id : null;
    const type = "type" in fields ? String(fields.type) : "(none)";
    // Dispatch on `type` first: parsing one frame schema is much cheaper than the union.
    const schema = this.#schemas.get(type);
    const parsed = (schema ?? this.#options.frames).safeParse(raw);
    if (!parsed.success) {
      const error = schema ? validationError(parsed.error.issues).toBody() : unknownFrame(type);
      return id === null ? sendErrorFrame(ws, error) : sendFrame(ws, { type: "reply", id, ok: false, error });
    }
    const frame = parsed.data as Frame;
    const respond: Respond<unknown> = (outcome) =>
      sendFrame(ws, outcome.ok ? { type: "reply", id: frame.id, ok: true, result: outcome.value } : { type: "reply", id: frame.id, ok: false, error: outcome.error });
    if (this.#frameBudget && !this.#options.frameRate?.unmetered?.includes(frame.type)) {
      const waitMs = this.#frameBudget.waitMs(session.deviceId, now);
      if (waitMs > 0) return respond(failureOf(new AppError("rate_limited", 429, "too many frames: slow down", { retryAfterMs: waitMs })));
      this.#frameBudget.take(session.deviceId, now);
    }
    try {
      const handler = this.#options.commands[frame.type as Frame["type"]] as (
        context: Context,
        ws: WebSocket,
        session: Session,
        frame: Frame,
        respond: Respond<unknown>,
      ) => void;
      handler(this.#options.context, ws, session, frame, respond);
    } catch (error) {
      respond(failureOf(error, { object: this.#options.object, frame: frame.type }));
    }
  }
}

function unknownFrame(type: string): ErrorBody {
  return { code: "unknown_frame", message: `unknown frame type ${type.slice(0, 40)}`, retryable: false };
}
