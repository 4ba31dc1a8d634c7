import { auditEntries, proveComplete, type AuditBad, type Entry, type Keys, type PersonalReport } from "./audit";
import { whatIf, whatIfPolicy, type PolicyMode } from "../machines/whatif";
import type { SessionSummary } from "../schema/protocol";
import type { WhatIfReport } from "../schema/whatif";

// What `governor replay [--policy] --json` prints and `POST /v1/sessions/:id/what-if`
// answers: the log verified (chain, fold, checkpoint), and optionally re-decided.

export interface ReplayOk {
  ok: true;
  state: SessionSummary["state"];
  spentUsd: number;
  events: number;
  head: { seq: number; hash: string };
  summary: SessionSummary;
  /** The signed head the log was proven against; null for a log exported before checkpoints. */
  checkpoint: { seq: number; ts: number; kid: string } | null;
  warnings: string[];
  /** Personal values: how many the log reveals, which were erased, which sit inside the hash. */
  personal: PersonalReport;
  whatIf?: WhatIfReport;
}

export type ReplayResult = ReplayOk | AuditBad;

/** `other` is the what-if policy as given (parsed YAML or JSON); its faults throw BadRequestError naming the field. */
export async function replayReport(entries: Entry[], keys: Keys, other?: { policy: unknown; mode: PolicyMode }): Promise<ReplayResult> {
  const audit = auditEntries(entries);
  if (!audit.ok) return audit;
  const proof = await proveComplete(audit, keys);
  if (!proof.ok) return proof;
  const out: ReplayOk = {
    ok: true,
    state: audit.state,
    spentUsd: audit.summary.spentUsd,
    events: audit.count,
    head: audit.head,
    summary: audit.summary,
    checkpoint: proof.checkpoint,
    warnings: proof.warnings,
    personal: audit.personal,
  };
  // Decided again on the values themselves (an argument rule reads the arguments), where the log still has them.
  if (other) out.whatIf = whatIf(audit.revealed, whatIfPolicy(audit.revealed, other.policy, other.mode), other.mode, audit.snapshot);
  return out;
}
