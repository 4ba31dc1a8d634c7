import { GENESIS, verifyChain, type Hashable } from "../lib/chain";
import { replay, stateOf, type SessionSnapshot, type SessionState } from "../machines/session";
import { summarize } from "../machines/summary";
import { GovernorEvent } from "../schema/events";
import type { SessionSummary } from "../schema/protocol";

// Verification works on the JSON exactly as stored: zod output may add defaults or drop
// unknown keys, and hashing that instead would hide the very edits the chain exists to show.

export interface AuditOk {
  ok: true;
  state: SessionState;
  summary: SessionSummary;
  count: number;
  head: { seq: number; hash: string };
}

export interface AuditBad {
  ok: false;
  /** The first event that cannot be trusted; everything before it verified. */
  seq: number;
  /** 1-based line in the NDJSON text, when there was one. */
  line?: number;
  reason: string;
}

export type AuditResult = AuditOk | AuditBad;

export class LogIntegrityError extends Error {
  constructor(
    readonly seq: number,
    readonly reason: string,
    readonly line?: number,
  ) {
    super(`event seq ${seq}${line ? ` (line ${line})` : ""}: ${reason}`);
    this.name = "LogIntegrityError";
  }
}

type Entry = { line?: number; raw: unknown } | { line: number; unparsable: string; text: string };

/** A line that is not JSON still names its seq when the digits survived the damage. */
function seqHint(text: string, fallback: number): number {
  const m = /"seq"\s*:\s*(\d+)/.exec(text);
  return m ? Number(m[1]) : fallback;
}

function schemaProblem(raw: unknown): string | undefined {
  const r = GovernorEvent.safeParse(raw);
  if (r.success) return undefined;
  const issue = r.error.issues[0];
  const path = issue?.path.join(".");
  return `not a valid event: ${path ? `${path}: ` : ""}${issue?.message ?? "invalid"}`;
}

/** Validates one raw event against the schema; the client uses this on every page it reads. */
export function checkEvent(raw: unknown, expectedSeq: number, line?: number): GovernorEvent {
  const problem = schemaProblem(raw);
  if (problem) {
    const seq = (raw as { seq?: unknown } | null)?.seq;
    throw new LogIntegrityError(Number.isInteger(seq) ? (seq as number) : expectedSeq, problem, line);
  }
  return raw as GovernorEvent;
}

function audit(entries: Entry[]): AuditResult {
  let head = { seq: 0, hash: GENESIS };
  let snap: SessionSnapshot | undefined;
  for (const entry of entries) {
    if ("unparsable" in entry) return { ok: false, seq: seqHint(entry.text, head.seq + 1), line: entry.line, reason: `line is not valid JSON (${entry.unparsable})` };
    const { raw, line } = entry;
    let event: GovernorEvent;
    try {
      event = checkEvent(raw, head.seq + 1, line);
    } catch (e) {
      const err = e as LogIntegrityError;
      return { ok: false, seq: err.seq, line, reason: err.reason };
    }
    const broken = verifyChain([event as Hashable & { hash: string }], head);
    if (broken) return { ok: false, seq: broken.seq, line, reason: broken.reason };
    try {
      snap = replay([event], snap);
    } catch (e) {
      return { ok: false, seq: event.seq, line, reason: `the machine cannot fold it: ${(e as Error).message}` };
    }
    head = { seq: event.seq, hash: event.hash };
  }
  if (!snap) return { ok: false, seq: 1, reason: "the log is empty: a session's log starts with session.opened" };
  return { ok: true, state: stateOf(snap), summary: summarize(snap), count: entries.length, head };
}

/** Events as fetched (already JSON objects). */
export function auditEvents(events: unknown[]): AuditResult {
  return audit(events.map((raw) => ({ raw })));
}

/** An exported NDJSON log; blank lines are skipped but still counted for line numbers. */
export function auditNdjson(text: string): AuditResult {
  const entries: Entry[] = [];
  text.split("\n").forEach((rawLine, i) => {
    const t = rawLine.trim();
    if (!t) return;
    try {
      entries.push({ line: i + 1, raw: JSON.parse(t) });
    } catch (e) {
      entries.push({ line: i + 1, unparsable: (e as Error).message, text: t });
    }
  });
  return audit(entries);
}
