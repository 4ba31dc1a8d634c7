import { EventData, type ActionSource, type Attribution, type EventDraft, type GovernorEvent } from "../schema/events";
import type { Policy } from "../schema/policy";
import { sha256Hex } from "../lib/chain";
import { moneyLimit, toNanos, toUsd } from "../lib/money";
import { BadRequestError } from "../lib/errors";
import { reduce, type SessionContext } from "./context";
import { checkArgs, checkRate, type ArgVerdict, type RateHit, type RuleHit } from "./rules";
import { afterError, withRepeatedCall } from "./loops";
import type { SessionState } from "./session";

// The policy engine: given the folded session and a request, which events does the
// request append? Pure, like the machine, so every decision can be re-derived in tests.

export type Code = "budget_exceeded" | "session_killed" | "session_closed" | "policy_violation" | "rate_limited" | "awaiting_approval";

export const STATUS: Record<Code, number> = {
  budget_exceeded: 402,
  session_killed: 403,
  session_closed: 403,
  policy_violation: 403,
  rate_limited: 429,
  awaiting_approval: 409,
};

export interface Verdict {
  /** "count": the reservation used a size bound that does not fit; a counted estimate may. */
  decision: "allow" | "deny" | "review" | "hold" | "count";
  code?: Code;
  rule?: string;
  reason?: string;
  approvalId?: string;
  retryAfterMs?: number;
  /** On an allowed call: the output cap per choice, when budget.fit_output lowered it. */
  outputCap?: number;
}

export interface Decision {
  drafts: EventDraft[];
  verdict: Verdict;
}

export interface View {
  state: SessionState;
  context: SessionContext;
}

export interface Refusal extends RuleHit {
  code: Code;
  retryAfterMs?: number;
  kill?: boolean;
}

export function policyOf(ctx: SessionContext): Policy {
  if (!ctx.policy) throw new Error("session is not open");
  return ctx.policy;
}

function pendingApprovalNanos(ctx: SessionContext, filter: (run?: string, action?: string) => boolean = () => true): number {
  let n = 0;
  for (const p of Object.values(ctx.approvals)) if (filter(p.run, p.action)) n += toNanos(p.costUsd);
  return n;
}

function reservedFor(ctx: SessionContext, key: "run" | "action", value: string): number {
  let n = 0;
  for (const r of Object.values(ctx.reservations)) if (r[key] === value) n += r.estimateNanos;
  return n;
}

/** What is committed against each ceiling: spent, reserved, and costs waiting on approval. */
export function committedNanos(ctx: SessionContext): number {
  return ctx.spentNanos + ctx.reservedNanos + pendingApprovalNanos(ctx);
}

export function remainingUsd(ctx: SessionContext): number | null {
  const limit = ctx.policy?.budget.session_usd;
  if (limit === undefined) return null;
  return toUsd(Math.max(0, toNanos(limit) - committedNanos(ctx)));
}

export function stateRefusal(view: View): Refusal | undefined {
  if (view.state === "killed") return { code: "session_killed", rule: "session.killed", reason: `session was killed: ${view.context.killed?.reason ?? "no reason given"}` };
  if (view.state === "closed") return { code: "session_closed", rule: "session.closed", reason: "session is closed" };
  return undefined;
}

export function durationRefusal(ctx: SessionContext, now: number): Refusal | undefined {
  const max = policyOf(ctx).limits.max_duration;
  if (max !== undefined && now - ctx.openedAt > max) {
    return { code: "policy_violation", rule: "limits.max_duration", reason: `session is older than its max_duration of ${max / 1000}s` };
  }
  return undefined;
}

export function rateRefusal(ctx: SessionContext, now: number, run?: string): Refusal | undefined {
  for (const rule of policyOf(ctx).limits.rate ?? []) {
    const hit =
      rule.per === "session" ? checkRate(rule, ctx.hits, now, "session") : rule.per === "run" && run ? checkRate(rule, ctx.runHits[run] ?? [], now, `run ${run}`) : undefined;
    if (hit) return { code: "rate_limited", ...hit };
  }
  return undefined;
}

