import { and, asc, eq, gte, inArray, lt, sql, type SQL } from "drizzle-orm";
import { toUsd } from "../lib/money";
import { auditEvents, type AuditEventRow } from "../schema/audit";
import type { AuditEventItem, AuditEventsAnswer, SpendRow } from "../schema/answers";
import type { AuditDb } from "./db";
import { decodeCursor, encodeCursor, type EventQuery, type Filter, type PageKey, type SpendBy } from "./filters";

// Reads of the audit store. Every query is scoped to one tenant before any filter: the
// tenant comes from the caller's token (through the gateway), never from the query.

export function itemOf(r: AuditEventRow): AuditEventItem {
  return {
    tenant: r.tenant,
    session: r.session,
    seq: r.seq,
    ts: r.ts,
    type: r.type,
    eventId: r.eventId,
    user: r.user,
    agent: r.agent,
    task: r.task,
    run: r.run,
    action: r.action,
    model: r.model,
    decision: r.decision,
    code: r.code,
    rule: r.rule,
    costUsd: toUsd(r.costNanos),
    estimateUsd: r.estimateNanos === null ? null : toUsd(r.estimateNanos),
    hash: r.hash,
    prev: r.prev,
    // As the log route gives it: the hashed part, with the personal values beside it while they exist.
    event: r.pii ? { ...(r.event as object), pii: r.pii } : r.event,
  };
}

function where(tenant: string, f: Filter, after?: PageKey): SQL {
  const e = auditEvents;
  const parts: Array<SQL | undefined> = [
    eq(e.tenant, tenant),
    f.user !== undefined ? eq(e.user, f.user) : undefined,
    f.agent !== undefined ? eq(e.agent, f.agent) : undefined,
    f.session !== undefined ? eq(e.session, f.session) : undefined,
    f.run !== undefined ? eq(e.run, f.run) : undefined,
    f.model !== undefined ? eq(e.model, f.model) : undefined,
    f.type !== undefined ? inArray(e.type, f.type) : undefined,
    f.decision !== undefined ? inArray(e.decision, f.decision) : undefined,
    f.since !== undefined ? gte(e.ts, f.since) : undefined,
    f.until !== undefined ? lt(e.ts, f.until) : undefined,
    after ? sql`(${e.ts}, ${e.session}, ${e.seq}) > (${after.ts}, ${after.session}, ${after.seq})` : undefined,
  ];
  return and(...parts)!;
}

/** A page of `GET /v1/audit/events` (schema/answers.ts AuditEventsAnswer). */
export type EventPage = AuditEventsAnswer;

/** One page in (ts, session, seq) order; nextCursor is null on the last page. */
export async function eventPage(db: AuditDb, tenant: string, q: Pick<EventQuery, "limit" | "cursor"> & Filter): Promise<EventPage> {
  const after = q.cursor ? decodeCursor(q.cursor) : undefined;
  const e = auditEvents;
  const rows = await db
    .select()
    .from(e)
    .where(where(tenant, q, after))
    .orderBy(asc(e.ts), asc(e.session), asc(e.seq))
    .limit(q.limit + 1);
  const more = rows.length > q.limit;
  const page = more ? rows.slice(0, q.limit) : rows;
  const last = page.at(-1);
  return { events: page.map(itemOf), nextCursor: more && last ? encodeCursor(last) : null };
}

/** Every matching event, a page at a time: memory stays flat however many there are. */
export async function* eachEvent(db: AuditDb, tenant: string, f: Filter, pageSize = 1000): AsyncGenerator<AuditEventItem> {
  let cursor: string | undefined;
  for (;;) {
    const page = await eventPage(db, tenant, { ...f, limit: pageSize, cursor });
    yield* page.events;
    if (!page.nextCursor) return;
    cursor = page.nextCursor;
  }
}

// "calls": LLM calls and tool actions decided (allowed, refused or sent to review).
const DECISIONS = ["request.reserved", "request.denied", "action.checked"];

/** Time buckets by their length in ms; a bucket's key is its start as an ISO time (UTC). */
const BUCKET_MS = { hour: 3_600_000, minute: 60_000 } as const;

export async function spend(db: AuditDb, tenant: string, by: SpendBy, f: Filter): Promise<{ by: SpendBy; rows: SpendRow[] }> {
  const e = auditEvents;
  const bucket = by === "hour" || by === "minute" ? BUCKET_MS[by] : undefined;
  const key: SQL<string | null> =
    by === "day"
      ? sql<string>`to_char(to_timestamp(${e.ts} / 1000.0) at time zone 'UTC', 'YYYY-MM-DD')`
      : bucket !== undefined
        ? // Integer division of epoch ms (ts is never negative): the bucket's number.
          sql<string>`(${e.ts} / ${bucket})::text`
        : sql<string | null>`${e[by as "agent" | "user" | "model" | "session"]}`;
  const rows = await db
    .select({
      key,
      nanos: sql<string>`coalesce(sum(${e.costNanos}), 0)::text`,
      calls: sql<string>`(count(*) filter (where ${inArray(e.type, DECISIONS)}))::text`,
    })
    .from(e)
    .where(where(tenant, f))
    .groupBy(sql`1`);
  const out = rows.map((r) => ({ key: bucket !== undefined && r.key !== null ? new Date(Number(r.key) * bucket).toISOString() : r.key, spentUsd: toUsd(Number(r.nanos)), calls: Number(r.calls) }));
  out.sort(by === "day" || bucket !== undefined ? (a, b) => String(a.key).localeCompare(String(b.key)) : (a, b) => b.spentUsd - a.spentUsd || String(a.key ?? "").localeCompare(String(b.key ?? "")));
  return { by, rows: out };
}
