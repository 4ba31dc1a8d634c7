import { sql } from "drizzle-orm";
import { bigint, index, integer, jsonb, pgTable, primaryKey, text } from "drizzle-orm/pg-core";

// The audit store: a queryable copy of the actors' logs (the logs stay the truth). One
// schema for PGlite and Postgres; migrations come from drizzle-kit (audit/migrations).
// Times are epoch milliseconds and money is integer nano-dollars, as in the actors.
//
// Columns that name a person (user, task) and the personal values (`pii`) are nullable
// columns beside the event: an erasure blanks them, and `event` (the hashed part, which
// holds only commitments to them) and the chain columns that prove it stay as they are.

const ms = (name: string) => bigint(name, { mode: "number" });

export const auditEvents = pgTable(
  "audit_events",
  {
    tenant: text("tenant").notNull(),
    session: text("session").notNull(),
    seq: integer("seq").notNull(),
    ts: ms("ts").notNull(),
    type: text("type").notNull(),
    eventId: text("event_id").notNull(),
    // Attribution: the event's own, else the session's (a proxied call without
    // X-User-ID belongs to the session's user).
    user: text("user"),
    agent: text("agent"),
    task: text("task"),
    run: text("run"),
    action: text("action"),
    model: text("model"),
    // What was decided: allow | deny | review on decisions, the outcome on settles.
    decision: text("decision"),
    code: text("code"),
    rule: text("rule"),
    /** What this event added to the session's spend, as the session machine folds it. */
    costNanos: ms("cost_nanos").notNull().default(0),
    /** The worst case reserved (or refused) for a call. */
    estimateNanos: ms("estimate_nanos"),
    hash: text("hash").notNull(),
    prev: text("prev").notNull(),
    /** The event exactly as the actor logged it (its hashed part). */
    event: jsonb("event").notNull(),
    /**
     * The personal values beside the event (lib/pii.ts: JSON pointer -> value and salt),
     * each checked against its commitment in `event` before it was stored; never the
     * policy's secrets. An erasure sets it to null, with the person's columns above.
     */
    pii: jsonb("pii"),
  },
  (t) => [
    primaryKey({ columns: [t.tenant, t.session, t.seq] }),
    // Every listing pages by (ts, session, seq); each index ends with that key so a page
    // is one index range scan. Each index also costs every insert, so only the questions
    // auditors ask most (a person, an agent, a time range) get their own; run, model and
    // type filters ride on the time index.
    index("audit_events_tenant_ts").on(t.tenant, t.ts, t.session, t.seq),
    index("audit_events_tenant_user_ts").on(t.tenant, t.user, t.ts, t.session, t.seq),
    index("audit_events_tenant_agent_ts").on(t.tenant, t.agent, t.ts, t.session, t.seq),
  ],
);

/** One row per session: what was stored so far (the sync's cursor) and what went wrong. */
export const auditSessions = pgTable(
  "audit_sessions",
  {
    tenant: text("tenant").notNull(),
    session: text("session").notNull(),
    user: text("user"),
    agent: text("agent"),
    task: text("task"),
    openedAt: ms("opened_at"),
    lastTs: ms("last_ts"),
    /** As the tenant index last said; the store does not fold the machine's state. */
    state: text("state"),
    /** The stored head: every event up to here is stored and chain-verified. */
    seq: integer("seq").notNull().default(0),
    headHash: text("head_hash").notNull().default(sql`repeat('0', 64)`),
    spentNanos: ms("spent_nanos").notNull().default(0),
    /** The folded context at `seq`, so a restarted sync continues without re-reading. */
    fold: jsonb("fold"),
    /** The head the tenant index last reported. */
    knownSeq: integer("known_seq").notNull().default(0),
    /** The first event that failed verification; nothing from it on is stored. */
    problemSeq: integer("problem_seq"),
    problem: text("problem"),
    problemAt: ms("problem_at"),
    updatedAt: ms("updated_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.session] }), index("audit_sessions_tenant_user").on(t.tenant, t.user)],
);

/** Signed heads of a session's log, each verified with the deployment's key before it is stored. */
export const auditCheckpoints = pgTable(
  "audit_checkpoints",
  {
    tenant: text("tenant").notNull(),
    session: text("session").notNull(),
    seq: integer("seq").notNull(),
    hash: text("hash").notNull(),
    ts: ms("ts").notNull(),
    signature: text("signature").notNull(),
    keyId: text("key_id").notNull(),
    alg: text("alg").notNull().default("Ed25519"),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.session, t.seq] })],
);

/**
 * Erasure requests (GDPR Art. 17). The subject is kept only as a salted digest, so the
 * record of an erasure does not itself hold the identifier it erased.
 */
export const auditErasures = pgTable(
  "audit_erasures",
  {
    id: text("id").primaryKey(),
    tenant: text("tenant").notNull(),
    subjectDigest: text("subject_digest").notNull(),
    requestedBy: text("requested_by").notNull(),
    requestedAt: ms("requested_at").notNull(),
    completedAt: ms("completed_at"),
    status: text("status").notNull(),
    sessions: integer("sessions").notNull().default(0),
    events: integer("events").notNull().default(0),
    /**
     * What was blanked, per session (`{pii, user, task}` seq ranges, `row` for the session's
     * own row): applied again whenever the store starts, so a restored copy of the rows
     * cannot bring the subject back. Seqs only, never a value.
     */
    targets: jsonb("targets"),
  },
  (t) => [index("audit_erasures_tenant").on(t.tenant, t.requestedAt), index("audit_erasures_subject").on(t.tenant, t.subjectDigest)],
);

export const auditSchema = { auditEvents, auditSessions, auditCheckpoints, auditErasures };

export type AuditEventRow = typeof auditEvents.$inferSelect;
export type NewAuditEventRow = typeof auditEvents.$inferInsert;
export type AuditSessionRow = typeof auditSessions.$inferSelect;
