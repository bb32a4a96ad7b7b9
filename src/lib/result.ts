import { AppError } from "./app-error.ts";
import { failureOf, type Failure } from "./failure.ts";

/**
 * What a Durable Object RPC method returns when it can fail in an expected way.
 * Thrown errors lose their class across RPC, so expected failures travel as data
 * and the caller rethrows them with `unwrap`.
 */
export type Outcome<T> = { ok: true; value: T } | Failure;

export function succeed<T>(value: T): Outcome<T> {
  return { ok: true, value };
}

/** Runs `work`, turning a thrown AppError into a failed Outcome (anything else still throws). */
export function attempt<T>(work: () => T): Outcome<T> {
  try {
    return succeed(work());
  } catch (error) {
    if (error instanceof AppError) return failureOf(error);
    throw error;
  }
}

export function unwrap<T>(outcome: Outcome<T>): T {
  if (outcome.ok) return outcome.value;
  throw AppError.fromBody(outcome.error, outcome.status);
}
