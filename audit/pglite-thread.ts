import { Worker } from "node:worker_threads";
import type { EventLoopUtilization } from "node:perf_hooks";
import { messages, Mutex, PGlite } from "@electric-sql/pglite";
import { DB_THREAD_STOPPED } from "./db";

// PGlite on a worker thread, behind a client that is a PGlite to drizzle and the store.
//
// Why: PGlite is Postgres compiled to WebAssembly, and it runs on the thread that calls it.
// In the sync, storing a batch (its WebAssembly and file writes) took about 60% of the
// time and verifying the next one the rest, one after the other on the main thread. With
// the database on its own thread, the main thread verifies a session's batch while the
// database stores another's (on two cores, the slower half sets the pace instead of the
// sum), and the service's queries stay responsive while a backfill writes.
//
// How: the same split as PGlite's own browser worker. This client is PGlite's base class
// (queries, transactions, parameter serializers and result parsers, all in JavaScript
// here), and only the wire-protocol messages and COPY blobs go to the worker, which owns
// the real PGlite and runs them one at a time. Every SQL statement is the one drizzle and
// the store wrote; the worker knows no query. The base class is not exported, so it is
// taken from PGlite's prototype chain (checked at start: a PGlite without it fails loudly).
//
// Errors: a database error comes back as PGlite's own DatabaseError (code, detail, ...);
// a worker that dies rejects every call in flight and every later one, never hangs them.

type QueryApi = Pick<PGlite, "query" | "sql" | "exec" | "transaction">;
type BaseClass = abstract new () => QueryApi & { _initArrayTypes(opts?: { force?: boolean }): Promise<void> };

const BasePGlite = Object.getPrototypeOf(PGlite) as BaseClass;
if (typeof BasePGlite !== "function" || typeof BasePGlite.prototype.query !== "function" || typeof BasePGlite.prototype._initArrayTypes !== "function") {
  throw new Error("this @electric-sql/pglite has no base client class under PGlite; audit/pglite-thread.ts needs updating");
}

// Postgres settings on top of PGlite's own (which already run it with fsync off, see the
// README's "Audit store"). wal_init_zero=off: a new 16 MB WAL segment is not first
// written full of zeros (a backfill fills one every few thousand events); it changes
// nothing of what a commit has written when it returns.
const SETTINGS = ["wal_init_zero=off"];

type ProtocolOptions = { syncToFs?: boolean; throwOnError?: boolean; onNotice?: unknown; onRawData?: (data: Uint8Array) => void };
type Plain = { message: string; name?: string; length?: number; database?: boolean; [k: string]: unknown };

/** One statement of PGliteThread.atomically, as drizzle's `toSQL()` gives it. */
export interface Step {
  sql: string;
  params: unknown[];
  /** COPY FROM '/dev/blob' reads this. */
  blob?: Blob;
  /** The transaction is rolled back when this statement returns no rows. */
  mustReturnRows?: boolean;
}

export class WorkerStoppedError extends Error {
  readonly code = DB_THREAD_STOPPED;
}

function revive(e: Plain): Error {
  const { message, name, length, database, stack: _stack, ...fields } = e;
  if (database) return Object.assign(new messages.DatabaseError(message, length ?? 0, (name ?? "error") as "error"), fields);
  return Object.assign(new Error(message), name && name !== "Error" ? { name } : {});
}

/** A protocol message as its own buffer: postMessage copies a view's whole underlying buffer. */
const own = (m: Uint8Array) => (m.byteOffset === 0 && m.byteLength === m.buffer.byteLength ? m : m.slice());

export class PGliteThread extends BasePGlite {
  debug = 0 as const;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private failed?: Error;
  private isClosed = false;
  private readonly queryLock = new Mutex();
  private readonly transactionLock = new Mutex();
  private readonly exited: Promise<void>;
  private markGone!: (e: Error) => void;
  /** Resolves with why once the thread has died (not on a close): every later call fails with it. */
  readonly gone = new Promise<Error>((r) => (this.markGone = r));

