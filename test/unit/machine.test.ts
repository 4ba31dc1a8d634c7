import { describe, expect, it } from "vitest";
import { verifyChain } from "../../lib/chain";
import {
  decideAction,
  decideApproval,
  decideEnd,
  decideReport,
  decideReserve,
  decideSettle,
  decideTimers,
  type ReserveInput,
} from "../../machines/decide";
import { replay } from "../../machines/session";
import { summarize } from "../../machines/summary";
import { FoldedSession } from "../support/folded";

class Sim extends FoldedSession {
  get spent() {
    return summarize(this.snapshot).spentUsd;
  }
  action(action: string, costUsd = 0, args: Record<string, unknown> = {}, id = `a${this.log.length}`) {
    return this.apply(decideAction(this.view, { id, action, args, argsHash: "h", costUsd, attribution: {} }, this.now));
  }
  reserve(promptTokens: number, estimateUsd = 0.01, extra: Partial<ReserveInput> = {}) {
    const requestId = `r${this.log.length}`;
    const v = this.apply(
      decideReserve(this.view, { requestId, provider: "openai", model: "gpt-4o", path: "v1/chat/completions", estimateUsd, priced: true, promptTokens, maxOutputTokens: 10, attribution: {}, ...extra }, this.now),
    );
    return { ...v, requestId };
  }
}

