import { GENESIS, verifyChain, type Hashable } from "../lib/chain";
import { fromRanges, isSecretPointer, piiProblem, type Pii } from "../lib/pii";
import { isCheckpointLine } from "../lib/checkpoint";
import { initialContext, reduce } from "../machines/context";
import { checkEvent, LogIntegrityError } from "../sdk/audit";
import type { GovernorEvent } from "../schema/events";
import type { NewAuditEventRow } from "../schema/audit";
import { forgetInFold, openedBy, toRow, trackAsked, type FoldState } from "./rows";

// Verification before storage, with the same code `governor replay` uses: the schema
// check of sdk/audit.ts, the chain link and hash of lib/chain.ts, and the session
// machine's fold. An event is stored only when it links to the stored head.

export interface Cursor {
  seq: number;
  hash: string;
  fold: FoldState;
}

export function emptyCursor(): Cursor {
  return { seq: 0, hash: GENESIS, fold: { context: initialContext(), asked: {} } };
}

export interface Refusal {
  seq: number;
  reason: string;
}

/**
 * A `subject.redacted` event of the batch: the values of `seqs` go (their `pii`), and the
 * columns that copied them (`users`, `tasks` as the fold held them; the store adds what
 * the rows' own `pii` held) are blanked, in the transaction that stores the batch.
 */
export interface Redaction {
  seqs: number[];
  users: string[];
  tasks: string[];
}

export interface Prepared {
  rows: NewAuditEventRow[];
  /** Where the stored chain ends after these rows. */
  cursor: Cursor;
  /** The first event refused; nothing from it on is in `rows`. */
  refused?: Refusal;
  redactions: Redaction[];
  /** Signed checkpoint lines met in the batch (an export's last line), for the caller to verify. */
  checkpoints: unknown[];
}

/** The values a reader of the store may keep: the personal ones, never the policy's secrets. */
function personalOnly(pii: Pii | undefined): Pii | undefined {
  if (!pii) return undefined;
  // Most events carry no secret: their values are kept as they came, without a copy.
  let secret = false;
  for (const p in pii) if (isSecretPointer(p)) secret = true;
  if (!secret) return Object.keys(pii).length ? pii : undefined;
  let out: Pii | undefined;
  for (const [p, r] of Object.entries(pii)) if (!isSecretPointer(p)) (out ??= {})[p] = r;
  return out;
}

/** A batch being verified: what `prepare` has built so far. */
interface Batch {
  tenant: string;
  session: string;
  rows: NewAuditEventRow[];
  redactions: Redaction[];
  checkpoints: unknown[];
  cursor: Cursor;
  refused?: Refusal;
}

const result = (b: Batch): Prepared => ({ rows: b.rows, cursor: b.cursor, redactions: b.redactions, checkpoints: b.checkpoints, ...(b.refused && { refused: b.refused }) });

/**
 * Verifies `raws` (consecutive events after `from`, as the log serves them) and builds
 * their rows. Events at or before the cursor are skipped (a replayed page); a gap is the
 * caller's to fill, so it ends the batch without a refusal.
 */
export function prepare(tenant: string, session: string, from: Cursor, raws: unknown[]): Prepared {
  const b: Batch = { tenant, session, rows: [], redactions: [], checkpoints: [], cursor: from };
  for (const raw of raws) if (!verifyOne(b, raw)) break;
  return result(b);
}

/** Events verified between two turns of the event loop in prepareYielding (a few milliseconds' work). */
const SLICE = 64;

/**
 * prepare(), letting the event loop run every SLICE events. The sync verifies a page of
 * up to a thousand events at once (tens of milliseconds); meanwhile the database thread's
 * answers to another session's query wait for this thread, and the database sits idle
 * (audit/pglite-thread.ts). The result is exactly prepare()'s.
 */
export async function prepareYielding(tenant: string, session: string, from: Cursor, raws: unknown[]): Promise<Prepared> {
  // One batch at a time, in the order asked: batches verified side by side, a slice of each
  // in turn, would all finish late together and leave the database thread waiting for the
  // first of them (four sessions at once: the first page ready after four pages' work).
  const turn = verifying;
  let done!: () => void;
  verifying = new Promise<void>((r) => (done = r));
  await turn;
  try {
    const b: Batch = { tenant, session, rows: [], redactions: [], checkpoints: [], cursor: from };
    for (let i = 0; i < raws.length; i++) {
      if (i > 0 && i % SLICE === 0) await new Promise((r) => setImmediate(r));
      if (!verifyOne(b, raws[i])) break;
    }
    return result(b);
  } finally {
    done();
  }
}

/** The batch being verified by prepareYielding, which the next one waits for. */
let verifying: Promise<void> = Promise.resolve();

function refuse(b: Batch, r: Refusal): false {
  b.refused = r;
  return false;
}

/** One raw line of the log into the batch; false when the batch ends here (a gap or a refusal). */
function verifyOne(b: Batch, raw: unknown): boolean {
  const { tenant, session } = b;
  const cursor = b.cursor;
  // An export's last line is its signed checkpoint (lib/checkpoint.ts), not an event.
  if (isCheckpointLine(raw)) {
    b.checkpoints.push(raw);
    return true;
  }
  const seq = (raw as { seq?: unknown } | null)?.seq;
  if (typeof seq === "number" && seq <= cursor.seq) return true;
  if (typeof seq === "number" && seq > cursor.seq + 1) return false;
  let e: GovernorEvent;
  try {
    e = checkEvent(raw, cursor.seq + 1);
  } catch (err) {
    if (!(err instanceof LogIntegrityError)) throw err;
    return refuse(b, { seq: err.seq, reason: err.reason });
  }
  const broken = verifyChain([raw as Hashable & { hash: string }], cursor);
  if (broken) return refuse(b, broken);
  if (e.type === "session.opened" && (e.data.tenant !== tenant || e.data.session !== session)) {
    return refuse(b, { seq: e.seq, reason: `the log opens session ${e.data.tenant}:${e.data.session}, not ${tenant}:${session}` });
  }
  if (e.seq === 1 && e.type !== "session.opened") return refuse(b, { seq: 1, reason: "a session's log starts with session.opened" });
  // The values beside the event are outside its hash: each must match its commitment.
  const pii = personalOnly(e.pii as Pii | undefined);
  const wrong = piiProblem(e.data, pii);
  if (wrong) return refuse(b, { seq: e.seq, reason: wrong });
  let context;
  try {
    context = reduce(cursor.fold.context, e);
  } catch (err) {
    return refuse(b, { seq: e.seq, reason: `the machine cannot fold it: ${(err as Error).message}` });
  }
  let fold: FoldState = { context, asked: trackAsked(cursor.fold.asked, e, context, pii), session: e.type === "session.opened" ? openedBy(e, pii) : cursor.fold.session };
  if (e.type === "subject.redacted") {
    const seqs = fromRanges(e.data.seqs, e.seq);
    fold = { ...fold, asked: { ...fold.asked }, ...(fold.session && { session: { ...fold.session } }) };
    b.redactions.push({ seqs, ...forgetInFold(fold, new Set(seqs)) });
  }
  // The row keeps the hashed part as `event`, the values beside it as `pii`.
  let event = raw;
  if (raw && typeof raw === "object" && "pii" in raw) {
    const { pii: _beside, ...hashed } = raw as Record<string, unknown>;
    event = hashed;
  }
  b.rows.push(toRow(tenant, session, e, event, pii, cursor.fold, fold));
  b.cursor = { seq: e.seq, hash: e.hash, fold };
  return true;
}