/** What is left under the tightest ceiling that applies (session, run, action); undefined when none does. */
export function headroomNanos(ctx: SessionContext, run?: string, action?: string): number | undefined {
  const b = policyOf(ctx).budget;
  let room: number | undefined;
  const take = (limitUsd: number, committed: number) => (room = Math.min(room ?? Infinity, toNanos(limitUsd) - committed));
  if (b.session_usd !== undefined) take(b.session_usd, committedNanos(ctx));
  if (run && b.run_usd !== undefined) take(b.run_usd, (ctx.runSpentNanos[run] ?? 0) + reservedFor(ctx, "run", run) + pendingApprovalNanos(ctx, (r) => r === run));
  const actionLimit = action ? b.action_usd?.[action] : undefined;
  if (action && actionLimit !== undefined) take(actionLimit, (ctx.actionSpentNanos[action] ?? 0) + reservedFor(ctx, "action", action) + pendingApprovalNanos(ctx, (_r, a) => a === action));
  return room;
}

export function budgetRefusal(ctx: SessionContext, costNanos: number, run?: string, action?: string): Refusal | undefined {
  const b = policyOf(ctx).budget;
  const kill = b.on_exceed === "kill";
  // The hard bounds hold with or without a budget: money must stay exact (lib/money.ts).
  const bound = moneyLimit(committedNanos(ctx), costNanos);
  if (bound) return { code: "budget_exceeded", ...bound };
  const over = (committed: number, limitUsd: number) => committed + costNanos > toNanos(limitUsd);
  const fmt = (n: number) => `$${toUsd(n).toFixed(6).replace(/0+$/, "").replace(/\.$/, "")}`;
  if (b.session_usd !== undefined && over(committedNanos(ctx), b.session_usd)) {
    return { code: "budget_exceeded", rule: "budget.session_usd", kill, reason: `would bring the session to ${fmt(committedNanos(ctx) + costNanos)} of its $${b.session_usd} budget` };
  }
  if (run && b.run_usd !== undefined) {
    const committed = (ctx.runSpentNanos[run] ?? 0) + reservedFor(ctx, "run", run) + pendingApprovalNanos(ctx, (r) => r === run);
    if (over(committed, b.run_usd)) return { code: "budget_exceeded", rule: "budget.run_usd", kill, reason: `would bring run ${run} to ${fmt(committed + costNanos)} of its $${b.run_usd} budget` };
  }
  const actionLimit = action ? b.action_usd?.[action] : undefined;
  if (action && actionLimit !== undefined) {
    const committed = (ctx.actionSpentNanos[action] ?? 0) + reservedFor(ctx, "action", action) + pendingApprovalNanos(ctx, (_r, a) => a === action);
    if (over(committed, actionLimit)) return { code: "budget_exceeded", rule: `budget.action_usd.${action}`, kill, reason: `would bring action ${action} to ${fmt(committed + costNanos)} of its $${actionLimit} budget` };
  }
  return undefined;
}

export function hasBudget(policy: Policy, action?: string): boolean {
  return policy.budget.session_usd !== undefined || policy.budget.run_usd !== undefined || (action !== undefined && policy.budget.action_usd?.[action] !== undefined);
}

export function refuse(r: Refusal, denial: EventDraft, idBase: string): Decision {
  const drafts: EventDraft[] = [denial];
  if (r.kill) drafts.push({ type: "session.killed", id: `${idBase}#kill`, data: { by: "policy", rule: r.rule, reason: r.reason } });
  return { drafts, verdict: { decision: "deny", code: r.code, rule: r.rule, reason: r.reason, retryAfterMs: r.retryAfterMs } };
}

/**
 * Follow-ups of a charge: alerts at `alert_at` of each ceiling (once per ceiling), and a
 * kill when real spend went past the session budget under `on_exceed: kill`.
 */
export function afterCharge(ctx: SessionContext, idBase: string, run?: string, action?: string): EventDraft[] {
  // An ended session stays as it ended: a late charge is counted, but sets nothing off.
  if (ctx.killed || ctx.closed) return [];
  const p = policyOf(ctx);
  const b = p.budget;
  const out: EventDraft[] = [];
  const ceilings: Array<[string, number | undefined, number]> = [
    ["budget.session_usd", b.session_usd, ctx.spentNanos],
    [`budget.run_usd:${run}`, run ? b.run_usd : undefined, run ? ctx.runSpentNanos[run] ?? 0 : 0],
    [`budget.action_usd.${action}`, action ? b.action_usd?.[action] : undefined, action ? ctx.actionSpentNanos[action] ?? 0 : 0],
  ];
  for (const [rule, limit, spent] of ceilings) {
    if (limit === undefined || ctx.alerted.includes(rule)) continue;
    if (spent >= toNanos(limit * b.alert_at)) {
      out.push({
        type: "alert.raised",
        id: `${idBase}#alert:${rule}`,
        data: { kind: "budget", rule, reason: `spend $${toUsd(spent)} reached ${Math.round(b.alert_at * 100)}% of $${limit}`, spentUsd: toUsd(spent), limitUsd: limit },
      });
    }
  }
  if (b.session_usd !== undefined && b.on_exceed === "kill" && ctx.spentNanos > toNanos(b.session_usd)) {
    out.push({ type: "session.killed", id: `${idBase}#kill`, data: { by: "policy", rule: "budget.session_usd", reason: `spend $${toUsd(ctx.spentNanos)} went past the $${b.session_usd} budget` } });
  }
  return out;
}

