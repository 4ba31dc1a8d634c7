import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import type { EventLoopUtilization } from "node:perf_hooks";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import { auditSchema } from "../schema/audit";
import type { Step } from "./pglite-thread";

// One store, two engines: PGlite (embedded Postgres in a folder, no set-up) by default,
// real Postgres when DATABASE_URL names one. Same schema, same migrations, same queries.

export type AuditDb = PgDatabase<PgQueryResultHKT, typeof auditSchema>;

export interface AuditDatabase {
  db: AuditDb;
  /** "pglite:<folder>", "pglite:memory" or "postgres:<host>/<db>" (no credentials). */
  describe: string;
  /** PGlite only: statements run as one transaction on the database's thread, in one message (pglite-thread.ts). */
  atomically?: (steps: Step[]) => Promise<number>;
  /** PGlite only: one read in one message, rows as arrays in the statement's column order. */
  rows?: (sql: string, params: unknown[]) => Promise<unknown[][]>;
  /** PGlite only: how busy its thread has been, as performance.eventLoopUtilization (the benchmark reports it). */
  utilization?: (since?: EventLoopUtilization) => EventLoopUtilization;
  /** PGlite only: resolves with why once its thread has died and every call fails; a retry cannot help. */
  gone?: Promise<Error>;
  close(): Promise<void>;
}

export const MIGRATIONS = resolve(import.meta.dirname, "migrations");
export const DEFAULT_AUDIT_DIR = ".governor/audit";

/** The code of the error every call gets once PGlite's thread has died (pglite-thread.ts). */
export const DB_THREAD_STOPPED = "audit_db_thread_stopped";

/**
 * The error saying the store can no longer answer (its database thread died), when `e` is
 * or wraps one: every later call fails the same way. drizzle wraps a query's error
 * (DrizzleQueryError), so its causes are looked at too.
 */
export function storeGone(e: unknown): Error | undefined {
  for (let i = 0; i < 4 && e && typeof e === "object"; i++, e = (e as { cause?: unknown }).cause) {
    if ((e as { code?: unknown }).code === DB_THREAD_STOPPED) return e as Error;
  }
  return undefined;
}

export class StoreInUseError extends Error {
  readonly code = "store_in_use";
}

/**
 * PGlite is one process's database: a second process opening the same folder would
 * corrupt it. A lock file with the owner's pid refuses that, and a dead owner's lock is
 * taken over (a crashed sync must be restartable).
 */
function lockFolder(dir: string): () => void {
  const path = join(dirname(dir), `.${dir.split("/").pop()}.lock`);
  mkdirSync(dirname(path), { recursive: true });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, "wx");
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(path, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const owner = Number(readFileSync(path, "utf8").trim());
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && alive(owner)) {
        throw new StoreInUseError(
          `the audit store ${dir} is in use by process ${owner} (npm start runs the audit service and its sync); stop it, or use Postgres (DATABASE_URL) to share a store`,
        );
      }
      rmSync(path, { force: true });
    }
  }
  throw new StoreInUseError(`cannot lock the audit store ${dir}`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

export interface OpenOptions {
  /** postgres://… ; when absent, PGlite. */
  databaseUrl?: string;
  /** PGlite folder; "memory" for a throwaway in-memory store. */
  dir?: string;
}

export async function openDatabase(opts: OpenOptions = {}): Promise<AuditDatabase> {
  const url = opts.databaseUrl?.trim();
  if (url) return openPostgres(url);
  return openPglite(opts.dir ?? DEFAULT_AUDIT_DIR);
}

async function openPglite(dir: string): Promise<AuditDatabase> {
  const { PGliteThread } = await import("./pglite-thread");
  const { drizzle } = await import("drizzle-orm/pglite");
  const { migrate } = await import("drizzle-orm/pglite/migrator");
  const memory = dir === "memory";
  const folder = memory ? undefined : resolve(dir);
  const unlock = folder ? lockFolder(folder) : () => {};
  try {
    if (folder) mkdirSync(folder, { recursive: true });
    // On its own thread (pglite-thread.ts), so verifying and storing overlap.
    const client = await PGliteThread.create(folder);
    const db = drizzle({ client: client as unknown as import("@electric-sql/pglite").PGlite, schema: auditSchema });
    try {
      await migrate(db, { migrationsFolder: MIGRATIONS });
    } catch (e) {
      await client.close();
      throw e;
    }
    return {
      db: db as unknown as AuditDb,
      describe: memory ? "pglite:memory" : `pglite:${folder}`,
      atomically: (steps) => client.atomically(steps),
      rows: (sql, params) => client.rows(sql, params),
      utilization: (since) => client.utilization(since),
      gone: client.gone,
      async close() {
        await client.close();
        unlock();
      },
    };
  } catch (e) {
    unlock();
    throw e;
  }
}

async function openPostgres(url: string): Promise<AuditDatabase> {
  const { default: postgres } = await import("postgres");
  const { drizzle } = await import("drizzle-orm/postgres-js");
  const { migrate } = await import("drizzle-orm/postgres-js/migrator");
  // Bigint sums come back as strings; the store converts them itself.
  const client = postgres(url, { max: 8, onnotice: () => {} });
  try {
    const db = drizzle({ client, schema: auditSchema });
    await migrate(db, { migrationsFolder: MIGRATIONS });
    const u = new URL(url);
    return {
      db: db as unknown as AuditDb,
      describe: `postgres:${u.host}${u.pathname}`,
      async close() {
        await client.end({ timeout: 5 });
      },
    };
  } catch (e) {
    await client.end({ timeout: 1 }).catch(() => {});
    throw e;
  }
}
