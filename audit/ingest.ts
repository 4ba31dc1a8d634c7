import { GENESIS, verifyChain, type Hashable } from "../lib/chain";
import { isCheckpointLine } from "../lib/checkpoint";
import { initialContext, reduce } from "../machines/context";
import { checkEvent, LogIntegrityError } from "../sdk/audit";
import type { GovernorEvent } from "../schema/events";
import type { NewAuditEventRow } from "../schema/audit";
import { toRow, trackAsked, type FoldState } from "./rows";

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

export interface Prepared {
  rows: NewAuditEventRow[];
  /** Where the stored chain ends after these rows. */
  cursor: Cursor;
  /** The first event refused; nothing from it on is in `rows`. */
  refused?: Refusal;
}

/**
 * Verifies `raws` (consecutive events after `from`, as the log serves them) and builds
 * their rows. Events at or before the cursor are skipped (a replayed page); a gap is the
 * caller's to fill, so it ends the batch without a refusal.
 */
export function prepare(tenant: string, session: string, from: Cursor, raws: unknown[]): Prepared {
  const rows: NewAuditEventRow[] = [];
  let cursor = from;
  for (const raw of raws) {
    // An export's last line is its signed checkpoint (lib/checkpoint.ts), not an event.
    if (isCheckpointLine(raw)) continue;
    const seq = (raw as { seq?: unknown } | null)?.seq;
    if (typeof seq === "number" && seq <= cursor.seq) continue;
    if (typeof seq === "number" && seq > cursor.seq + 1) break;
    let e: GovernorEvent;
    try {
      e = checkEvent(raw, cursor.seq + 1);
    } catch (err) {
      if (!(err instanceof LogIntegrityError)) throw err;
      return { rows, cursor, refused: { seq: err.seq, reason: err.reason } };
    }
    const broken = verifyChain([raw as Hashable & { hash: string }], cursor);
    if (broken) return { rows, cursor, refused: broken };
    if (e.type === "session.opened" && (e.data.tenant !== tenant || e.data.session !== session)) {
      return { rows, cursor, refused: { seq: e.seq, reason: `the log opens session ${e.data.tenant}:${e.data.session}, not ${tenant}:${session}` } };
    }
    if (e.seq === 1 && e.type !== "session.opened") return { rows, cursor, refused: { seq: 1, reason: "a session's log starts with session.opened" } };
    let context;
    try {
      context = reduce(cursor.fold.context, e);
    } catch (err) {
      return { rows, cursor, refused: { seq: e.seq, reason: `the machine cannot fold it: ${(err as Error).message}` } };
    }
    const fold: FoldState = { context, asked: trackAsked(cursor.fold.asked, e, context) };
    rows.push(toRow(tenant, session, e, raw, cursor.fold, fold));
    cursor = { seq: e.seq, hash: e.hash, fold };
  }
  return { rows, cursor };
}
