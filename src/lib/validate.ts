import type { Context } from "hono";
import type { z } from "zod";
import { AppError, validationError } from "./app-error.ts";

/** Reads a JSON body and validates it: 415 without JSON, 400 for bad JSON or fields. */
export async function jsonBody<Schema extends z.ZodType>(c: Context, schema: Schema): Promise<z.infer<Schema>> {
  const contentType = c.req.header("content-type") ?? "";
  if (!/^application\/json\s*(;|$)/i.test(contentType)) {
    throw new AppError("unsupported_media_type", 415, "send a JSON body with Content-Type: application/json", { retryable: false });
  }
  let raw: unknown;
  try {
    raw = await c.req.json();
  } catch {
    throw new AppError("invalid_json", 400, "the body is not valid JSON", { retryable: false });
  }
  return parseWith(schema, raw);
}

export function queryParams<Schema extends z.ZodType>(c: Context, schema: Schema): z.infer<Schema> {
  return parseWith(schema, c.req.query());
}

export function parseWith<Schema extends z.ZodType>(schema: Schema, raw: unknown): z.infer<Schema> {
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw validationError(parsed.error.issues);
  return parsed.data;
}
