import type { DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import { migrate } from "drizzle-orm/durable-sqlite/migrator";

type MigrationBundle = Parameters<typeof migrate>[1] & { journal: { entries: unknown[] } };

const APPLIED_KEY = "schema.migrationsApplied";

/**
 * Whether this object has ever stored its schema. Reading a key writes nothing, so
 * an object addressed by an id that does not exist can answer "not found" and leave
 * no storage behind; the schema is created by the first write that makes it exist.
 */
export function hasSchema(storage: DurableObjectStorage): boolean {
  return storage.kv.get<number>(APPLIED_KEY) !== undefined;
}

/**
 * Runs drizzle's migrator only when this object has not yet applied the newest
 * migration. Every object start (first use, or waking after eviction) runs this, so
 * a warm start with nothing to do costs one key read instead of the migrator's
 * transaction and queries.
 */
export async function applyMigrations(
  db: DrizzleSqliteDODatabase<Record<string, unknown>>,
  storage: DurableObjectStorage,
  bundle: MigrationBundle,
): Promise<void> {
  const latest = bundle.journal.entries.length;
  if (storage.kv.get<number>(APPLIED_KEY) === latest) return;
  await migrate(db, bundle);
  storage.kv.put(APPLIED_KEY, latest);
}
