import { Readable } from "node:stream";
import { stringify } from "csv-stringify";
import type { SignedCheckpoint } from "../lib/checkpoint";
import { usdDecimal } from "../lib/money";
import { reveal, type Pii } from "../lib/pii";
import type { AuditEventItem } from "../schema/answers";

// Exports of any size: rows are pulled from the store a page at a time and pushed out
// through a stream, so memory stays flat and a slow reader slows the reads, not the heap.

/** The CSV's columns, in this order, for good: spreadsheets and scripts index by them. */
export const CSV_COLUMNS = [
  "tenant",
  "session",
  "seq",
  "ts",
  "time",
  "type",
  "event_id",
  "user",
  "agent",
  "task",
  "run",
  "action",
  "model",
  "decision",
  "code",
  "rule",
  "cost_usd",
  "estimate_usd",
  "hash",
  "prev",
  "data",
] as const;

/** An export holds events and, when asked for, the signed checkpoints of their sessions. */
export type ExportItem = AuditEventItem | SignedCheckpoint;

const isCheckpoint = (x: ExportItem): x is SignedCheckpoint => "checkpoint" in x && !("type" in x);

/** A checkpoint as a CSV row: type "checkpoint", its session, seq, time and hash, and the signed line as `data`. */
function checkpointRecord(c: SignedCheckpoint): Record<(typeof CSV_COLUMNS)[number], string | number | null> {
  const cp = c.checkpoint;
  const blank = Object.fromEntries(CSV_COLUMNS.map((k) => [k, null])) as Record<(typeof CSV_COLUMNS)[number], string | number | null>;
  return { ...blank, tenant: cp.tenant, session: cp.session, seq: cp.seq, ts: cp.ts, time: new Date(cp.ts).toISOString(), type: "checkpoint", hash: cp.hash, data: JSON.stringify(c) };
}

export function csvRecord(e: AuditEventItem): Record<(typeof CSV_COLUMNS)[number], string | number | null> {
  return {
    tenant: e.tenant,
    session: e.session,
    seq: e.seq,
    ts: e.ts,
    time: new Date(e.ts).toISOString(),
    type: e.type,
    event_id: e.eventId,
    user: e.user,
    agent: e.agent,
    task: e.task,
    run: e.run,
    action: e.action,
    model: e.model,
    decision: e.decision,
    code: e.code,
    rule: e.rule,
    // Plain decimals: a spreadsheet reads "2e-8" as text, or not as the amount.
    cost_usd: usdDecimal(e.costUsd),
    estimate_usd: e.estimateUsd === null ? null : usdDecimal(e.estimateUsd),
    hash: e.hash,
    prev: e.prev,
    // The data as a person reads it: each personal value in place of its commitment (an erased one stays a commitment).
    data: JSON.stringify(reveal((e.event as { data?: unknown } | null)?.data ?? null, (e.event as { pii?: Pii } | null)?.pii)),
  };
}

export type ExportFormat = "csv" | "json" | "ndjson";

export const CONTENT_TYPES: Record<ExportFormat, string> = {
  csv: "text/csv; charset=utf-8",
  json: "application/json",
  ndjson: "application/x-ndjson",
};

/** A readable of the export's text; `rows` is consumed only as fast as it is read. */
export function exportStream(format: ExportFormat, rows: AsyncIterable<ExportItem>): Readable {
  if (format === "csv") {
    // A cell that starts with = + - @ would run as a formula in a spreadsheet, and user
    // ids and reasons come from agents: such cells get a leading apostrophe.
    const csv = stringify({ header: true, columns: [...CSV_COLUMNS], escape_formulas: true, cast: { number: (n) => String(n) } });
    const source = Readable.from(mapAsync(rows, (x) => (isCheckpoint(x) ? checkpointRecord(x) : csvRecord(x))));
    source.on("error", (e) => csv.destroy(e));
    return source.pipe(csv);
  }
  if (format === "ndjson") return Readable.from(mapAsync(rows, (e) => `${JSON.stringify(e)}\n`));
  return Readable.from(jsonArray(rows));
}

async function* mapAsync<T, U>(it: AsyncIterable<T>, f: (t: T) => U): AsyncGenerator<U> {
  for await (const x of it) yield f(x);
}

async function* jsonArray(rows: AsyncIterable<ExportItem>): AsyncGenerator<string> {
  let first = true;
  yield "[";
  for await (const e of rows) {
    yield `${first ? "\n" : ",\n"}${JSON.stringify(e)}`;
    first = false;
  }
  yield first ? "]\n" : "\n]\n";
}

/** The events, then the stored checkpoints of every session they came from (as the log route ends with its own). */
export async function* withCheckpoints(events: AsyncIterable<AuditEventItem>, checkpoints: (sessions: string[]) => AsyncIterable<SignedCheckpoint>): AsyncGenerator<ExportItem> {
  const sessions = new Set<string>();
  for await (const e of events) {
    sessions.add(e.session);
    yield e;
  }
  yield* checkpoints([...sessions].sort());
}
