import { GENESIS, verifyChain, type Hashable } from "./chain";
import { ERASED, isCommitment, personalFields, piiProblem, reveal, type Pii } from "./pii";
import { isCheckpointLine, SignedCheckpoint, verifyCheckpoint, type PublicKey } from "./checkpoint";
import { replay, stateOf, type SessionSnapshot, type SessionState } from "../machines/session";
import { summarize } from "../machines/summary";
import { GovernorEvent } from "../schema/events";
import type { SessionSummary } from "../schema/protocol";

// Verification of an exported log: the hash chain, the fold through the machine, and the
// signed checkpoint that says the log is whole. Shared by `governor replay` and the
// gateway's what-if route. It works on the JSON exactly as stored: zod output may add
// defaults or drop unknown keys, and hashing that would hide the very edits the chain shows.

export interface AuditOk {
  ok: true;
  state: SessionState;
  summary: SessionSummary;
  count: number;
  head: { seq: number; hash: string };
  events: GovernorEvent[];
  /** The folded end state (what a what-if compares with). */
  snapshot: SessionSnapshot;
  /** The last checkpoint line, with the hash the log holds at its seq (when it reaches it). */
  checkpoint?: { signed: SignedCheckpoint; line?: number; logHash?: string };
  /** The session.opened event says its checkpoints are signed with this key. */
  signingKid?: string;
  /** Where the log's personal values stand (lib/pii.ts). */
  personal: PersonalReport;
  /** The events with the values beside them put back in place (what a what-if decides on). */
  revealed: GovernorEvent[];
}

/**
 * Personal values of a log: `revealed` (beside the log, each checked against its
 * commitment), `erased` (a commitment whose value was deleted), `plain` (written before
 * commitments, inside the hash for good); and the erasures the log records.
 */
export interface PersonalReport {
  revealed: number;
  erased: Array<{ seq: number; pointer: string }>;
  plain: Array<{ seq: number; pointer: string }>;
  redactions: Array<{ seq: number; ts: number; subject: string; by: string; erasure?: string }>;
}

export type Problem = "chain" | "missing_checkpoint" | "bad_checkpoint" | "other_session" | "key_unknown" | "signature_invalid" | "missing_tail" | "checkpoint_mismatch";

