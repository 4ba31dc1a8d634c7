import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Worker } from "node:worker_threads";
import { messages } from "@electric-sql/pglite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PGliteThread, WorkerStoppedError } from "../../audit/pglite-thread";

// The audit store's PGlite on its own thread behaves as PGlite does in the process: its
// errors are PGlite's (with their codes, which the store's fallback reads), transactions
// commit or roll back whole, COPY blobs go both ways, the data stays in the folder after
// a clean close, a thread that dies fails every call instead of hanging it, and a hung
// one does not hold a close forever.

const scratch = mkdtempSync(join(tmpdir(), "governor-pglite-thread-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("PGlite on its own thread", () => {
  // One in-memory database for the first three (a start runs initdb: seconds when busy).
  let db: PGliteThread;
  beforeAll(async () => {
    db = await PGliteThread.create(undefined);
  });
  afterAll(() => db?.close());

  it("answers queries, with PGlite's own errors and codes", async () => {
    await db.exec("create table t (id int primary key, note text)");
    await db.query("insert into t values ($1, $2)", [1, "one"]);
    const dup = await db.query("insert into t values ($1, $2)", [1, "again"]).catch((e: unknown) => e);
    expect(dup).toBeInstanceOf(messages.DatabaseError);
    expect((dup as { code?: string }).code).toBe("23505");
    expect((await db.query<{ id: number; note: string }>("select id, note from t")).rows).toEqual([{ id: 1, note: "one" }]);
  });

  it("commits or rolls back a transaction whole, through the query API and in one message", async () => {
    await db.exec("create table t2 (id int primary key)");
    await expect(
      db.transaction(async (tx) => {
        await tx.query("insert into t2 values (1)");
        throw new Error("changed my mind");
      }),
    ).rejects.toThrow("changed my mind");
    // A step that must return rows and returns none rolls back the steps before it.
    const stoppedAt = await db.atomically([
      { sql: "insert into t2 values ($1)", params: [2] },
      { sql: "update t2 set id = 3 where id = $1 returning id", params: [99], mustReturnRows: true },
    ]);
    expect(stoppedAt).toBe(1);
    expect(await db.atomically([{ sql: "insert into t2 values ($1) returning id", params: [4], mustReturnRows: true }, { sql: "copy t2 from '/dev/blob'", params: [], blob: new Blob(["5\n6\n"]) }])).toBe(-1);
    expect((await db.query<{ id: number }>("select id from t2 order by id")).rows.map((r) => r.id)).toEqual([4, 5, 6]);
    // A failing statement inside fails the call with its code, and nothing of it stays.
    const err = await db.atomically([{ sql: "insert into t2 values (7)", params: [] }, { sql: "insert into t2 values (4)", params: [] }]).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe("23505");
    expect((await db.query("select id from t2 where id = 7")).rows).toEqual([]);
  });

  it("copies to and from blobs", async () => {
    await db.exec("create table t3 (id int, note text)");
    await db.query("copy t3 from '/dev/blob'", [], { blob: new Blob(["1\ta\\tb\n2\t\\N\n"]) });
    const out = await db.query("copy t3 to '/dev/blob'");
    expect(await out.blob?.text()).toBe("1\ta\\tb\n2\t\\N\n");
    // The next query has no blob of its own.
    expect((await db.query("select count(*)::int as n from t3")).blob).toBeUndefined();
  });

  it("keeps its folder's data across a close and a reopen", async () => {
    const dir = join(scratch, "kept");
    const first = await PGliteThread.create(dir);
    await first.exec("create table t (id int); insert into t values (42)");
    await first.close();
    expect(first.closed).toBe(true);
    await expect(first.query("select 1")).rejects.toThrow(/closed/);
    const again = await PGliteThread.create(dir);
    try {
      expect((await again.query<{ id: number }>("select id from t")).rows).toEqual([{ id: 42 }]);
    } finally {
      await again.close();
    }
  });

  it("fails the call in flight and every later one when its thread dies, and still closes", async () => {
    const db = await PGliteThread.create(undefined);
    const inFlight = db.query("select pg_sleep(1)");
    // The thread is stopped from outside, as a crash inside it would stop it.
    await (db as unknown as { worker: Worker }).worker.terminate();
    await expect(inFlight).rejects.toBeInstanceOf(WorkerStoppedError);
    await expect(db.query("select 1")).rejects.toBeInstanceOf(WorkerStoppedError);
    await db.close();
  });

  it("a close ends even when the thread hangs inside a query", async () => {
    const db = await PGliteThread.create(undefined);
    // A statement that would keep the thread busy for a minute stands for a hung thread.
    const hung = db.query("select pg_sleep(60)").catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 500)); // the statement is on the thread
    const started = Date.now();
    await db.close(300);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(db.closed).toBe(true);
    expect(await hung).toBeInstanceOf(Error);
  });
});
