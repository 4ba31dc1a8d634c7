import type WebSocket from "ws";
import type { SessionSummary } from "../schema/protocol";
import { Backfill } from "./backfill";
import { CheckpointKeeper } from "./checkpoints";
import { Slots } from "./slots";
import { prepareYielding, type Cursor, type Prepared, type Refusal } from "./ingest";
import { fetchLog, openSocket, socketUrl, SourceError, type Source } from "./source";
import { HeadMovedError, type AuditStore, type IndexNote } from "./store";
import { CHECKPOINTS_WAITING, TailSockets } from "./tails";
import { ENDED, following, newTrack, storedSeq, type Track } from "./track";

// `governor audit sync`: follows one tenant into the audit store.
// - The tenant socket says which sessions exist and how far each log reaches.
// - A session behind is read from the NDJSON log route from its stored head, a page at a
//   time, a bounded number of sessions at once.
// - Live sessions also get a tail socket (tails.ts), so an append reaches the store in
//   milliseconds; what a socket misses (out of order, dropped) the log route fills in.
// Every event is verified against the stored head before it is stored, and the head
// moves in the same transaction: a crash anywhere resumes from what was committed.

export interface Problem extends Refusal {
  session: string;
}

export interface SyncOptions extends Source {
  store: AuditStore;
  /** Sessions read over HTTP at once. */
  concurrency?: number;
  /** Live tail sockets at once (0: none; the index and the log route alone). */
  sockets?: number;
  pageSize?: number;
  onProblem?: (p: Problem) => void;
  /** Backfill: events stored of those the index reported when the sync started. */
  onProgress?: (done: number, total: number) => void;
  log?: (message: string) => void;
}

const RETRY_MAX_MS = 30_000;
/** Sessions read at once by default: while one batch is stored (on PGlite's own thread), another is verified. */
export const DEFAULT_CONCURRENCY = 4;
const NOTE_EVERY_MS = 1000;

export class TenantSync {
  private readonly tracks = new Map<string, Track>();
  private readonly opts: Required<Omit<SyncOptions, "onProblem" | "onProgress" | "log">> & SyncOptions;
  private tenantSocket?: WebSocket;
  private stopped = false;
  private readonly abort = new AbortController();
  private reconnectMs = 500;
  private reconnectTimer?: ReturnType<typeof setTimeout>;
  /** Sessions read over HTTP at once. */
  private readonly http: Slots;
  private notes = new Map<string, IndexNote>();
  private noteTimer?: ReturnType<typeof setTimeout>;
  private backfill?: Backfill;
  private idleWaiters: Array<() => void> = [];
  private readonly tails: TailSockets;
  private readonly checkpoints: CheckpointKeeper;
  private firstIndex?: { resolve: () => void; reject: (e: Error) => void; promise: Promise<void> };

  constructor(opts: SyncOptions) {
    this.opts = { concurrency: DEFAULT_CONCURRENCY, sockets: 32, pageSize: 1000, ...opts };
    this.http = new Slots(this.opts.concurrency);
    this.checkpoints = new CheckpointKeeper(this.opts, this.opts.store.db, (m) => this.log(m), this.abort.signal);
    this.tails = new TailSockets({
      source: this.opts,
      sockets: this.opts.sockets,
      tracks: () => this.tracks.values(),
      kick: (t) => this.kick(t),
      stopped: () => this.stopped,
      log: (m) => this.log(m),
    });
  }

  private get store() {
    return this.opts.store;
  }

  private log(m: string) {
    this.opts.log?.(m);
  }