export interface AuditBad {
  ok: false;
  /** What kind of wrong: a broken chain, or a checkpoint that does not prove the log. */
  problem: Problem;
  /** The first event that cannot be trusted; everything before it verified. */
  seq?: number;
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

export type Entry = { line?: number; raw: unknown } | { line: number; unparsable: string; text: string };

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

const chainBad = (seq: number, reason: string, line?: number): AuditBad => ({ ok: false, problem: "chain", seq, ...(line !== undefined && { line }), reason });

/** Chain and fold; checkpoint lines are set aside for proveComplete. */
export function auditEntries(entries: Entry[]): AuditResult {
  let head = { seq: 0, hash: GENESIS };
  let snap: SessionSnapshot | undefined;
  const events: GovernorEvent[] = [];
  let checkpoint: AuditOk["checkpoint"];
  const hashes: string[] = [];
  const personal: PersonalReport = { revealed: 0, erased: [], plain: [], redactions: [] };
  const revealed: GovernorEvent[] = [];
  for (const entry of entries) {
    if ("unparsable" in entry) return chainBad(seqHint(entry.text, head.seq + 1), `line is not valid JSON (${entry.unparsable})`, entry.line);
    const { raw, line } = entry;
    if (isCheckpointLine(raw)) {
      const c = SignedCheckpoint.safeParse(raw);
      if (!c.success) {
        const issue = c.error.issues[0];
        return { ok: false, problem: "bad_checkpoint", ...(line !== undefined && { line }), reason: `the checkpoint line is malformed: ${issue?.path.join(".") || "(root)"}: ${issue?.message}` };
      }
      checkpoint = { signed: c.data, line };
      continue;
    }
    let event: GovernorEvent;
    try {
      event = checkEvent(raw, head.seq + 1, line);
    } catch (e) {
      const err = e as LogIntegrityError;
      return chainBad(err.seq, err.reason, line);
    }
    const broken = verifyChain([event as Hashable & { hash: string }], head);
    if (broken) return chainBad(broken.seq, broken.reason, line);
    // The values beside the event are outside its hash: each must match the commitment inside.
    const pii = event.pii as Pii | undefined;
    const wrong = piiProblem(event.data, pii);
    if (wrong) return chainBad(event.seq, wrong, line);
    for (const f of personalFields(event.type, event.data, pii)) {
      if (f.status === "revealed") personal.revealed++;
      else personal[f.status].push({ seq: event.seq, pointer: f.pointer });
    }
    if (event.type === "subject.redacted") personal.redactions.push({ seq: event.seq, ts: event.ts, subject: event.data.subject, by: event.data.by, ...(event.data.erasure && { erasure: event.data.erasure }) });
    revealed.push(pii ? ({ ...event, data: reveal(event.data, pii) } as GovernorEvent) : event);
    try {
      snap = replay([event], snap);
    } catch (e) {
      return chainBad(event.seq, `the machine cannot fold it: ${(e as Error).message}`, line);
    }
    head = { seq: event.seq, hash: event.hash };
    hashes[event.seq] = event.hash;
    events.push(event);
  }
  if (!snap) return { ok: false, problem: "chain", seq: 1, reason: "the log is empty: a session's log starts with session.opened" };
  if (checkpoint) checkpoint.logHash = hashes[checkpoint.signed.checkpoint.seq];
  const opened = events[0].type === "session.opened" ? events[0].data.signingKid : undefined;
  const summary = shownSummary(summarize(snap), revealed);
  return { ok: true, state: stateOf(snap), summary, count: events.length, head, events, snapshot: snap, ...(checkpoint && { checkpoint }), ...(opened && { signingKid: opened }), personal, revealed };
}

/** The summary with the session's user and task as the log reveals them: the value, or "[erased]". */
function shownSummary(s: SessionSummary, revealed: GovernorEvent[]): SessionSummary {
  const opened = revealed[0]?.type === "session.opened" ? revealed[0].data : undefined;
  const shown = (folded: string | undefined, value: unknown) => (folded === undefined ? undefined : isCommitment(folded) ? (isCommitment(value) || value === undefined ? ERASED : String(value)) : folded);
  const user = shown(s.user, opened?.user);
  const task = shown(s.task, opened?.task);
  return { ...s, ...(user !== undefined && { user }), ...(task !== undefined && { task }) };
}

/** Events as fetched (already JSON objects), checkpoint lines included. */
export function auditEvents(events: unknown[]): AuditResult {
  return auditEntries(events.map((raw) => ({ raw })));
}

export function parseNdjson(text: string): Entry[] {
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
  return entries;
}

/** An exported NDJSON log; blank lines are skipped but still counted for line numbers. */
export function auditNdjson(text: string): AuditResult {
  return auditEntries(parseNdjson(text));
}

export interface Proven {
  ok: true;
  /** Null: an old log without a checkpoint, which still replays but cannot prove it is whole. */
  checkpoint: { seq: number; ts: number; kid: string } | null;
  warnings: string[];
}

/** Where the keys come from: those trusted, or why there are none. */
export type KeySource = { keys: PublicKey[]; from: string } | { keys: []; error: string };
/** Keys, or how to get them once a checkpoint needs them (the server is asked only then). */
export type Keys = KeySource | (() => Promise<KeySource>);

/**
 * Whether the log is the whole log Governor wrote, up to its signed head. `keys` are the
 * public keys to trust (the server's, a file's, --key's).
 */
export async function proveComplete(a: AuditOk, keys: Keys): Promise<Proven | AuditBad> {
  const bad = (problem: Problem, reason: string, seq?: number): AuditBad => ({ ok: false, problem, reason, ...(seq !== undefined && { seq }), ...(a.checkpoint?.line !== undefined && { line: a.checkpoint.line }) });
  const c = a.checkpoint;
  if (!c) {
    if (a.signingKid) return bad("missing_checkpoint", `missing checkpoint: this session's checkpoints are signed (key ${a.signingKid}), but the log does not end with one (an export keeps it as its last line, as \`governor log\` writes it), so its tail after seq ${a.head.seq} may be missing`);
    return { ok: true, checkpoint: null, warnings: ["no checkpoint: the log replays, but that it is complete cannot be proven (it was exported before checkpoints)"] };
  }
  const cp = c.signed.checkpoint;
  const self = `${a.summary.tenant}:${a.summary.session}`;
  if (`${cp.tenant}:${cp.session}` !== self) return bad("other_session", `checkpoint of another session: it was signed for ${cp.tenant}:${cp.session}, and this log is ${self}`);
  const source = typeof keys === "function" ? await keys() : keys;
  const key = source.keys.find((k) => k.kid === c.signed.kid);
  if (!key) {
    const known = "error" in source ? source.error : `trusted: ${source.keys.map((k) => k.kid).join(", ") || "none"} (${source.from})`;
    return bad("key_unknown", `key unknown: the checkpoint was signed with key ${c.signed.kid}; ${known}`);
  }
  if (!(await verifyCheckpoint(c.signed, key))) return bad("signature_invalid", `checkpoint signature invalid: the checkpoint for seq ${cp.seq} was not signed by key ${key.kid} as it stands`);
  if (cp.seq > a.head.seq) return bad("missing_tail", `missing tail after seq ${a.head.seq}: the signed checkpoint covers the log up to seq ${cp.seq}`, a.head.seq + 1);
  if (c.logHash !== cp.hash) return bad("checkpoint_mismatch", `the log does not match its checkpoint: event seq ${cp.seq} has hash ${c.logHash}, the signed head is ${cp.hash} (the log was rewritten up to there and re-hashed)`, cp.seq);
  const warnings = cp.seq < a.head.seq ? [`events after seq ${cp.seq} are not covered by the checkpoint`] : [];
  return { ok: true, checkpoint: { seq: cp.seq, ts: cp.ts, kid: c.signed.kid }, warnings };
}