  private constructor(private readonly worker: Worker) {
    super();
    this.exited = new Promise((resolve) => worker.once("exit", () => resolve()));
    worker.on("message", (m: { id?: number; result?: unknown; error?: Plain }) => {
      if (m.id === undefined) return;
      const call = this.pending.get(m.id);
      if (!call) return;
      this.pending.delete(m.id);
      if (!this.pending.size) worker.unref();
      if (m.error) call.reject(revive(m.error));
      else call.resolve(m.result);
    });
    worker.on("error", (e: Error) => this.fail(new WorkerStoppedError(`the audit store's database thread failed: ${e.message}`)));
    worker.on("exit", (code) => this.fail(this.isClosed ? new Error("PGlite is closed") : new WorkerStoppedError(`the audit store's database thread exited (code ${code})`)));
  }

  /** Opens PGlite in `dataDir` (a folder; undefined: in memory) on a new thread. */
  static async create(dataDir: string | undefined): Promise<PGliteThread> {
    const worker = new Worker(new URL("./pglite-worker.mjs", import.meta.url), { workerData: { dataDir, settings: SETTINGS } });
    const started = new Promise<void>((resolve, reject) => {
      const onMessage = (m: { type?: string; error?: Plain }) => {
        if (m.type === "ready") done(resolve);
        else if (m.type === "failed") done(() => reject(revive(m.error ?? { message: "PGlite did not start" })));
      };
      const onError = (e: Error) => done(() => reject(e));
      const onExit = (code: number) => done(() => reject(new WorkerStoppedError(`the audit store's database thread exited while starting (code ${code})`)));
      const done = (then: () => void) => {
        worker.off("message", onMessage).off("error", onError).off("exit", onExit);
        then();
      };
      worker.on("message", onMessage).on("error", onError).on("exit", onExit);
    });
    try {
      await started;
    } catch (e) {
      await worker.terminate();
      throw e;
    }
    const client = new PGliteThread(worker);
    worker.unref();
    try {
      await client._initArrayTypes();
    } catch (e) {
      await worker.terminate();
      throw e;
    }
    return client;
  }

  private fail(e: Error) {
    this.failed ??= e;
    if (this.failed instanceof WorkerStoppedError) this.markGone(this.failed);
    for (const call of this.pending.values()) call.reject(this.failed);
    this.pending.clear();
  }

