import { toNanos, toUsd } from "../lib/money";
import type { SessionSummary } from "../schema/protocol";
import { committedNanos, remainingUsd } from "./decide";
import { stateOf, type SessionSnapshot } from "./session";

/** What subscribers, the index and `GET /v1/sessions/:id` show of a session. */
export function summarize(snapshot: SessionSnapshot): SessionSummary {
  const c = snapshot.context;
  return {
    tenant: c.tenant,
    session: c.session,
    state: stateOf(snapshot),
    seq: c.seq,
    spentUsd: toUsd(c.spentNanos),
    reservedUsd: toUsd(committedNanos(c) - c.spentNanos),
    budgetUsd: c.policy?.budget.session_usd ?? null,
    // Money past what was reserved, and spend past the ceiling: both should stay 0.
    overrunUsd: toUsd(c.overrunNanos ?? 0),
    overBudgetUsd: c.policy?.budget.session_usd === undefined ? 0 : toUsd(Math.max(0, c.spentNanos - toNanos(c.policy.budget.session_usd))),
    remainingUsd: remainingUsd(c),
    agent: c.agent,
    user: c.user,
    task: c.task,
    openedAt: c.openedAt,
    lastActivity: c.lastActivity,
    // A snapshot from before the error counter existed has none.
    counters: { ...c.counters, errors: c.counters.errors ?? 0 },
    violations: c.violationCounts,
    reservations: Object.values(c.reservations).map((r) => ({
      requestId: r.requestId,
      kind: r.kind,
      estimateUsd: toUsd(r.estimateNanos),
      expiresAt: r.expiresAt,
      model: r.model,
      run: r.run,
    })),
    pendingApprovals: Object.values(c.approvals).map((a) => ({
      approvalId: a.approvalId,
      requestId: a.requestId,
      action: a.action,
      costUsd: a.costUsd,
      rule: a.rule,
      reason: a.reason,
      deadline: a.deadline,
      requestedAt: a.requestedAt,
      args: a.args,
    })),
    alerts: c.alerted,
    killed: c.killed,
    failMode: c.policy?.fail_mode,
  };
}
