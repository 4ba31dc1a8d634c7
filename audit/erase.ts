import { and, eq, inArray, isNotNull, sql } from "drizzle-orm";
import { fromRanges, TASK_POINTERS, toRanges, USER_POINTERS, type Pii } from "../lib/pii";
import { auditErasures, auditEvents, auditSessions } from "../schema/audit";
import type { AuditDb } from "./db";
import type { Redaction } from "./ingest";
import { forgetValuesInFold, type FoldState } from "./rows";

// Erasure in the audit store (GDPR Art. 17). Three ways in, one effect: the subject's
// values (`pii`) and every column that copied them (`user`, `task`, the session's row and
// its fold) are blanked, while `event` (the hashed part, commitments only) and the chain
// columns stay, so the stored logs still verify.
// - A `subject.redacted` event reaching the store (the sync): the seqs it names.
// - The audit service's erasure (POST /v1/audit/erasures from the gateway, after the
//   actors): the subject's id is known, every row naming it is blanked at once, and the
//   erasure is recorded (the keyed digest, and the seqs blanked; never the id).
// - Every start of the service: recorded erasures are applied again, so rows brought back
//   from a backup lose the subject again.

const CHUNK = 1000;

type Tx = AuditDb;

export interface SessionTargets {
  /** Seqs ("3-5,9") whose `pii`, `user`, `task` were blanked. */
  pii?: string[];
  user?: string[];
  task?: string[];
  /** The session's own row named the subject. */
  row?: boolean;
}

export type Targets = Record<string, SessionTargets>;

function chunks<T>(xs: T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += CHUNK) out.push(xs.slice(i, i + CHUNK));
  return out;
}

/** The personal values held at `seqs` (before they go): the ids and tasks among them. */
async function valuesAt(tx: Tx, tenant: string, session: string, seqs: number[]): Promise<{ users: string[]; tasks: string[] }> {
  const users: string[] = [];
  const tasks: string[] = [];
  const e = auditEvents;
  for (const part of chunks(seqs)) {
    const rows = await tx
      .select({ pii: e.pii })
      .from(e)
      .where(and(eq(e.tenant, tenant), eq(e.session, session), inArray(e.seq, part), isNotNull(e.pii)));
    for (const r of rows) {
      for (const [p, v] of Object.entries((r.pii ?? {}) as Pii)) {
        if (typeof v?.v !== "string") continue;
        if (USER_POINTERS.has(p)) users.push(v.v);
        if (TASK_POINTERS.has(p)) tasks.push(v.v);
      }
    }
  }
  return { users, tasks };
}

/** Blanks `pii` at `seqs`, and `user` / `task` wherever they hold one of `users` / `tasks`, in one session. */
async function blank(tx: Tx, tenant: string, session: string, seqs: number[], users: string[], tasks: string[]): Promise<SessionTargets> {
  const e = auditEvents;
  const inSession = and(eq(e.tenant, tenant), eq(e.session, session));
  const out: SessionTargets = {};
  const piiSeqs: number[] = [];
  for (const part of chunks(seqs)) {
    const r = await tx.update(e).set({ pii: null }).where(and(inSession, inArray(e.seq, part), isNotNull(e.pii))).returning({ seq: e.seq });
    piiSeqs.push(...r.map((x) => x.seq));
  }
  const u = users.length ? await tx.update(e).set({ user: null }).where(and(inSession, inArray(e.user, [...new Set(users)]))).returning({ seq: e.seq }) : [];
  // A row of the subject carries the subject's task too (its own, or the session's).
  const userSeqs = u.map((x) => x.seq);
  const t: number[] = [];
  for (const part of chunks(userSeqs)) t.push(...(await tx.update(e).set({ task: null }).where(and(inSession, inArray(e.seq, part), isNotNull(e.task))).returning({ seq: e.seq })).map((x) => x.seq));
  if (tasks.length) t.push(...(await tx.update(e).set({ task: null }).where(and(inSession, inArray(e.task, [...new Set(tasks)]))).returning({ seq: e.seq })).map((x) => x.seq));
  if (piiSeqs.length) out.pii = toRanges(piiSeqs);
  if (userSeqs.length) out.user = toRanges(userSeqs);
  if (t.length) out.task = toRanges(t);
  if (users.length || tasks.length) {
    const s = auditSessions;
    const row = await tx
      .update(s)
      .set({ user: null, task: null })
      .where(and(eq(s.tenant, tenant), eq(s.session, session), sql`(${users.length ? inArray(s.user, [...new Set(users)]) : sql`false`} or ${tasks.length ? inArray(s.task, [...new Set(tasks)]) : sql`false`})`))
      .returning({ session: s.session });
    if (row.length) out.row = true;
    await scrubFold(tx, tenant, session, new Set(users), new Set(tasks));
  }
  return out;
}