/** Applies drafts to a scratch context, as the actor will, so follow-up rules see their effect. */
export function preview(ctx: SessionContext, drafts: EventDraft[], now: number): SessionContext {
  let c = ctx;
  for (const d of drafts) c = reduce(c, { ...d, data: EventData[d.type].parse(d.data), seq: c.seq + 1, ts: now, prev: "", hash: "" } as GovernorEvent);
  return c;
}

export interface ActionInput {
  id: string;
  action: string;
  args: Record<string, unknown>;
  argsHash: string;
  costUsd: number;
  attribution: Attribution;
  source?: ActionSource;
  /** The argument rules' verdict when the caller already knows it (a what-if over a log that kept only some arguments). */
  argVerdict?: ArgVerdict;
}

export function decideAction(view: View, input: ActionInput, now: number, crossSession?: RateHit): Decision {
  return withRepeatedCall(view, input.action, input.argsHash, decideActionRules(view, input, now, crossSession), now);
}

function decideActionRules(view: View, input: ActionInput, now: number, crossSession?: RateHit): Decision {
  const ctx = view.context;
  const p = policyOf(ctx);
  const a = { ...input.attribution, action: input.action };
  const id = `action:${input.id}`;
  // Arguments are stored as a hash, plus the ones a rule looks at (so an approver sees
  // the amount), unless the policy asks to keep them all.
  const keep = p.keep_raw ? { args: input.args } : ruleFields(p, input.action, input.args);
  const checked = (decision: "allow" | "deny" | "review", extra: { code?: Code; rule?: string; reason?: string; approvalId?: string } = {}): EventDraft => ({
    type: "action.checked",
    id,
    data: { requestId: input.id, action: input.action, argsHash: input.argsHash, ...keep, decision, costUsd: input.costUsd, ...extra, attribution: a, source: input.source },
  });
  const denial = (r: Refusal): Decision => refuse(r, checked("deny", { code: r.code, rule: r.rule, reason: r.reason }), id);

  const gate = stateRefusal(view);
  if (gate) return denial(gate);
  if (p.actions.deny?.includes(input.action)) return denial({ code: "policy_violation", rule: "actions.deny", reason: `action "${input.action}" is on the deny list` });
  if (p.actions.allow && !p.actions.allow.includes(input.action)) return denial({ code: "policy_violation", rule: "actions.allow", reason: `action "${input.action}" is not on the allow list` });
  const args = input.argVerdict ?? checkArgs(p, input.action, input.args);
  if (args.deny) return denial({ code: "policy_violation", ...args.deny });
  if (p.limits.max_actions !== undefined && ctx.counters.actions >= p.limits.max_actions) {
    return denial({ code: "policy_violation", rule: "limits.max_actions", reason: `session reached its max_actions of ${p.limits.max_actions}` });
  }
  const early = durationRefusal(ctx, now) ?? rateRefusal(ctx, now, a.run) ?? (crossSession && { code: "rate_limited" as const, ...crossSession });
  if (early) return denial(early);
  const budget = budgetRefusal(ctx, toNanos(input.costUsd), a.run, input.action);
  if (budget) return denial(budget);

  if (args.review) {
    const approvalId = `apr_${ctx.seq + 1}`;
    const requested: EventDraft = {
      type: "approval.requested",
      id: `${id}#approval`,
      data: { approvalId, requestId: input.id, action: input.action, argsHash: input.argsHash, ...keep, costUsd: input.costUsd, rule: args.review.rule, reason: args.review.reason, deadline: now + p.approval.timeout, attribution: a },
    };
    return { drafts: [checked("review", { rule: args.review.rule, reason: args.review.reason, approvalId }), requested], verdict: { decision: "review", rule: args.review.rule, reason: args.review.reason, approvalId } };
  }
  const allowed = checked("allow");
  const after = preview(ctx, [allowed], now);
  return { drafts: [allowed, ...afterCharge(after, id, a.run, input.action)], verdict: { decision: "allow" } };
}

