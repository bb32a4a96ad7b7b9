/** Structured logs: one JSON object per line, so `wrangler tail` and Logpush can filter them. */
export type LogFields = Record<string, unknown>;

function write(level: "debug" | "info" | "warn" | "error", msg: string, fields: LogFields): void {
  const line = JSON.stringify({ level, msg, time: new Date().toISOString(), ...fields });
  if (level === "error") console.error(line);
  else if (level === "warn") console.warn(line);
  else console.log(line);
}

export const log = {
  info: (msg: string, fields: LogFields = {}) => write("info", msg, fields),
  warn: (msg: string, fields: LogFields = {}) => write("warn", msg, fields),
  error: (msg: string, fields: LogFields = {}) => write("error", msg, fields),
};

/** The parts of an unknown thrown value worth logging (never sent to clients). */
export function describeError(error: unknown): LogFields {
  if (error instanceof Error) return { error: error.message, errorName: error.name, stack: error.stack };
  return { error: String(error) };
}