/** The stored fold (what a restarted sync continues from) holds revealed values too. */
async function scrubFold(tx: Tx, tenant: string, session: string, users: Set<string>, tasks: Set<string>) {
  const s = auditSessions;
  const [row] = await tx.select({ fold: s.fold }).from(s).where(and(eq(s.tenant, tenant), eq(s.session, session)));
  const fold = row?.fold as FoldState | null | undefined;
  if (!fold || !forgetValuesInFold(fold, users, tasks)) return;
  await tx.update(s).set({ fold }).where(and(eq(s.tenant, tenant), eq(s.session, session)));
}

/** A `subject.redacted` event stored by the sync: what it names goes, with the columns that copied it. */
export async function applyRedaction(tx: Tx, tenant: string, session: string, r: Redaction): Promise<void> {
  const found = await valuesAt(tx, tenant, session, r.seqs);
  await blank(tx, tenant, session, r.seqs, [...r.users, ...found.users], [...r.tasks, ...found.tasks]);
}

/** Where the store has the subject: sessions with a row naming them, and how far each session is stored. */
export async function erasureCandidates(db: AuditDb, tenant: string, user: string): Promise<{ sessions: string[]; stored: Record<string, number> }> {
  const e = auditEvents;
  const s = auditSessions;
  const named = await db.selectDistinct({ session: e.session }).from(e).where(and(eq(e.tenant, tenant), eq(e.user, user)));
  const heads = await db.select({ session: s.session, seq: s.seq, user: s.user }).from(s).where(eq(s.tenant, tenant));
  const sessions = new Set(named.map((r) => r.session));
  for (const h of heads) if (h.user === user) sessions.add(h.session);
  return { sessions: [...sessions], stored: Object.fromEntries(heads.map((h) => [h.session, h.seq])) };
}

export interface ErasureRequest {
  erasure: string;
  subject: string;
  user: string;
  by: string;
  /** What the actors erased, per session. */
  sessions: Array<{ session: string; erased: number[] }>;
}

export interface ErasureRecord {
  id: string;
  subject: string;
  requestedBy: string;
  requestedAt: number;
  completedAt: number | null;
  status: string;
  sessions: number;
  events: number;
}

/**
 * The audit service's erasure, at once: the rows of the sessions the actors erased lose
 * those values, and every row of the tenant naming the subject loses its columns. Recorded
 * under the subject's digest; a later erasure of the same subject adds to that record.
 */