  /**
   * Starts following. Resolves once the tenant index has been read (the backfill is
   * then under way); rejects when the server refuses the token or tenant outright.
   */
  async start(): Promise<void> {
    for (const row of await this.store.sessions(this.opts.tenant)) {
      const t = this.track(row.session);
      t.storedHint = row.seq;
      t.known = Math.max(t.known, row.knownSeq);
      t.state = row.state ?? undefined;
    }
    let resolve!: () => void;
    let reject!: (e: Error) => void;
    const promise = new Promise<void>((ok, fail) => ((resolve = ok), (reject = fail)));
    this.firstIndex = { resolve, reject, promise };
    void this.connectTenant();
    return promise;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.noteTimer);
    // Terminated, not closed: a closing handshake the server does not answer holds the
    // process for ws's 30 s close timeout.
    this.tenantSocket?.terminate();
    for (const t of this.tracks.values()) {
      clearTimeout(t.retryTimer);
      t.socket?.terminate();
    }
    // Let running batches commit: each is one transaction, but a clean stop should not
    // make the next start redo them.
    while ([...this.tracks.values()].some((t) => t.running)) await new Promise((r) => setTimeout(r, 20));
    await this.flushNotes();
  }

  /** Resolves when every session known to the index is stored up to its reported head. */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  status() {
    const sessions = [...this.tracks.values()];
    return {
      sessions: sessions.length,
      behind: sessions.filter((t) => following(t) && storedSeq(t) < t.known).length,
      broken: sessions.filter((t) => t.broken).map((t) => ({ session: t.id, ...t.broken! })),
      unreadable: sessions.filter((t) => t.gaveUp).map((t) => ({ session: t.id, reason: t.gaveUp! })),
      sockets: sessions.filter((t) => t.socket).length,
    };
  }

  private isIdle() {
    for (const t of this.tracks.values()) if (t.running || (following(t) && storedSeq(t) < t.known)) return false;
    return true;
  }

  private checkIdle() {
    if (!this.idleWaiters.length || !this.isIdle()) return;
    const waiters = this.idleWaiters.splice(0);
    for (const w of waiters) w();
  }

  private track(id: string): Track {
    let t = this.tracks.get(id);
    if (!t) {
      t = newTrack(id);
      this.tracks.set(id, t);
    }
    return t;
  }

  // ---------------------------------------------------------------- the tenant index

  private async connectTenant() {
    if (this.stopped) return;
    const url = socketUrl(this.opts, `/parties/tenant/${encodeURIComponent(this.opts.tenant)}`);
    try {
      this.tenantSocket = await openSocket(
        url,
        (m) => this.onIndex(m),
        () => this.reconnectTenant(),
      );
      this.reconnectMs = 500;
    } catch (e) {
      const err = e as SourceError;
      if (err.final && this.firstIndex) {
        this.firstIndex.reject(new SourceError(`${err.message} (tenant "${this.opts.tenant}": the token must be an operator's or auditor's of that tenant)`, err.status));
        this.firstIndex = undefined;
        return;
      }
      this.log(`tenant socket: ${err.message}; retrying`);
      this.reconnectTenant();
    }
  }

  private reconnectTenant() {
    if (this.stopped) return;
    this.tenantSocket = undefined;
    this.reconnectTimer = setTimeout(() => void this.connectTenant(), this.reconnectMs);
    this.reconnectMs = Math.min(this.reconnectMs * 2, RETRY_MAX_MS);
  }

  private onIndex(m: { type?: string; sessions?: unknown; summary?: unknown }) {
    if (m.type === "sessions" && Array.isArray(m.sessions)) {
      const list = m.sessions as SessionSummary[];
      if (!this.backfill) this.startBackfill(list);
      for (const s of list) this.noteSummary(s);
      this.firstIndex?.resolve();
      this.firstIndex = undefined;
    } else if (m.type === "session" && m.summary) {
      this.noteSummary(m.summary as SessionSummary);
    }
  }

  private startBackfill(list: SessionSummary[]) {
    this.backfill = new Backfill(
      list,
      (session) => {
        const t = this.tracks.get(session);
        return t ? storedSeq(t) : 0;
      },
      this.opts.onProgress,
    );
  }

  private noteSummary(s: SessionSummary) {
    if (typeof s?.session !== "string" || typeof s.seq !== "number") return;
    const t = this.track(s.session);
    t.known = Math.max(t.known, s.seq);
    t.state = s.state;
    this.notes.set(s.session, { session: s.session, seq: s.seq, state: s.state, user: s.user, agent: s.agent, task: s.task, openedAt: s.openedAt });
    this.noteTimer ??= setTimeout(() => void this.flushNotes(), NOTE_EVERY_MS);
    if (storedSeq(t) < t.known || (!t.socket && !ENDED.has(s.state))) this.kick(t);
  }

  private async flushNotes() {
    this.noteTimer = undefined;
    const notes = [...this.notes.values()];
    this.notes.clear();
    try {
      await this.store.noteIndex(this.opts.tenant, notes);
    } catch (e) {
      this.log(`could not record the index: ${(e as Error).message}`);
    }
  }

  // ---------------------------------------------------------------- one session

  /** Runs the session's drain, once at a time; a kick while it runs makes it go again. */
  private kick(t: Track) {
    if (this.stopped || !following(t)) return;
    if (t.running) {
      t.again = true;
      return;
    }
    t.running = true;
    void this.drain(t).finally(() => {
      t.running = false;
      if (t.again && !this.stopped) {
        t.again = false;
        this.kick(t);
      }
      this.checkIdle();
    });
  }

  private async drain(t: Track) {
    try {
      const start = storedSeq(t);
      if (t.buffer.size) {
        t.cursor ??= await this.store.cursor(this.opts.tenant, t.id);
        await this.storeBuffered(t);
      }
      // The cursor (with its fold) is loaded only once a read slot is held, so a tenant
      // of many sessions keeps few of them in memory during a backfill.
      if (!t.broken && storedSeq(t) < t.known) await this.pull(t);
      if (!t.broken && t.checkpoints.length) await this.storeCheckpoints(t);
      if (t.broken) return;
      const busy = storedSeq(t) > start;
      this.tails.maybeOpen(t, busy);
      if (t.state && ENDED.has(t.state) && storedSeq(t) >= t.known) {
        // An ended session's tail has nothing more to say once its log is stored; its
        // cursor is reloaded if a late settle ever arrives.
        t.socket?.close();
        if (t.cursor) t.storedHint = t.cursor.seq;
        if (!t.socket && !t.buffer.size) t.cursor = undefined;
      }
      t.retryMs = 500;
    } catch (e) {
      if (e instanceof HeadMovedError) {
        // Another writer got there first: start again from what is stored.
        t.cursor = undefined;
        t.again = true;
        return;
      }
      if (this.stopped) return;
      const final = e instanceof SourceError && e.final;
      this.log(`session ${t.id}: ${(e as Error).message}${final ? "" : `; retrying in ${t.retryMs} ms`}`);
      if (final) {
        t.gaveUp = (e as Error).message;
        return;
      }
      clearTimeout(t.retryTimer);
      t.retryTimer = setTimeout(() => this.kick(t), t.retryMs);
      t.retryMs = Math.min(t.retryMs * 2, RETRY_MAX_MS);
    }
  }

  /** The socket's events that continue the stored chain, in one batch. */
  private async storeBuffered(t: Track) {
    const cursor = t.cursor!;
    for (const seq of t.buffer.keys()) if (seq <= cursor.seq) t.buffer.delete(seq);
    const run: unknown[] = [];
    for (let seq = cursor.seq + 1; t.buffer.has(seq); seq++) run.push(t.buffer.get(seq));
    if (!run.length) return;
    await this.apply(t, run);
    for (const seq of t.buffer.keys()) if (seq <= t.cursor!.seq) t.buffer.delete(seq);
  }

  /**
   * Reads the log route from the stored head up to the index's head. Pipelined: while a
   * page is being stored (on PGlite's thread, or by Postgres), the next one is read and
   * verified against the head that page will leave. t.cursor (what is committed) only
   * moves once its transaction has committed, and each batch moves the head only from
   * where it was verified, so a batch whose predecessor failed fails too: nothing is
   * stored twice or out of order, and a crash resumes from what committed.
   */
  private async pull(t: Track) {
    await this.http.acquire();
    // The page being stored: resolves to its error, if any, so a failure that lands while
    // the next page is read is never an unhandled rejection.
    let storing: Promise<Error | undefined> | undefined;
    const settle = async () => {
      const e = await storing;
      storing = undefined;
      if (e) throw e;
    };
    try {
      t.cursor ??= await this.store.cursor(this.opts.tenant, t.id);
      // Where the verified chain ends: t.cursor, or the head the page being stored leaves.
      let ahead = t.cursor!;
      while (!this.stopped && !t.broken && ahead.seq < t.known) {
        const page = await fetchLog(this.opts, t.id, ahead.seq, this.opts.pageSize, this.abort.signal);
        if (page.headSeq !== undefined) t.known = Math.max(t.known, page.headSeq);
        const from = ahead;
        const p = await prepareYielding(this.opts.tenant, t.id, from, page.events);
        await settle();
        if (p.rows.length && !p.refused && !p.checkpoints.length && !page.unreadable) {
          // A plain page: stored while the next one is read and verified.
          ahead = p.cursor;
          storing = this.store.append(this.opts.tenant, t.id, from.seq, p).then(
            () => {
              this.committed(t, from, p.cursor);
              return undefined;
            },
            (e: Error) => e,
          );
          continue;
        }
        await this.commit(t, from, p);
        if (page.unreadable && !t.broken && t.cursor!.seq + 1 >= page.unreadable.seq) await this.refuse(t, page.unreadable);
        if (t.cursor!.seq === from.seq) {
          // Nothing new: the index ran ahead of the log (it should not), or the page was empty.
          if (!page.more) t.known = Math.min(t.known, Math.max(t.cursor!.seq, page.headSeq ?? 0));
          break;
        }
        ahead = t.cursor!;
      }
      await settle();
    } catch (e) {
      // The page being stored still commits or fails: t.cursor follows it before the drain's retry reads it.
      await storing;
      throw e;
    } finally {
      this.http.release();
    }
  }

  private async apply(t: Track, raws: unknown[]) {
    const from = t.cursor!;
    await this.commit(t, from, await prepareYielding(this.opts.tenant, t.id, from, raws));
  }

  /** Stores a verified batch (waiting for its commit), then its refusal or checkpoints. */
  private async commit(t: Track, from: Cursor, p: Prepared) {
    if (p.rows.length) {
      await this.store.append(this.opts.tenant, t.id, from.seq, p);
      this.committed(t, from, p.cursor);
    }
    if (p.refused) await this.refuse(t, p.refused);
    else if (p.checkpoints.length) {
      t.checkpoints.push(...p.checkpoints);
      await this.storeCheckpoints(t);
    }
  }

  private committed(t: Track, from: Cursor, to: Cursor) {
    t.cursor = to;
    t.known = Math.max(t.known, to.seq);
    this.backfill?.progressed(t.id, from.seq, to.seq);
  }

  /** Verifies the session's checkpoints read so far and stores the good ones; a bad one is refused like a forged event. */
  private async storeCheckpoints(t: Track) {
    const cursor = t.cursor ?? (await this.store.cursor(this.opts.tenant, t.id));
    const r = await this.checkpoints.settle(t.id, cursor, t.checkpoints.splice(0));
    if ("refused" in r) await this.refuse(t, r.refused);
    else t.checkpoints = r.waiting.slice(-CHECKPOINTS_WAITING);
  }

  private async refuse(t: Track, r: Refusal) {
    t.broken = r;
    t.buffer.clear();
    t.checkpoints = [];
    t.socket?.close();
    await this.store.recordProblem(this.opts.tenant, t.id, r);
    this.log(`session ${t.id}: event seq ${r.seq} refused, not stored: ${r.reason}`);
    this.opts.onProblem?.({ session: t.id, ...r });
    // A refused session no longer counts toward the backfill's total.
    this.backfill?.progressed(t.id, storedSeq(t), Math.max(storedSeq(t), this.backfill.target(t.id) ?? 0));
  }
}
