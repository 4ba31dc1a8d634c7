import { and, eq, getTableColumns, sql } from "drizzle-orm";
import { auditEvents, auditSessions, type AuditSessionRow, type NewAuditEventRow } from "../schema/audit";
import type { AuditDatabase, AuditDb } from "./db";
import { applyRedaction } from "./erase";
import { emptyCursor, type Cursor, type Prepared, type Refusal } from "./ingest";
import { clearValue, type FoldState } from "./rows";

// Writes of the audit store. A batch of verified events and the session's new head go in
// one transaction, and the head only moves from where the batch was verified against:
// two writers (a restarted sync racing its predecessor, two syncs on one Postgres) can
// never store a fork or move the head back.

const INSERT_CHUNK = 1000;

// Rows go in as one JSON document per chunk (json_populate_recordset): a thousand rows of
// twenty columns as bind parameters cost PGlite twice the time of parsing one document.
// The keys are the schema's own column names, so this follows every migration.
const COLUMNS = Object.entries(getTableColumns(auditEvents)).map(([key, col]) => [key, col.name] as const);

function asRecord(r: NewAuditEventRow): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, name] of COLUMNS) out[name] = (r as Record<string, unknown>)[key] ?? null;
  return out;
}

// On PGlite, COPY from a blob of tab-separated text is cheaper still: about half the time
// of json_populate_recordset per row (measured on this project's machine). Postgres keeps
// the JSON document, which it parses quickly.
const COPY_COLUMNS = COLUMNS.map(([, name]) => `"${name}"`).join(", ");

const COPY_KEYS = COLUMNS.map(([key]) => key);
const COPY_ESCAPE = /[\\\t\n\r]/;

function copyField(v: unknown): string {
  if (v === null || v === undefined) return "\\N";
  if (typeof v === "number") return String(v);
  if (typeof v === "object") {
    // JSON text has no raw tab or line break (JSON escapes them): only its backslashes are COPY's.
    const json = JSON.stringify(v);
    return json.includes("\\") ? json.replaceAll("\\", "\\\\") : json;
  }
  const text = String(v);
  // COPY's text format: backslash, tab, newline and carriage return are escaped.
  return COPY_ESCAPE.test(text) ? text.replace(/[\\\t\n\r]/g, (c) => (c === "\\" ? "\\\\" : c === "\t" ? "\\t" : c === "\n" ? "\\n" : "\\r")) : text;
}

/** The rows as COPY text, built by appending (a batch is one string of about a kilobyte per row). */
function copyText(rows: NewAuditEventRow[]): string {
  let out = "";
  for (const r of rows) {
    const rec = r as Record<string, unknown>;
    for (let i = 0; i < COPY_KEYS.length; i++) out += (i ? "\t" : "") + copyField(rec[COPY_KEYS[i]]);
    out += "\n";
  }
  return out;
}

type PgliteTx = { query(text: string, params: unknown[], options: { blob: Blob }): Promise<unknown> };

/** The PGlite transaction under drizzle's, when that is what `tx` is. */
function pgliteClient(tx: unknown): PgliteTx | undefined {
  const client = (tx as { session?: { client?: { query?: unknown; constructor?: { name?: string } } } }).session?.client;
  return client && typeof client.query === "function" && "closed" in client ? (client as unknown as PgliteTx) : undefined;
}

const isUniqueViolation = (e: unknown) => (e as { code?: string } | null)?.code === "23505" || /duplicate key/.test(String((e as Error)?.message));

export class HeadMovedError extends Error {
  constructor(readonly tenant: string, readonly session: string) {
    super(`the stored head of ${tenant}:${session} moved while this batch was verified`);
  }
}

export interface IndexNote {
  session: string;
  seq: number;
  state?: string;
  user?: string;
  agent?: string;
  task?: string;
  openedAt?: number;
}

export class AuditStore {
  readonly db: AuditDb;
  constructor(readonly database: AuditDatabase) {
    this.db = database.db;
  }

  close() {
    return this.database.close();
  }

  async session(tenant: string, session: string): Promise<AuditSessionRow | undefined> {
    const [row] = await this.db.select().from(auditSessions).where(and(eq(auditSessions.tenant, tenant), eq(auditSessions.session, session)));
    return row;
  }

  async sessions(tenant: string): Promise<AuditSessionRow[]> {
    return this.db.select().from(auditSessions).where(eq(auditSessions.tenant, tenant)).orderBy(auditSessions.session);
  }

  /** Where the stored chain of a session ends, with the fold to continue from. */
  async cursor(tenant: string, session: string): Promise<Cursor> {
    const query = this.db
      .select({ seq: auditSessions.seq, hash: auditSessions.headHash, fold: auditSessions.fold })
      .from(auditSessions)
      .where(and(eq(auditSessions.tenant, tenant), eq(auditSessions.session, session)));
    let row: { seq: number; hash: string; fold: unknown } | undefined;
    if (this.database.rows) {
      // PGlite on its thread: one message instead of the client's exchange (the sync reads
      // this once per session it starts on).
      const { sql: text, params } = query.toSQL();
      const [r] = await this.database.rows(text, params);
      if (r) row = { seq: r[0] as number, hash: r[1] as string, fold: r[2] };
    } else [row] = await query;
    if (!row || row.seq === 0) return emptyCursor();
    if (!row.fold) throw new Error(`session ${tenant}:${session} has stored events but no fold`);
    return { seq: row.seq, hash: row.hash, fold: row.fold as FoldState };
  }