export async function recordErasure(db: AuditDb, tenant: string, req: ErasureRequest): Promise<ErasureRecord> {
  return db.transaction(async (txRaw) => {
    const tx = txRaw as unknown as Tx;
    const e = auditEvents;
    const targets: Targets = {};
    const erased = new Map(req.sessions.map((s) => [s.session, s.erased]));
    const named = await tx.selectDistinct({ session: e.session }).from(e).where(and(eq(e.tenant, tenant), eq(e.user, req.user)));
    const rows = await tx.select({ session: auditSessions.session }).from(auditSessions).where(and(eq(auditSessions.tenant, tenant), eq(auditSessions.user, req.user)));
    const sessions = new Set([...erased.keys(), ...named.map((r) => r.session), ...rows.map((r) => r.session)]);
    for (const session of sessions) {
      const seqs = erased.get(session) ?? [];
      const found = await valuesAt(tx, tenant, session, seqs);
      const t = await blank(tx, tenant, session, seqs, [req.user, ...found.users], found.tasks);
      if (Object.keys(t).length) targets[session] = t;
    }
    const events = Object.values(targets).reduce((n, t) => n + new Set(fromRanges([...(t.pii ?? []), ...(t.user ?? []), ...(t.task ?? [])])).size, 0);
    const now = Date.now();
    const [prior] = await tx.select().from(auditErasures).where(and(eq(auditErasures.tenant, tenant), eq(auditErasures.subjectDigest, req.subject)));
    if (prior) {
      const merged = mergeTargets((prior.targets ?? {}) as Targets, targets);
      const [row] = await tx
        .update(auditErasures)
        .set({ targets: merged, completedAt: now, status: "completed", sessions: Object.keys(merged).length, events: prior.events + events })
        .where(eq(auditErasures.id, prior.id))
        .returning();
      return recordOf(row);
    }
    const [row] = await tx
      .insert(auditErasures)
      .values({ id: req.erasure, tenant, subjectDigest: req.subject, requestedBy: req.by, requestedAt: now, completedAt: now, status: "completed", sessions: Object.keys(targets).length, events, targets })
      .returning();
    return recordOf(row);
  });
}

function mergeTargets(a: Targets, b: Targets): Targets {
  const out: Targets = { ...a };
  for (const [session, t] of Object.entries(b)) {
    const had = out[session] ?? {};
    const join = (x?: string[], y?: string[]) => (x || y ? toRanges([...fromRanges(x), ...fromRanges(y)]) : undefined);
    out[session] = { pii: join(had.pii, t.pii), user: join(had.user, t.user), task: join(had.task, t.task), row: had.row || t.row || undefined };
  }
  return out;
}

function recordOf(r: typeof auditErasures.$inferSelect): ErasureRecord {
  return { id: r.id, subject: r.subjectDigest, requestedBy: r.requestedBy, requestedAt: r.requestedAt, completedAt: r.completedAt, status: r.status, sessions: r.sessions, events: r.events };
}

export async function listErasures(db: AuditDb, tenant: string): Promise<ErasureRecord[]> {
  const rows = await db.select().from(auditErasures).where(eq(auditErasures.tenant, tenant)).orderBy(auditErasures.requestedAt);
  return rows.map(recordOf);
}

/**
 * Applies every recorded erasure again (each start of the service): rows restored from a
 * backup lose the subject's values and columns once more. Returns the rows changed.
 */
export async function reapplyErasures(db: AuditDb): Promise<number> {
  const all = await db.select().from(auditErasures);
  let changed = 0;
  for (const er of all) {
    await db.transaction(async (txRaw) => {
      const tx = txRaw as unknown as Tx;
      const e = auditEvents;
      for (const [session, t] of Object.entries((er.targets ?? {}) as Targets)) {
        const inSession = and(eq(e.tenant, er.tenant), eq(e.session, session));
        const piiSeqs = fromRanges(t.pii);
        // Values a restored row holds again say which ids and tasks to blank elsewhere too.
        const found = await valuesAt(tx, er.tenant, session, piiSeqs);
        for (const part of chunks(piiSeqs)) changed += (await tx.update(e).set({ pii: null }).where(and(inSession, inArray(e.seq, part), isNotNull(e.pii))).returning({ seq: e.seq })).length;
        for (const part of chunks(fromRanges(t.user))) changed += (await tx.update(e).set({ user: null, task: null }).where(and(inSession, inArray(e.seq, part), isNotNull(e.user))).returning({ seq: e.seq })).length;
        for (const part of chunks(fromRanges(t.task))) changed += (await tx.update(e).set({ task: null }).where(and(inSession, inArray(e.seq, part), isNotNull(e.task))).returning({ seq: e.seq })).length;
        if (t.row) await tx.update(auditSessions).set({ user: null, task: null }).where(and(eq(auditSessions.tenant, er.tenant), eq(auditSessions.session, session)));
        if (found.users.length || found.tasks.length) await blank(tx, er.tenant, session, [], found.users, found.tasks);
      }
    });
  }
  return changed;
}