function ruleFields(p: Policy, action: string, args: Record<string, unknown>): { args?: Record<string, unknown> } {
  const names = new Set<string>();
  for (const scope of [action, "*"]) for (const name of Object.keys(p.actions.rules?.[scope] ?? {})) if (name !== "*") names.add(name);
  const picked = Object.fromEntries(Object.entries(args).filter(([k]) => names.has(k)));
  return Object.keys(picked).length ? { args: picked } : {};
}

export type ReportInput =
  | { id: string; type: "cost"; usd: number; action?: string; run?: string }
  | { id: string; type: "violation"; kind: string; detail?: string }
  | { id: string; type: "error"; action?: string; code?: string; message?: string; /** The recorded one, when a what-if replays the error (its message may not have been kept). */ signature?: string };

export function decideReport(view: View, input: ReportInput, now: number): Decision {
  const ctx = view.context;
  const p = policyOf(ctx);
  const id = `report:${input.id}`;
  if (input.type === "cost") {
    const bound = moneyLimit(committedNanos(ctx), toNanos(input.usd));
    if (bound) throw new BadRequestError(`usd: ${bound.reason}`, "usd");
    const settled: EventDraft = { type: "request.settled", id, data: { requestId: `report:${input.id}`, costUsd: input.usd, outcome: "reported", attribution: { action: input.action, run: input.run } } };
    if (view.state === "killed" || view.state === "closed") return { drafts: [settled], verdict: { decision: "allow" } };
    return { drafts: [settled, ...afterCharge(preview(ctx, [settled], now), id, input.run, input.action)], verdict: { decision: "allow" } };
  }
  if (input.type === "error") {
    const failed = errorRecorded(p, id, input);
    return { drafts: [failed, ...afterError(view, preview(ctx, [failed], now), id, id, input.action, now)], verdict: { decision: "allow" } };
  }
  const recorded: EventDraft = { type: "violation.recorded", id, data: { kind: input.kind, detail: input.detail, source: "scanner" } };
  const drafts: EventDraft[] = [recorded];
  const threshold = p.violations.thresholds[input.kind];
  const count = (ctx.violationCounts[input.kind] ?? 0) + 1;
  if (threshold !== undefined && count >= threshold && view.state !== "killed" && view.state !== "closed") {
    const rule = `violations.thresholds.${input.kind}`;
    const reason = `${count} ${input.kind} violation${count === 1 ? "" : "s"} reached the threshold of ${threshold}`;
    if (p.violations.on_threshold === "kill") drafts.push({ type: "session.killed", id: `${id}#kill`, data: { by: "policy", rule, reason } });
    else if (!ctx.alerted.includes(rule)) drafts.push({ type: "alert.raised", id: `${id}#alert`, data: { kind: "violation", rule, reason } });
  }
  return { drafts, verdict: { decision: "allow" } };
}

/** The signature lets equal failures be counted without keeping their text. */
export function errorRecorded(p: Policy, id: string, input: { action?: string; code?: string; message?: string; signature?: string }, source: "tool" | "llm" = "tool"): EventDraft {
  const signature = input.signature ?? sha256Hex(`${input.action ?? ""}\n${input.code ?? ""}\n${input.message ?? ""}`);
  return {
    type: "error.recorded",
    id,
    data: { source, action: input.action, code: input.code, signature, ...(p.keep_raw && input.message !== undefined && { message: input.message }) },
  };
}

export function decideApproval(view: View, input: { approvalId: string; decision: "approve" | "deny"; by: string; note?: string }, now: number): Decision | undefined {
  const ctx = view.context;
  const pending = ctx.approvals[input.approvalId];
  if (!pending || view.state === "killed" || view.state === "closed") return undefined;
  const id = `approval:${input.approvalId}`;
  if (input.decision === "deny") {
    return { drafts: [{ type: "approval.denied", id, data: { approvalId: input.approvalId, by: input.by, note: input.note } }], verdict: { decision: "deny", code: "policy_violation", rule: pending.rule, reason: `denied by ${input.by}${input.note ? `: ${input.note}` : ""}` } };
  }
  const granted: EventDraft = { type: "approval.granted", id, data: { approvalId: input.approvalId, by: input.by, note: input.note } };
  return { drafts: [granted, ...afterCharge(preview(ctx, [granted], now), id, pending.run, pending.action)], verdict: { decision: "allow" } };
}

// Reservations, settles, ends and timers live in money.ts; re-exported for existing callers.
export { decideEnd, decideReserve, decideSettle, decideTimers, nextDeadline, type Abandoned, type ReserveInput, type SettleInput } from "./money";
