import type { GovernorApiError } from "../errors";
import type { ApprovalResult, GovernorEvent, SessionPage, SessionSummary } from "../types";

export type ActionChecked = Extract<GovernorEvent, { type: "action.checked" }>;

// Human output: what an operator reads at a terminal. --json bypasses all of this.

/** Up to six decimals (sub-cent tool costs are real), but never fewer than two. */
export function usd(n: number | null | undefined): string {
  if (n === null || n === undefined) return "-";
  return `$${n.toFixed(6).replace(/0{1,4}$/, "")}`;
}

function time(ms: number): string {
  return ms ? new Date(ms).toISOString() : "-";
}

export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ")).join("\n");
}

export function spendLine(s: Pick<SessionSummary, "spentUsd" | "budgetUsd" | "remainingUsd">): string {
  return s.budgetUsd === null ? `${usd(s.spentUsd)} (no budget)` : `${usd(s.spentUsd)} of ${usd(s.budgetUsd)} (remaining ${usd(s.remainingUsd)})`;
}

export function formatSessions(list: SessionSummary[]): string {
  if (!list.length) return "no sessions";
  const rows = [["SESSION", "STATE", "SPENT", "BUDGET", "SEQ", "PENDING", "LAST ACTIVITY"]];
  for (const s of list) rows.push([s.session, s.state, usd(s.spentUsd), usd(s.budgetUsd), String(s.seq), String(s.pendingApprovals.length), time(s.lastActivity)]);
  return table(rows);
}

export function formatSessionPage(page: SessionPage): string {
  const list = formatSessions(page.sessions);
  if (!page.sessions.length) return page.total ? `no sessions on this page (${page.total} match)` : list;
  const shown = `${page.sessions.length} of ${page.total} session${page.total === 1 ? "" : "s"}`;
  return `${list}\n\n${shown}${page.nextCursor ? `; next page: --cursor ${page.nextCursor}` : ""}`;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/**
 * Every LLM call and every action is decided once, so the two sides add up: allowed and
 * denied count both kinds (a review counts when an operator or the timeout decides it),
 * the rest still waits for approval, or was still waiting when the session ended.
 */
export function decisionsLine(s: Pick<SessionSummary, "counters" | "pendingApprovals">): string {
  const c = s.counters;
  const total = c.llmCalls + c.actions;
  const waiting = s.pendingApprovals.length;
  const ended = total - c.allowed - c.denied - waiting;
  const outcome = [plural(c.allowed, "allowed", "allowed"), plural(c.denied, "denied", "denied")];
  if (waiting) outcome.push(`${waiting} awaiting approval`);
  if (ended > 0) outcome.push(`${ended} undecided when the session ended`);
  const reviews = c.reviews ? ` (${c.reviews} went to review)` : "";
  return `${total}: ${plural(c.llmCalls, "llm call")} + ${plural(c.actions, "action")} = ${outcome.join(" + ")}${reviews}`;
}

export function formatSession(s: SessionSummary, actions?: ActionChecked[]): string {
  const c = s.counters;
  const rows = [
    ["session", `${s.tenant}:${s.session}`],
    ["state", s.state],
    ["spent", spendLine(s)],
    ["reserved", usd(s.reservedUsd)],
    ["seq", String(s.seq)],
    ["opened", time(s.openedAt)],
    ["last activity", time(s.lastActivity)],
    ["decisions", decisionsLine(s)],
    ["facts", `${plural(c.violations, "violation")}, ${plural(c.errors ?? 0, "tool error")}, ${plural(c.alerts, "alert")}, ${plural(c.anomalies, "anomaly", "anomalies")}`],
  ];
  for (const [k, v] of [["agent", s.agent], ["user", s.user], ["task", s.task]] as const) if (v) rows.push([k, v]);
  // Money the reservations did not cover: the estimate ran low (see README, "Reservations").
  if (s.overrunUsd) rows.push(["overrun", `${usd(s.overrunUsd)} charged above reservations${s.overBudgetUsd ? `; ${usd(s.overBudgetUsd)} past the budget` : ""}`]);
  if (s.alerts.length) rows.push(["alerts", s.alerts.join(", ")]);
  if (s.killed) rows.push(["killed", `by ${s.killed.by}${s.killed.rule ? ` (${s.killed.rule})` : ""}: ${s.killed.reason}`]);
  let out = table(rows);
  if (s.pendingApprovals.length) {
    const a = [["APPROVAL", "ACTION", "COST", "RULE", "DEADLINE"]];
    for (const p of s.pendingApprovals) a.push([p.approvalId, p.action, usd(p.costUsd), p.rule, time(p.deadline)]);
    out += `\n\npending approvals:\n${table(a)}`;
  }
  if (s.reservations.length) {
    const r = [["REQUEST", "KIND", "ESTIMATE", "MODEL", "EXPIRES"]];
    for (const x of s.reservations) r.push([x.requestId, x.kind, usd(x.estimateUsd), x.model ?? "-", time(x.expiresAt)]);
    out += `\n\nopen reservations:\n${table(r)}`;
  }
  if (actions?.length) {
    const a = [["TIME", "ACTION", "SOURCE", "DECISION", "COST", "RULE"]];
    for (const e of actions) a.push([time(e.ts), e.data.action, e.data.source ?? "-", e.data.decision, usd(e.data.costUsd), e.data.rule ?? "-"]);
    out += `\n\nrecent actions:\n${table(a)}`;
  }
  return out;
}

export function formatApproval(session: string, r: ApprovalResult): string {
  const verb = r.decision === "allow" ? "approved" : "denied";
  return `${verb} ${r.approvalId} in ${session}: session is ${r.state}, spent ${usd(r.spentUsd)}${r.remainingUsd === null ? "" : `, remaining ${usd(r.remainingUsd)}`}`;
}

export function formatError(e: GovernorApiError): string {
  return `error: ${e.code} (${e.status}): ${e.message}${e.field ? ` [field: ${e.field}]` : ""}${e.rule ? ` [rule: ${e.rule}]` : ""}`;
}
