import type { Backfill } from "./backfill";
import type { CheckpointKeeper } from "./checkpoints";
import { storeGone } from "./db";
import { prepareYielding, type Cursor, type Prepared, type Refusal } from "./ingest";
import type { Slots } from "./slots";
import { fetchLog, SourceError, type Source } from "./source";
import { HeadMovedError, type AuditStore } from "./store";
import { CHECKPOINTS_WAITING, type TailSockets } from "./tails";
import { ENDED, storedSeq, type Track } from "./track";

// One session of the sync (sync.ts): what its tail socket buffered, then its log from the
// stored head, a page at a time, each verified against the head before it is stored, and
// the signed checkpoints read with it. The tenant side (index, tails, lifecycle) is sync.ts.

export interface Problem extends Refusal {
  session: string;
}

export interface SessionOptions extends Source {
  store: AuditStore;
  pageSize: number;
  onProblem?: (p: Problem) => void;
}

/** What a session's drain uses of the tenant's sync. */
export interface SessionHost {
  options: SessionOptions;
  /** Sessions read over HTTP at once. */
  http: Slots;
  checkpoints: CheckpointKeeper;
  tails: TailSockets;
  signal: AbortSignal;
  stopped(): boolean;
  backfill(): Backfill | undefined;
  /** Runs the session's drain again (a retry). */
  kick(t: Track): void;
  /** The store is gone: the whole sync stops (a retry cannot help). */
  fail(e: Error): void;
  log(message: string): void;
}

/** The longest wait between two tries (a session's read, the tenant socket). */
export const RETRY_MAX_MS = 30_000;

export class SessionDrain {
  constructor(private readonly h: SessionHost) {}

  private get store() {
    return this.h.options.store;
  }

  private get tenant() {
    return this.h.options.tenant;
  }

  /** Stores what the session has waiting (tail events, the log past the stored head, checkpoints); retried on failure. */
  async run(t: Track) {
    try {
      const start = storedSeq(t);
      if (t.buffer.size) {
        t.cursor ??= await this.store.cursor(this.tenant, t.id);
        await this.storeBuffered(t);
      }
      // The cursor (with its fold) is loaded only once a read slot is held, so a tenant
      // of many sessions keeps few of them in memory during a backfill.
      if (!t.broken && storedSeq(t) < t.known) await this.pull(t);
      if (!t.broken && t.checkpoints.length) await this.storeCheckpoints(t);
      if (t.broken) return;
      const busy = storedSeq(t) > start;
      this.h.tails.maybeOpen(t, busy);
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
      if (this.h.stopped()) return;
      const gone = storeGone(e);
      if (gone) return this.h.fail(gone);
      const final = e instanceof SourceError && e.final;
      this.h.log(`session ${t.id}: ${(e as Error).message}${final ? "" : `; retrying in ${t.retryMs} ms`}`);
      if (final) {
        t.gaveUp = (e as Error).message;
        return;
      }
      clearTimeout(t.retryTimer);
      t.retryTimer = setTimeout(() => this.h.kick(t), t.retryMs);
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
    await this.h.http.acquire();
    // The page being stored: resolves to its error, if any, so a failure that lands while
    // the next page is read is never an unhandled rejection.
    let storing: Promise<Error | undefined> | undefined;
    const settle = async () => {
      const e = await storing;
      storing = undefined;
      if (e) throw e;
    };
    try {
      t.cursor ??= await this.store.cursor(this.tenant, t.id);
      // Where the verified chain ends: t.cursor, or the head the page being stored leaves.
      let ahead = t.cursor!;
      while (!this.h.stopped() && !t.broken && ahead.seq < t.known) {
        const page = await fetchLog(this.h.options, t.id, ahead.seq, this.h.options.pageSize, this.h.signal);
        if (page.headSeq !== undefined) t.known = Math.max(t.known, page.headSeq);
        const from = ahead;
        const p = await prepareYielding(this.tenant, t.id, from, page.events);
        await settle();
        if (p.rows.length && !p.refused && !p.checkpoints.length && !page.unreadable) {
          // A plain page: stored while the next one is read and verified.
          ahead = p.cursor;
          storing = this.store.append(this.tenant, t.id, from.seq, p).then(
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
      this.h.http.release();
    }
  }

  private async apply(t: Track, raws: unknown[]) {
    const from = t.cursor!;
    await this.commit(t, from, await prepareYielding(this.tenant, t.id, from, raws));
  }

  /** Stores a verified batch (waiting for its commit), then its refusal or checkpoints. */
  private async commit(t: Track, from: Cursor, p: Prepared) {
    if (p.rows.length) {
      await this.store.append(this.tenant, t.id, from.seq, p);
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
    this.h.backfill()?.progressed(t.id, from.seq, to.seq);
  }

  /** Verifies the session's checkpoints read so far and stores the good ones; a bad one is refused like a forged event. */
  private async storeCheckpoints(t: Track) {
    const cursor = t.cursor ?? (await this.store.cursor(this.tenant, t.id));
    const r = await this.h.checkpoints.settle(t.id, cursor, t.checkpoints.splice(0));
    if ("refused" in r) await this.refuse(t, r.refused);
    else t.checkpoints = r.waiting.slice(-CHECKPOINTS_WAITING);
  }

  private async refuse(t: Track, r: Refusal) {
    t.broken = r;
    t.buffer.clear();
    t.checkpoints = [];
    t.socket?.close();
    await this.store.recordProblem(this.tenant, t.id, r);
    this.h.log(`session ${t.id}: event seq ${r.seq} refused, not stored: ${r.reason}`);
    this.h.options.onProblem?.({ session: t.id, ...r });
    // A refused session no longer counts toward the backfill's total.
    const backfill = this.h.backfill();
    backfill?.progressed(t.id, storedSeq(t), Math.max(storedSeq(t), backfill.target(t.id) ?? 0));
  }
}