  /**
   * Stores verified rows and moves the head from `from` to `p.cursor`. Rows already
   * stored are left as they are (the primary key holds each event once); a head that
   * moved meanwhile rolls the batch back with HeadMovedError.
   */
  async append(tenant: string, session: string, from: number, p: Prepared): Promise<void> {
    if (!p.rows.length) return;
    try {
      await this.appendOnce(tenant, session, from, p, this.database.describe.startsWith("pglite"));
    } catch (e) {
      // COPY cannot skip a row already stored (it should never be: rows past the head are
      // not stored without moving it); if one is, the batch goes again the other way.
      if (!isUniqueViolation(e)) throw e;
      await this.appendOnce(tenant, session, from, p, false);
    }
  }

  private async appendOnce(tenant: string, session: string, from: number, p: Prepared, copy: boolean): Promise<void> {
    const ctx = p.cursor.fold.context;
    const now = Date.now();
    const fold = p.cursor.fold;
    const head = {
      seq: p.cursor.seq,
      headHash: p.cursor.hash,
      fold,
      spentNanos: ctx.spentNanos,
      lastTs: ctx.lastActivity,
      openedAt: ctx.openedAt,
      user: clearValue(fold, "user") ?? null,
      agent: ctx.agent ?? null,
      task: clearValue(fold, "task") ?? null,
      updatedAt: now,
    };
    // The head moves only from where the batch was verified: no row back means it moved.
    const moveHead = (db: AuditDb) =>
      db
        .insert(auditSessions)
        .values({ tenant, session, ...head, knownSeq: p.cursor.seq })
        .onConflictDoUpdate({
          target: [auditSessions.tenant, auditSessions.session],
          set: { ...head, knownSeq: sql`greatest(${auditSessions.knownSeq}, ${p.cursor.seq})` },
          setWhere: eq(auditSessions.seq, from),
        })
        .returning({ seq: auditSessions.seq });
    const chunks: NewAuditEventRow[][] = [];
    for (let i = 0; i < p.rows.length; i += INSERT_CHUNK) chunks.push(p.rows.slice(i, i + INSERT_CHUNK));
    const copySql = `copy audit_events (${COPY_COLUMNS}) from '/dev/blob'`;
    if (copy && this.database.atomically && !p.redactions.length) {
      // PGlite on its thread: the same statements, sent as one transaction (a redaction,
      // which reads before it writes, takes the path below).
      const { sql: text, params } = moveHead(this.db).toSQL();
      const steps = [{ sql: text, params, mustReturnRows: true }, ...chunks.map((rows) => ({ sql: copySql, params: [], blob: new Blob([copyText(rows)]) }))];
      if ((await this.database.atomically(steps)) === 0) throw new HeadMovedError(tenant, session);
      return;
    }
    await this.db.transaction(async (tx) => {
      const moved = await moveHead(tx as unknown as AuditDb);
      if (!moved.length) throw new HeadMovedError(tenant, session);
      const client = copy ? pgliteClient(tx) : undefined;
      for (const rows of chunks) {
        if (client) await client.query(copySql, [], { blob: new Blob([copyText(rows)]) });
        else await tx.execute(sql`insert into ${auditEvents} select * from json_populate_recordset(null::${auditEvents}, ${JSON.stringify(rows.map(asRecord))}::json) on conflict do nothing`);
      }
      // An erasure the log records: the values it names go, with every column that copied
      // them, in the same transaction as the event that says so.
      for (const r of p.redactions) await applyRedaction(tx as unknown as AuditDb, tenant, session, r);
    });
  }

  /** A refused event: kept on the session's row until an event past it verifies. */
  async recordProblem(tenant: string, session: string, r: Refusal): Promise<void> {
    const now = Date.now();
    await this.db
      .insert(auditSessions)
      .values({ tenant, session, problemSeq: r.seq, problem: r.reason, problemAt: now, updatedAt: now })
      .onConflictDoUpdate({ target: [auditSessions.tenant, auditSessions.session], set: { problemSeq: r.seq, problem: r.reason, problemAt: now, updatedAt: now } });
  }

  async clearProblem(tenant: string, session: string): Promise<void> {
    await this.db
      .update(auditSessions)
      .set({ problemSeq: null, problem: null, problemAt: null })
      .where(and(eq(auditSessions.tenant, tenant), eq(auditSessions.session, session)));
  }

  /** What the tenant index says of a session: its head (for lag) and its state. */
  async noteIndex(tenant: string, notes: IndexNote[]): Promise<void> {
    if (!notes.length) return;
    const now = Date.now();
    for (let i = 0; i < notes.length; i += INSERT_CHUNK) {
      const values = notes.slice(i, i + INSERT_CHUNK).map((n) => ({
        tenant,
        session: n.session,
        knownSeq: n.seq,
        state: n.state ?? null,
        user: n.user ?? null,
        agent: n.agent ?? null,
        task: n.task ?? null,
        openedAt: n.openedAt ?? null,
        updatedAt: now,
      }));
      await this.db
        .insert(auditSessions)
        .values(values)
        .onConflictDoUpdate({
          target: [auditSessions.tenant, auditSessions.session],
          set: {
            knownSeq: sql`greatest(${auditSessions.knownSeq}, excluded.known_seq)`,
            state: sql`coalesce(excluded.state, ${auditSessions.state})`,
            updatedAt: now,
          },
        });
    }
  }
}
