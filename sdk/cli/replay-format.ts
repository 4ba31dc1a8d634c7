import { seqRuns } from "../../lib/pii";
import type { ReplayOk, ReplayResult } from "../../lib/replay";
import type { WhatIfKill, WhatIfOutcome, WhatIfReport } from "../../schema/whatif";
import { spendLine, table, usd } from "./format";

// `governor replay` as a person reads it: is the log whole and Governor's, where does it
// end, and (with --policy) what the other policy would have done differently.

const TITLES: Record<string, string> = {
  chain: "log is NOT intact",
  missing_checkpoint: "log is NOT complete",
  missing_tail: "log is NOT complete",
  checkpoint_mismatch: "log is NOT the one Governor signed",
  bad_checkpoint: "checkpoint is malformed",
  other_session: "checkpoint does NOT belong to this log",
  key_unknown: "checkpoint cannot be verified",
  signature_invalid: "checkpoint is NOT Governor's",
};

export function formatReplay(r: ReplayResult, policyFile?: string): string {
  if (!r.ok) {
    if (r.problem === "chain") return `log is NOT intact: first bad event is seq ${r.seq}${r.line ? ` (line ${r.line})` : ""}: ${r.reason}`;
    return `${TITLES[r.problem] ?? "log is NOT proven"}: ${r.reason}`;
  }
  const cp = r.checkpoint;
  const rows = [
    ["verified", `hash chain intact over ${r.events} events`],
    ["checkpoint", cp ? `signed head seq ${cp.seq} (key ${cp.kid}, ${new Date(cp.ts).toISOString()}): the log is complete up to it` : "none"],
    ["session", `${r.summary.tenant}:${r.summary.session}`],
    ["state", r.state],
    ["spent", spendLine(r.summary)],
    ["events", String(r.events)],
    ["head", `seq ${r.head.seq} ${r.head.hash}`],
    ["personal", personalLine(r.personal)],
  ];
  let out = table(rows);
  for (const w of r.warnings) out += `\nwarning: ${w}`;
  if (r.whatIf) out += `\n\n${formatWhatIf(r.whatIf, policyFile)}`;
  return out;
}

/** Runs of seqs: "3, 5-9". */
function seqList(seqs: number[]): string {
  const parts = seqRuns(seqs);
  return parts.length > 12 ? `${parts.slice(0, 12).join(", ")}, …` : parts.join(", ");
}

/** Where the log's personal values stand: beside it (checked), erased, or in plain text inside the hash. */
function personalLine(p: ReplayOk["personal"] | undefined): string {
  if (!p) return "-";
  const parts = [`${p.revealed} value${p.revealed === 1 ? "" : "s"} beside the log, each matching its commitment`];
  if (p.erased.length) {
    const by = p.redactions.map((r) => `seq ${r.seq} by ${r.by} at ${new Date(r.ts).toISOString()}`).join("; ");
    parts.push(`${p.erased.length} erased (seq ${seqList(p.erased.map((e) => e.seq))})${by ? `: subject.redacted ${by}` : ""}`);
  }
  if (p.plain.length) parts.push(`${p.plain.length} in plain text inside the hash (seq ${seqList(p.plain.map((e) => e.seq))}: written before commitments, cannot be erased)`);
  return parts.join("; ");
}

function outcome(o: WhatIfOutcome): string {
  const cost = o.costUsd === null ? (o.reservedUsd !== undefined ? ` (cost unknown, at most ${usd(o.reservedUsd)})` : " (cost unknown)") : o.costUsd ? ` (${usd(o.costUsd)})` : "";
  return `${o.decision}${o.code ? ` ${o.code}` : ""}${cost}`;
}

function kill(k: WhatIfKill | null): string {
  if (!k) return "not killed";
  const what = [k.requestId, k.subject].filter(Boolean).join(", ");
  return `killed at seq ${k.seq}${what ? ` (${what})` : ""} by ${k.by}${k.rule ? `, rule ${k.rule}` : ""}: ${k.reason}`;
}

/** Runs of refusals that only follow from an earlier kill are summed up, not listed one by one. */
const MAX_AFTER_KILL = 3;

export function formatWhatIf(w: WhatIfReport, policyFile?: string): string {
  const lines: string[] = [];
  const source = policyFile ? ` ${policyFile}` : "";
  lines.push(`what-if under${source || " the given policy"} (${w.mode === "merge" ? "over the recorded policy, field by field" : "as the whole policy"}):`);
  lines.push(`${w.requests} requests decided again: ${w.differences.length} differently, ${w.unknown.length} unknown`);
  if (w.differences.length) {
    const rows = [["SEQ", "REQUEST", "SUBJECT", "HAPPENED", "WOULD HAVE", "RULE"]];
    let afterKill = 0;
    for (const d of w.differences) {
      if (d.wouldHave.rule === "session.killed" && ++afterKill > MAX_AFTER_KILL) continue;
      rows.push([String(d.seq), d.requestId, d.subject, outcome(d.happened), outcome(d.wouldHave), d.wouldHave.rule ?? d.happened.rule ?? "-"]);
    }
    lines.push("", table(rows));
    if (afterKill > MAX_AFTER_KILL) lines.push(`… and ${afterKill - MAX_AFTER_KILL} more refused because the session would have been killed`);
  }
  if (w.unknown.length) {
    lines.push("", "unknown (the log does not hold what the decision needs; replayed as assumed):");
    for (const u of w.unknown) lines.push(`  seq ${u.seq} ${u.requestId} ${u.subject}: ${u.why} (assumed ${outcome(u.assumed)})`);
  }
  lines.push("");
  lines.push(`recorded: ${w.recorded.state}, ${kill(w.recorded.killed)}`);
  lines.push(`what-if:  ${w.whatIf.state}, ${kill(w.whatIf.killed)}`);
  const unsettled = w.whatIf.unsettledUsd > 0 ? ` plus up to ${usd(w.whatIf.unsettledUsd)} for calls that never ran in the record` : "";
  const verb = w.savedUsd >= 0 ? `saved ${usd(w.savedUsd)}` : `spent ${usd(-w.savedUsd)} more`;
  lines.push(`spend:    recorded ${usd(w.recorded.spentUsd)}, what-if ${usd(w.whatIf.spentUsd)}${unsettled}: ${verb}`);
  for (const n of w.notes) lines.push(`note: ${n}`);
  return lines.join("\n");
}
