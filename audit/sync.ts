import type WebSocket from "ws";
import type { SessionSummary } from "../schema/protocol";
import { CheckpointKeeper } from "./checkpoints";
import { Slots } from "./slots";
import { prepare, type Cursor, type Refusal } from "./ingest";
import { fetchLog, openSocket, socketUrl, SourceError, type Source } from "./source";
import { HeadMovedError, type AuditStore, type IndexNote } from "./store";

// `governor audit sync`: follows one tenant into the audit store.
// - The tenant socket says which sessions exist and how far each log reaches.
// - A session behind is read from the NDJSON log route from its stored head, a page at a
//   time, a bounded number of sessions at once.
// - Live sessions also get a tail socket (`?after=<stored seq>`), a bounded number of
//   them, so an append reaches the store in milliseconds rather than at the next index
//   update; what a socket misses (out of order, dropped) the log route fills in.
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

const ENDED = new Set(["killed", "closed"]);
const BUFFER_LIMIT = 10_000;
const RETRY_MAX_MS = 30_000;
const NOTE_EVERY_MS = 1000;
// Checkpoints ahead of the stored head wait for their events; only the latest few are kept.
const CHECKPOINTS_WAITING = 16;

interface Track {
  id: string;
  cursor?: Cursor;
  known: number;
  state?: string;
  broken?: Refusal;
  /** The server refused to serve this log (401/403/404): not retried until restart. */
  gaveUp?: string;
  /** Events from the tail socket not yet stored, by seq. */
  buffer: Map<number, unknown>;
  /** Signed checkpoints read and not yet verified and stored (one may wait for its events). */
  checkpoints: unknown[];
  socket?: WebSocket;
  socketOpening?: boolean;
  /** Its tail was closed to make room: no reconnect until it is busy again. */
  evicted?: boolean;
  /** The stored head when the sync started, before the cursor is loaded. */
  storedHint: number;
  lastEventAt: number;
  running: boolean;
  again: boolean;
  retryMs: number;
  retryTimer?: ReturnType<typeof setTimeout>;
}

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
  private backfill?: { total: number; done: number; targets: Map<string, number> };
  private idleWaiters: Array<() => void> = [];
  private socketsRefused = false;
  private readonly checkpoints: CheckpointKeeper;
  private firstIndex?: { resolve: () => void; reject: (e: Error) => void; promise: Promise<void> };

  constructor(opts: SyncOptions) {
    this.opts = { concurrency: 4, sockets: 32, pageSize: 1000, ...opts };
    this.http = new Slots(this.opts.concurrency);
    this.checkpoints = new CheckpointKeeper(this.opts, this.opts.store.db, (m) => this.log(m), this.abort.signal);
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
      behind: sessions.filter((t) => this.following(t) && this.stored(t) < t.known).length,
      broken: sessions.filter((t) => t.broken).map((t) => ({ session: t.id, ...t.broken! })),
      unreadable: sessions.filter((t) => t.gaveUp).map((t) => ({ session: t.id, reason: t.gaveUp! })),
      sockets: sessions.filter((t) => t.socket).length,
    };
  }

  private isIdle() {
    for (const t of this.tracks.values()) if (t.running || (this.following(t) && this.stored(t) < t.known)) return false;
    return true;
  }

  private following(t: Track): boolean {
    return !t.broken && !t.gaveUp;
  }

  private stored(t: Track): number {
    return t.cursor?.seq ?? t.storedHint;
  }

  private checkIdle() {
    if (!this.idleWaiters.length || !this.isIdle()) return;
    const waiters = this.idleWaiters.splice(0);
    for (const w of waiters) w();
  }

  private track(id: string): Track {
    let t = this.tracks.get(id);
    if (!t) {
      t = { id, known: 0, storedHint: 0, buffer: new Map(), checkpoints: [], lastEventAt: 0, running: false, again: false, retryMs: 500 };
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
    const targets = new Map<string, number>();
    let total = 0;
    for (const s of list) {
      const t = this.tracks.get(s.session);
      const stored = t?.cursor?.seq ?? t?.storedHint ?? 0;
      targets.set(s.session, s.seq);
      total += Math.max(0, s.seq - stored);
    }
    this.backfill = { total, done: 0, targets };
    this.opts.onProgress?.(0, total);
  }

  private noteSummary(s: SessionSummary) {
    if (typeof s?.session !== "string" || typeof s.seq !== "number") return;
    const t = this.track(s.session);
    t.known = Math.max(t.known, s.seq);
    t.state = s.state;
    this.notes.set(s.session, { session: s.session, seq: s.seq, state: s.state, user: s.user, agent: s.agent, task: s.task, openedAt: s.openedAt });
    this.noteTimer ??= setTimeout(() => void this.flushNotes(), NOTE_EVERY_MS);
    if (this.stored(t) < t.known || (!t.socket && !ENDED.has(s.state))) this.kick(t);
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
    if (this.stopped || !this.following(t)) return;
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
      const start = this.stored(t);
      if (t.buffer.size) {
        t.cursor ??= await this.store.cursor(this.opts.tenant, t.id);
        await this.storeBuffered(t);
      }
      // The cursor (with its fold) is loaded only once a read slot is held, so a tenant
      // of many sessions keeps few of them in memory during a backfill.
      if (!t.broken && this.stored(t) < t.known) await this.pull(t);
      if (!t.broken && t.checkpoints.length) await this.storeCheckpoints(t);
      if (t.broken) return;
      const busy = this.stored(t) > start;
      this.maybeTail(t, busy);
      if (t.state && ENDED.has(t.state) && this.stored(t) >= t.known) {
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

  /** Reads the log route from the stored head up to the index's head. */
  private async pull(t: Track) {
    await this.http.acquire();
    try {
      t.cursor ??= await this.store.cursor(this.opts.tenant, t.id);
      while (!this.stopped && !t.broken && t.cursor!.seq < t.known) {
        const page = await fetchLog(this.opts, t.id, t.cursor!.seq, this.opts.pageSize, this.abort.signal);
        if (page.headSeq !== undefined) t.known = Math.max(t.known, page.headSeq);
        const before = t.cursor!.seq;
        await this.apply(t, page.events);
        if (page.unreadable && !t.broken && t.cursor!.seq + 1 >= page.unreadable.seq) await this.refuse(t, page.unreadable);
        if (t.cursor!.seq === before) {
          // Nothing new: the index ran ahead of the log (it should not), or the page was empty.
          if (!page.more) t.known = Math.min(t.known, Math.max(t.cursor!.seq, page.headSeq ?? 0));
          break;
        }
      }
    } finally {
      this.http.release();
    }
  }

  private async apply(t: Track, raws: unknown[]) {
    const from = t.cursor!;
    const p = prepare(this.opts.tenant, t.id, from, raws);
    if (p.rows.length) {
      await this.store.append(this.opts.tenant, t.id, from.seq, p);
      t.cursor = p.cursor;
      t.known = Math.max(t.known, p.cursor.seq);
      this.progressed(t.id, from.seq, p.cursor.seq);
    }
    if (p.refused) await this.refuse(t, p.refused);
    else if (p.checkpoints.length) {
      t.checkpoints.push(...p.checkpoints);
      await this.storeCheckpoints(t);
    }
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
    this.progressed(t.id, this.stored(t), Math.max(this.stored(t), this.backfill?.targets.get(t.id) ?? 0));
  }

  private progressed(session: string, from: number, to: number) {
    const b = this.backfill;
    const target = b?.targets.get(session);
    if (!b || target === undefined) return;
    const counted = Math.max(0, Math.min(to, target) - from);
    if (counted <= 0) return;
    b.done += counted;
    this.opts.onProgress?.(b.done, b.total);
  }

  // ---------------------------------------------------------------- tail sockets

  /** A live session gets a tail while there is room; a busy one may take a quiet one's. */
  private maybeTail(t: Track, busy: boolean) {
    if (t.socket || t.socketOpening || this.socketsRefused || this.stopped || !this.opts.sockets) return;
    if (t.state === undefined || ENDED.has(t.state)) return;
    if (t.evicted && !busy) return;
    const open = [...this.tracks.values()].filter((x) => x.socket || x.socketOpening);
    if (open.length >= this.opts.sockets) {
      if (!busy) return;
      const quiet = open.filter((x) => x.socket && Date.now() - x.lastEventAt > 5000).sort((a, b) => a.lastEventAt - b.lastEventAt)[0];
      if (!quiet) return;
      quiet.evicted = true;
      quiet.socket!.close();
      quiet.socket = undefined;
    }
    t.evicted = false;
    t.lastEventAt = Date.now();
    t.socketOpening = true;
    const url = socketUrl(this.opts, `/parties/session/${encodeURIComponent(this.opts.tenant)}:${encodeURIComponent(t.id)}`, { after: String(this.stored(t)) });
    openSocket(
      url,
      (m) => this.onTail(t, m),
      () => {
        t.socket = undefined;
        // Closed by the server (a restart, say): open it again while the session is live.
        if (!this.stopped && !t.broken && !t.evicted && t.state && !ENDED.has(t.state)) this.kick(t);
      },
    ).then(
      (ws) => {
        t.socketOpening = false;
        if (this.stopped || t.broken) ws.close();
        else t.socket = ws;
      },
      (e: SourceError) => {
        t.socketOpening = false;
        this.log(`tail socket of ${t.id}: ${e.message}`);
      },
    );
  }

  private onTail(t: Track, m: { type?: string; event?: unknown; seq?: unknown; code?: unknown; message?: unknown; summary?: unknown }) {
    if (m.type === "event" && m.event && typeof m.event === "object") {
      const seq = (m.event as { seq?: unknown }).seq;
      if (typeof seq !== "number") return;
      t.lastEventAt = Date.now();
      t.known = Math.max(t.known, seq);
      if (seq > this.stored(t) && t.buffer.size < BUFFER_LIMIT) t.buffer.set(seq, m.event);
      this.kick(t);
    } else if (m.type === "checkpoint") {
      const { type: _t, ...signed } = m;
      t.checkpoints.push(signed);
      if (t.checkpoints.length > CHECKPOINTS_WAITING) t.checkpoints.shift();
      this.kick(t);
    } else if (m.type === "state" && typeof m.seq === "number") {
      t.known = Math.max(t.known, m.seq);
      const state = (m.summary as { state?: string } | undefined)?.state;
      if (state) t.state = state;
      if (this.stored(t) < t.known) this.kick(t);
    } else if (m.type === "error" && m.code === "forbidden") {
      // This token may not read tails: the index and the log route carry on alone.
      this.socketsRefused = true;
      this.log(`tail sockets refused (${String(m.message)}); following through the index and the log route`);
      t.socket?.close();
    }
  }
}