  private call<T>(method: string, ...args: unknown[]): Promise<T> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextId++;
    // Held while a call is out, so a process awaiting the database does not exit under it;
    // let go when idle, so an open store never keeps a finished process alive.
    if (!this.pending.size) this.worker.ref();
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, method, args });
    });
  }

  /**
   * Runs `steps` as one transaction, sent in one message. A transaction through the query
   * API costs a round trip per protocol message (a dozen per statement), and each waits
   * for this thread to be free: while it verifies another batch, the database would sit
   * idle between them. Returns the index of the first `mustReturnRows` step that returned
   * none (everything is then rolled back), or -1 when all committed.
   *
   * It is sent under both locks, so it never lands inside another query's exchange, and
   * the locks are let go once it is sent: the worker runs its messages in order, so what
   * is sent next waits there for this transaction, and this thread can verify the next
   * batch and queue it behind this one meanwhile.
   */
  async atomically(steps: Step[]): Promise<number> {
    let reply!: Promise<number>;
    await this._runExclusiveTransaction(() =>
      this._runExclusiveQuery(async () => {
        await this._checkReady();
        reply = this.call<number>("atomically", steps);
      }),
    );
    return reply;
  }

  /**
   * One read in one message, its rows as arrays in the statement's column order. Queued in
   * order with everything else sent (under the locks, like `atomically`), so it sees every
   * transaction sent before it.
   */
  async rows(sql: string, params: unknown[]): Promise<unknown[][]> {
    let reply!: Promise<unknown[][]>;
    await this._runExclusiveTransaction(() =>
      this._runExclusiveQuery(async () => {
        await this._checkReady();
        reply = this.call<unknown[][]>("rows", sql, params);
      }),
    );
    return reply;
  }

  /** How busy the database thread has been (for the benchmark): as performance.eventLoopUtilization. */
  utilization(since?: EventLoopUtilization): EventLoopUtilization {
    return this.worker.performance.eventLoopUtilization(since);
  }

  get closed() {
    return this.isClosed;
  }

  get ready() {
    return !this.isClosed && !this.failed;
  }

  /** What a COPY TO '/dev/blob' wrote, brought back with the message that wrote it. */
  private written?: Blob;

  async execProtocolStream(message: Uint8Array, { syncToFs, throwOnError }: ProtocolOptions = {}) {
    const r = await this.call<{ messages: unknown[]; written?: Blob }>("execProtocolStream", own(message), { syncToFs, throwOnError });
    if (r.written) this.written = r.written;
    return r.messages;
  }

  execProtocol(message: Uint8Array, { syncToFs }: ProtocolOptions = {}) {
    return this.call<{ messages: unknown[]; data: Uint8Array }>("execProtocol", own(message), { syncToFs });
  }

  execProtocolRaw(message: Uint8Array, { syncToFs }: ProtocolOptions = {}) {
    return this.call<Uint8Array>("execProtocolRaw", own(message), { syncToFs });
  }

  async execProtocolRawStream(message: Uint8Array, { syncToFs, onRawData }: ProtocolOptions = {}) {
    const data = await this.execProtocolRaw(message, { syncToFs });
    onRawData?.(data);
  }

  async syncToFs() {
    // Nothing to do: the worker's PGlite is in a folder (Node's file system, written as it
    // goes) or in memory, whose syncToFs is empty; one in IndexedDB would need the call.
  }

  // Every query hands PGlite its blob (usually none) and clears it after: only a real one
  // costs a message.
  private blobHeld = false;

  async _handleBlob(blob?: Blob) {
    if (!blob && !this.blobHeld) return;
    this.blobHeld = !!blob;
    await this.call<void>("handleBlob", blob);
  }

  async _cleanupBlob() {
    if (!this.blobHeld) return;
    this.blobHeld = false;
    await this.call<void>("cleanupBlob");
  }

  async _getWrittenBlob() {
    const blob = this.written;
    this.written = undefined;
    return blob;
  }

  async _checkReady() {
    if (this.isClosed) throw new Error("PGlite is closed");
    if (this.failed) throw this.failed;
  }

  _runExclusiveQuery<T>(fn: () => Promise<T>): Promise<T> {
    return this.queryLock.runExclusive(fn);
  }

  _runExclusiveTransaction<T>(fn: () => Promise<T>): Promise<T> {
    return this.transactionLock.runExclusive(fn);
  }

  async listen(): Promise<never> {
    throw new Error("LISTEN is not available on the audit store's database thread");
  }

  /**
   * Waits for the running transaction and query, closes the database, and ends the thread.
   * A thread that does not get there within `graceMs` (hung, not dead) is stopped: a shutdown
   * must end, and what the database committed is in its files either way.
   */
  async close(graceMs = 30_000): Promise<void> {
    if (this.isClosed) return;
    const graceful = (async () => {
      if (this.failed) return;
      await this.transactionLock.runExclusive(() =>
        this.queryLock.runExclusive(async () => {
          this.isClosed = true;
          await this.call("close");
        }),
      );
    })();
    // Given up on after graceMs, it can still fail once the thread is stopped: not unhandled.
    graceful.catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([graceful, new Promise<void>((r) => (timer = setTimeout(r, graceMs)))]);
    } finally {
      clearTimeout(timer);
      this.isClosed = true;
      // The worker ends by itself once its database is closed; one that does not is stopped.
      const stop = setTimeout(() => void this.worker.terminate(), Math.min(graceMs, 5000));
      await this.exited;
      clearTimeout(stop);
    }
  }
}