describe("session machine", () => {
  it("opens active and charges allowed actions", () => {
    const s = new Sim({ budget: { session_usd: 1 } });
    expect(s.state).toBe("active");
    expect(s.action("search", 0.25).decision).toBe("allow");
    expect(s.spent).toBe(0.25);
  });

  it("allows a charge that lands exactly on the budget and refuses one cent more", () => {
    const s = new Sim({ budget: { session_usd: 1, alert_at: 1 } });
    for (let i = 0; i < 10; i++) expect(s.action("t", 0.1).decision).toBe("allow");
    expect(s.spent).toBe(1);
    const v = s.action("t", 0.01);
    expect(v).toMatchObject({ decision: "deny", code: "budget_exceeded", rule: "budget.session_usd" });
    expect(s.state).toBe("alerting");
  });

  it("just under the budget is allowed", () => {
    const s = new Sim({ budget: { session_usd: 1 } });
    expect(s.action("t", 0.99).decision).toBe("allow");
    expect(s.action("t", 0.02).decision).toBe("deny");
    expect(s.action("t", 0.01).decision).toBe("allow");
  });

  it("moves to alerting once when spend crosses alert_at", () => {
    const s = new Sim({ budget: { session_usd: 1, alert_at: 0.5 } });
    s.action("t", 0.49);
    expect(s.state).toBe("active");
    s.action("t", 0.01);
    expect(s.state).toBe("alerting");
    s.action("t", 0.1);
    expect(s.log.filter((e) => e.type === "alert.raised")).toHaveLength(1);
  });

  it("kills the session on a refused charge under on_exceed: kill, and refuses everything after", () => {
    const s = new Sim({ budget: { session_usd: 0.5, on_exceed: "kill" } });
    s.action("t", 0.4);
    expect(s.action("t", 0.2)).toMatchObject({ decision: "deny", code: "budget_exceeded" });
    expect(s.state).toBe("killed");
    expect(s.action("t", 0)).toMatchObject({ decision: "deny", code: "session_killed" });
    expect(s.reserve(10)).toMatchObject({ decision: "deny", code: "session_killed" });
  });

  it("an operator kill is final; a late settle is still counted", () => {
    const s = new Sim({ budget: { session_usd: 1 } });
    const r = s.reserve(100, 0.2);
    s.apply(decideEnd(s.view, { how: "kill", by: "alice", reason: "looping", id: "k" }));
    expect(s.state).toBe("killed");
    s.apply(decideSettle(s.view, { requestId: r.requestId, costUsd: 0.05, outcome: "completed" }, s.now)!);
    expect(s.state).toBe("killed");
    expect(s.spent).toBe(0.05);
    expect(decideEnd(s.view, { how: "kill", by: "bob", reason: "again", id: "k2" }).drafts).toHaveLength(0);
  });

  it("a closed session refuses everything and cannot be killed afterwards", () => {
    const s = new Sim();
    s.apply(decideEnd(s.view, { how: "close", by: "agent", reason: "done", id: "c" }));
    expect(s.state).toBe("closed");
    expect(s.action("t")).toMatchObject({ decision: "deny", code: "session_closed" });
    expect(decideEnd(s.view, { how: "kill", by: "op", reason: "late", id: "k" }).drafts).toHaveLength(0);
  });

  it("reservations count against the budget until settled", () => {
    const s = new Sim({ budget: { session_usd: 1 } });
    const r = s.reserve(100, 0.6);
    expect(r.decision).toBe("allow");
    expect(s.reserve(100, 0.5).decision).toBe("deny");
    s.apply(decideSettle(s.view, { requestId: r.requestId, costUsd: 0.1, outcome: "completed" }, s.now)!);
    expect(s.reserve(100, 0.5).decision).toBe("allow");
    expect(decideSettle(s.view, { requestId: r.requestId, costUsd: 0.1, outcome: "completed" }, s.now)).toBeUndefined();
  });

  it("a released reservation charges nothing; an expired one is charged at its estimate", () => {
    const s = new Sim({ budget: { session_usd: 1 } });
    const a = s.reserve(10, 0.3);
    s.apply(decideSettle(s.view, { requestId: a.requestId, costUsd: 0.3, outcome: "released" }, s.now)!);
    expect(s.spent).toBe(0);
    s.reserve(10, 0.2);
    s.now += 11 * 60_000;
    s.apply({ drafts: decideTimers(s.view, s.now), verdict: { decision: "allow" } });
    expect(s.spent).toBe(0.2);
    expect(summarize(s.snapshot).reservations).toHaveLength(0);
  });

  it("a stream whose heartbeats stopped is settled at what it had produced, not the estimate", () => {
    const s = new Sim({ budget: { session_usd: 1 } });
    const r = s.reserve(10, 0.3);
    const usage = { inputTokens: 10, outputTokens: 4, cachedInputTokens: 0, cacheWriteTokens: 0 };
    s.apply({ drafts: decideTimers(s.view, s.now, { [r.requestId]: { costUsd: 0.02, usage } }), verdict: { decision: "allow" } });
    expect(s.spent).toBe(0.02);
    expect(s.log.at(-1)).toMatchObject({ type: "request.settled", data: { outcome: "aborted", costUsd: 0.02 } });
  });

  it("a stream still sending heartbeats outlives its reservation's TTL", () => {
    const s = new Sim({ budget: { session_usd: 1, reservation_ttl: "1s" } });
    const r = s.reserve(10, 0.3);
    s.now += 5_000;
    expect(decideTimers(s.view, s.now, {}, new Set([r.requestId]))).toHaveLength(0);
    expect(decideTimers(s.view, s.now)).toHaveLength(1);
  });

  it("an expiry charge raises the alert and, past the budget under on_exceed: kill, kills", () => {
    const s = new Sim({ budget: { session_usd: 1, alert_at: 0.5, on_exceed: "kill" } });
    s.reserve(10, 0.6);
    s.now += 11 * 60_000;
    s.apply({ drafts: decideTimers(s.view, s.now), verdict: { decision: "allow" } });
    expect(s.state).toBe("alerting");
    expect(s.log.at(-1)).toMatchObject({ type: "alert.raised", data: { rule: "budget.session_usd" } });
  });

  it("an alarm batch that kills does not also time out approvals", () => {
    const s = new Sim({ budget: { session_usd: 1, on_exceed: "kill" }, approval: { timeout: "1m", on_timeout: "allow" }, actions: { rules: { pay: { amount: { require_approval_above: 1 } } } } });
    s.reserve(10, 0.6);
    s.action("pay", 0, { amount: 5 });
    s.apply(decideReport(s.view, { id: "bill", type: "cost", usd: 0.5 }, s.now));
    s.now += 11 * 60_000;
    const drafts = decideTimers(s.view, s.now);
    expect(drafts.map((d) => d.type)).toContain("session.killed");
    expect(drafts.map((d) => d.type)).not.toContain("approval.granted");
    s.apply({ drafts, verdict: { decision: "allow" } });
    expect(s.state).toBe("killed");
  });

  it("killing a session ends its pending approvals", () => {
    const s = new Sim({ actions: { rules: { pay: { amount: { require_approval_above: 1 } } } } });
    s.action("pay", 0, { amount: 5 });
    s.apply(decideEnd(s.view, { how: "kill", by: "alice", reason: "stop", id: "k" }));
    expect(summarize(s.snapshot).pendingApprovals).toHaveLength(0);
    s.now += 10 * 60_000;
    expect(decideTimers(s.view, s.now)).toHaveLength(0);
  });

  it("review moves to awaiting-approval; approve returns to where it was and charges", () => {
    const s = new Sim({ budget: { session_usd: 10 }, actions: { rules: { refund: { amount: { max: 1000, require_approval_above: 500 } } } } });
    expect(s.action("refund", 1, { amount: 500 }).decision).toBe("allow");
    const v = s.action("refund", 2, { amount: 501 });
    expect(v).toMatchObject({ decision: "review", rule: "actions.rules.refund.amount.require_approval_above" });
    expect(s.state).toBe("awaiting-approval");
    expect(s.reserve(10)).toMatchObject({ decision: "deny", code: "awaiting_approval" });
    s.apply(decideApproval(s.view, { approvalId: v.approvalId!, decision: "approve", by: "alice" }, s.now)!);
    expect(s.state).toBe("active");
    expect(s.spent).toBe(3);
  });

  it("stays awaiting while another approval is pending; a deny charges nothing; returns to alerting if alerted", () => {
    const s = new Sim({ budget: { session_usd: 10, alert_at: 0.1 }, actions: { rules: { pay: { amount: { require_approval_above: 1 } } } } });
    s.action("t", 1);
    expect(s.state).toBe("alerting");
    const a = s.action("pay", 1, { amount: 5 });
    const b = s.action("pay", 1, { amount: 6 });
    expect(s.state).toBe("awaiting-approval");
    s.apply(decideApproval(s.view, { approvalId: a.approvalId!, decision: "deny", by: "alice" }, s.now)!);
    expect(s.state).toBe("awaiting-approval");
    s.apply(decideApproval(s.view, { approvalId: b.approvalId!, decision: "deny", by: "alice" }, s.now)!);
    expect(s.state).toBe("alerting");
    expect(s.spent).toBe(1);
    expect(decideApproval(s.view, { approvalId: b.approvalId!, decision: "approve", by: "x" }, s.now)).toBeUndefined();
  });

  it("an unanswered approval is denied at its deadline", () => {
    const s = new Sim({ approval: { timeout: "1m" }, actions: { rules: { pay: { amount: { require_approval_above: 1 } } } } });
    s.action("pay", 0, { amount: 5 });
    s.now += 59_000;
    expect(decideTimers(s.view, s.now)).toHaveLength(0);
    s.now += 1_000;
    s.apply({ drafts: decideTimers(s.view, s.now), verdict: { decision: "allow" } });
    expect(s.state).toBe("active");
    expect(s.log.at(-1)).toMatchObject({ type: "approval.denied", data: { timedOut: true, by: "timeout" } });
  });

  it("allow and deny lists", () => {
    const s = new Sim({ actions: { allow: ["search", "read_file", "delete_database"], deny: ["delete_database"] } });
    expect(s.action("search").decision).toBe("allow");
    expect(s.action("write_file")).toMatchObject({ decision: "deny", rule: "actions.allow", code: "policy_violation" });
    expect(s.action("delete_database")).toMatchObject({ decision: "deny", rule: "actions.deny" });
  });

  it("argument rules: max, min, pattern, forbidden, required", () => {
    const s = new Sim({
      actions: {
        rules: {
          refund: { amount: { max: 1000, min: 1 }, account: { pattern: "^[A-Z]{2}[0-9]{8}$", required: true } },
          "*": { "*": { forbidden: ["drop table", "rm -rf"] } },
        },
      },
    });
    const ok = { account: "DE12345678" };
    expect(s.action("refund", 0, { ...ok, amount: 1000 }).decision).toBe("allow");
    expect(s.action("refund", 0, { ...ok, amount: 1000.01 })).toMatchObject({ decision: "deny", rule: "actions.rules.refund.amount.max" });
    expect(s.action("refund", 0, { ...ok, amount: 1 }).decision).toBe("allow");
    expect(s.action("refund", 0, { ...ok, amount: 0.99 })).toMatchObject({ decision: "deny", rule: "actions.rules.refund.amount.min" });
    expect(s.action("refund", 0, { account: "de12345678", amount: 5 })).toMatchObject({ decision: "deny", rule: "actions.rules.refund.account.pattern" });
    expect(s.action("refund", 0, { amount: 5 })).toMatchObject({ decision: "deny", rule: "actions.rules.refund.account" });
    expect(s.action("sql", 0, { q: { text: "please DROP TABLE users" } })).toMatchObject({ decision: "deny", rule: "actions.rules.*.*.forbidden" });
    expect(s.action("sql", 0, { q: "select 1" }).decision).toBe("allow");
  });

  it("max_actions and max_duration", () => {
    const s = new Sim({ limits: { max_actions: 2, max_duration: "10m" } });
    expect(s.action("a").decision).toBe("allow");
    expect(s.action("a").decision).toBe("allow");
    expect(s.action("a")).toMatchObject({ decision: "deny", rule: "limits.max_actions" });
    const t = new Sim({ limits: { max_duration: "10m" } });
    t.now += 600_000;
    expect(t.action("a").decision).toBe("allow");
    t.now += 1;
    expect(t.action("a")).toMatchObject({ decision: "deny", rule: "limits.max_duration" });
  });

  it("per-session rate limit at its boundary, with a retry hint", () => {
    const s = new Sim({ limits: { rate: [{ per: "session", max: 3, window: "1m" }] } });
    for (let i = 0; i < 3; i++) expect(s.action("a").decision).toBe("allow");
    const v = s.action("a");
    expect(v).toMatchObject({ decision: "deny", code: "rate_limited" });
    expect(v.retryAfterMs).toBe(60_000);
    s.now += 60_000;
    expect(s.action("a").decision).toBe("allow");
  });

  it("a cross-session rate refusal from the tenant actor is recorded like any other refusal", () => {
    const s = new Sim();
    const hit = { rule: "limits.rate[per=user]", reason: "user u1 reached its rate limit across sessions", retryAfterMs: 4000 };
    const v = s.apply(decideAction(s.view, { id: "x", action: "t", args: {}, argsHash: "h", costUsd: 0, attribution: {} }, s.now, hit));
    expect(v).toMatchObject({ decision: "deny", code: "rate_limited", rule: "limits.rate[per=user]", retryAfterMs: 4000 });
    expect(s.log.at(-1)).toMatchObject({ type: "action.checked", data: { decision: "deny", code: "rate_limited" } });
    const r = s.apply(decideReserve(s.view, { requestId: "q", provider: "openai", model: "gpt-4o", path: "v1/chat/completions", estimateUsd: 0, priced: true, promptTokens: 1, maxOutputTokens: 1, attribution: {} }, s.now, hit));
    expect(r).toMatchObject({ decision: "deny", code: "rate_limited" });
    expect(s.log.at(-1)).toMatchObject({ type: "request.denied", data: { code: "rate_limited" } });
  });

  it("runaway: fires on 3 consecutive >1.4x growths, not on a steady prompt", () => {
    const steady = new Sim();
    for (let i = 0; i < 8; i++) steady.reserve(1000);
    expect(steady.state).toBe("active");

    const growing = new Sim();
    growing.reserve(100);
    growing.reserve(150);
    growing.reserve(220);
    expect(growing.state).toBe("active");
    expect(growing.reserve(320).decision).toBe("allow");
    expect(growing.state).toBe("alerting");
    expect(growing.log.some((e) => e.type === "anomaly.detected")).toBe(true);

    const exactly = new Sim();
    [100, 140, 196, 274].forEach((n) => exactly.reserve(n));
    expect(exactly.state).toBe("active");
  });

  it("runaway with on_detect: kill refuses the call and kills", () => {
    const s = new Sim({ runaway: { on_detect: "kill" } });
    [100, 200, 400].forEach((n) => s.reserve(n));
    expect(s.reserve(800)).toMatchObject({ decision: "deny", code: "session_killed", rule: "runaway" });
    expect(s.state).toBe("killed");
  });

  it("violation threshold kills at the threshold, not before", () => {
    const s = new Sim({ violations: { thresholds: { pii_blocked: 3 } } });
    s.apply(decideReport(s.view, { id: "1", type: "violation", kind: "pii_blocked" }, s.now));
    s.apply(decideReport(s.view, { id: "2", type: "violation", kind: "pii_blocked" }, s.now));
    expect(s.state).toBe("active");
    s.apply(decideReport(s.view, { id: "3", type: "violation", kind: "pii_blocked" }, s.now));
    expect(s.state).toBe("killed");
    expect(s.snapshot.context.killed?.rule).toBe("violations.thresholds.pii_blocked");
  });

  it("unpriced models are refused under a budget, allowed without one", () => {
    const s = new Sim({ budget: { session_usd: 1 } });
    expect(s.reserve(10, 0, { priced: false, model: "mystery" })).toMatchObject({ decision: "deny", rule: "unpriced_models" });
    const free = new Sim();
    expect(free.reserve(10, 0, { priced: false, model: "mystery" }).decision).toBe("allow");
  });

  it("run and action budgets", () => {
    const s = new Sim({ budget: { run_usd: 0.5, action_usd: { expensive_llm: 0.3 } } });
    expect(s.reserve(10, 0.4, { attribution: { run: "r1" } }).decision).toBe("allow");
    expect(s.reserve(10, 0.2, { attribution: { run: "r1" } })).toMatchObject({ decision: "deny", rule: "budget.run_usd" });
    expect(s.reserve(10, 0.2, { attribution: { run: "r2" } }).decision).toBe("allow");
    expect(s.reserve(10, 0.31, { attribution: { action: "expensive_llm" } })).toMatchObject({ decision: "deny", rule: "budget.action_usd.expensive_llm" });
  });

  it("replaying the log gives the live snapshot, and the chain verifies", () => {
    const s = new Sim({ budget: { session_usd: 2, alert_at: 0.5 }, actions: { rules: { pay: { amount: { require_approval_above: 1 } } } } });
    s.action("t", 1.2);
    const r = s.reserve(100, 0.3);
    const v = s.action("pay", 0.1, { amount: 3 });
    s.apply(decideApproval(s.view, { approvalId: v.approvalId!, decision: "approve", by: "a" }, s.now)!);
    s.apply(decideSettle(s.view, { requestId: r.requestId, costUsd: 0.21, outcome: "completed" }, s.now)!);
    const replayed = replay(s.log);
    expect(replayed.value).toEqual(s.snapshot.value);
    expect(replayed.context).toEqual(s.snapshot.context);
    expect(verifyChain(s.log)).toBeUndefined();
    const tampered = s.log.map((e) => (e.seq === 3 ? { ...e, ts: e.ts + 1 } : e));
    expect(verifyChain(tampered)?.seq).toBe(3);
  });
});
