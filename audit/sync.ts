import type WebSocket from "ws";
import type { SessionSummary } from "../schema/protocol";
import { Backfill } from "./backfill";
import { CheckpointKeeper } from "./checkpoints";
import { storeGone } from "./db";
import { RETRY_MAX_MS, SessionDrain, type Problem } from "./session-drain";
import { Slots } from "./slots";
import { openSocket, socketUrl, SourceError, type Source } from "./source";
import type { AuditStore, IndexNote } from "./store";
import { TailSockets } from "./tails";
import { ENDED, following, newTrack, storedSeq, type Track } from "./track";

// `governor audit sync`: follows one tenant into the audit store.
// - The tenant socket says which sessions exist and how far each log reaches.
// - A session behind is read from the NDJSON log route from its stored head, a page at a
//   time, a bounded number of sessions at once.
// - Live sessions also get a tail socket (tails.ts), so an append reaches the store in
//   milliseconds; what a socket misses (out of order, dropped) the log route fills in.
// Every event is verified against the stored head before it is stored, and the head
// moves in the same transaction: a crash anywhere resumes from what was committed.
// Reading, verifying and storing one session is session-drain.ts.

export type { Problem } from "./session-drain";

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
  /** The store can no longer answer (its database thread died): the sync has stopped following. */
  onFailure?: (e: Error) => void;
}

/** Sessions read at once by default: while one batch is stored (on PGlite's own thread), another is verified. */
export const DEFAULT_CONCURRENCY = 4;
const NOTE_EVERY_MS = 1000;

export class TenantSync {
  private readonly tracks = new Map<string, Track>();
  private readonly opts: Required<Omit<SyncOptions, "onProblem" | "onProgress" | "log" | "onFailure">> & SyncOptions;
  private tenantSocket?: WebSocket;
  private stopped = false;
  private readonly abort = new AbortController();
  private reconnectMs = 500;
  private reconnectTimer?: ReturnType<typeof setTimeout>;
  private notes = new Map<string, IndexNote>();
  private noteTimer?: ReturnType<typeof setTimeout>;
  private backfill?: Backfill;
  private idleWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  /** Why the sync stopped on its own: the store is gone. */
  private failure?: Error;
  private readonly tails: TailSockets;
  private readonly drains: SessionDrain;
  private firstIndex?: { resolve: () => void; reject: (e: Error) => void; promise: Promise<void> };

  constructor(opts: SyncOptions) {
    this.opts = { concurrency: DEFAULT_CONCURRENCY, sockets: 32, pageSize: 1000, ...opts };
    this.tails = new TailSockets({
      source: this.opts,
      sockets: this.opts.sockets,
      tracks: () => this.tracks.values(),
      kick: (t) => this.kick(t),
      stopped: () => this.stopped,
      log: (m) => this.log(m),
    });
    this.drains = new SessionDrain({
      options: this.opts,
      http: new Slots(this.opts.concurrency),
      checkpoints: new CheckpointKeeper(this.opts, this.opts.store.db, (m) => this.log(m), this.abort.signal),
      tails: this.tails,
      signal: this.abort.signal,
      stopped: () => this.stopped,
      backfill: () => this.backfill,
      kick: (t) => this.kick(t),
      fail: (e) => this.fail(e),
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
    // An idle sync would otherwise learn of a dead store only from its next write.
    void this.store.database.gone?.then((e) => this.fail(e));
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
    this.halt();
    // Let running batches commit: each is one transaction, but a clean stop should not
    // make the next start redo them.
    while ([...this.tracks.values()].some((t) => t.running)) await new Promise((r) => setTimeout(r, 20));
    if (!this.failure) await this.flushNotes();
  }

  /** No more reads, retries or sockets. */
  private halt() {
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
  }

  /**
   * The store cannot answer any more (its database thread died): retrying would fail the
   * same way forever, and `sync --once` would wait forever. The sync stops following,
   * says why once, and idle() rejects with it; what was committed stays committed.
   */
  private fail(e: Error) {
    if (this.failure || this.stopped) return;
    this.failure = e;
    this.halt();
    this.log(`the audit store failed, not following any more: ${e.message}`);
    this.firstIndex?.reject(e);
    this.firstIndex = undefined;
    for (const w of this.idleWaiters.splice(0)) w.reject(e);
    this.opts.onFailure?.(e);
  }

  /** Resolves when every session known to the index is stored up to its reported head; rejects if the store fails first. */
  idle(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve, reject) => this.idleWaiters.push({ resolve, reject }));
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
    for (const w of waiters) w.resolve();
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
      const gone = storeGone(e);
      if (gone) this.fail(gone);
      else this.log(`could not record the index: ${(e as Error).message}`);
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
    void this.drains.run(t).finally(() => {
      t.running = false;
      if (t.again && !this.stopped) {
        t.again = false;
        this.kick(t);
      }
      this.checkIdle();
    });
  }
}
