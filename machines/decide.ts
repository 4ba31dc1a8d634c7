import { EventData, type Attribution, type EventDraft, type GovernorEvent, type Usage } from "../schema/events";
import type { Policy } from "../schema/policy";
import { moneyLimit, toNanos, toUsd } from "../lib/money";
import { BadRequestError } from "../lib/errors";
import { reduce, type SessionContext } from "./context";
import { checkArgs, checkRate, isRunaway, type RateHit, type RuleHit } from "./rules";
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
  decision: "allow" | "deny" | "review" | "hold";
  code?: Code;
  rule?: string;
  reason?: string;
  approvalId?: string;
  retryAfterMs?: number;
}

export interface Decision {
  drafts: EventDraft[];
  verdict: Verdict;
}

export interface View {
  state: SessionState;
  context: SessionContext;
}

interface Refusal extends RuleHit {
  code: Code;
  retryAfterMs?: number;
  kill?: boolean;
}

function policyOf(ctx: SessionContext): Policy {
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

function stateRefusal(view: View): Refusal | undefined {
  if (view.state === "killed") return { code: "session_killed", rule: "session.killed", reason: `session was killed: ${view.context.killed?.reason ?? "no reason given"}` };
  if (view.state === "closed") return { code: "session_closed", rule: "session.closed", reason: "session is closed" };
  return undefined;
}

function durationRefusal(ctx: SessionContext, now: number): Refusal | undefined {
  const max = policyOf(ctx).limits.max_duration;
  if (max !== undefined && now - ctx.openedAt > max) {
    return { code: "policy_violation", rule: "limits.max_duration", reason: `session is older than its max_duration of ${max / 1000}s` };
  }
  return undefined;
}

function rateRefusal(ctx: SessionContext, now: number, run?: string): Refusal | undefined {
  for (const rule of policyOf(ctx).limits.rate ?? []) {
    const hit =
      rule.per === "session" ? checkRate(rule, ctx.hits, now, "session") : rule.per === "run" && run ? checkRate(rule, ctx.runHits[run] ?? [], now, `run ${run}`) : undefined;
    if (hit) return { code: "rate_limited", ...hit };
  }
  return undefined;
}

function budgetRefusal(ctx: SessionContext, costNanos: number, run?: string, action?: string): Refusal | undefined {
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

function hasBudget(policy: Policy, action?: string): boolean {
  return policy.budget.session_usd !== undefined || policy.budget.run_usd !== undefined || (action !== undefined && policy.budget.action_usd?.[action] !== undefined);
}

function refuse(r: Refusal, denial: EventDraft, idBase: string): Decision {
  const drafts: EventDraft[] = [denial];
  if (r.kill) drafts.push({ type: "session.killed", id: `${idBase}#kill`, data: { by: "policy", rule: r.rule, reason: r.reason } });
  return { drafts, verdict: { decision: "deny", code: r.code, rule: r.rule, reason: r.reason, retryAfterMs: r.retryAfterMs } };
}

/**
 * Follow-ups of a charge: alerts at `alert_at` of each ceiling (once per ceiling), and a
 * kill when real spend went past the session budget under `on_exceed: kill`.
 */
export function afterCharge(ctx: SessionContext, idBase: string, run?: string, action?: string): EventDraft[] {
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
function preview(ctx: SessionContext, drafts: EventDraft[], now: number): SessionContext {
  let c = ctx;
  for (const d of drafts) c = reduce(c, { ...d, data: EventData[d.type].parse(d.data), seq: c.seq + 1, ts: now, prev: "", hash: "" } as GovernorEvent);
  return c;
}

export interface ReserveInput {
  requestId: string;
  provider: "openai" | "anthropic";
  model: string;
  path: string;
  estimateUsd: number;
  priced: boolean;
  promptTokens: number;
  maxOutputTokens: number;
  promptHash?: string;
  attribution: Attribution;
}

/** `crossSession`: the tenant actor's refusal under a per-user or per-agent rate, if any. */
export function decideReserve(view: View, input: ReserveInput, now: number, crossSession?: RateHit): Decision {
  const ctx = view.context;
  const p = policyOf(ctx);
  const a = input.attribution;
  const id = `reserve:${input.requestId}`;
  const denial = (r: Refusal): Decision =>
    refuse(r, { type: "request.denied", id, data: { requestId: input.requestId, kind: "llm", code: r.code, rule: r.rule, reason: r.reason, model: input.model, estimateUsd: input.estimateUsd, attribution: a } }, id);

  const gate = stateRefusal(view);
  if (gate) return denial(gate);
  if (view.state === "awaiting-approval") {
    if (p.approval.while_pending === "hold") return { drafts: [], verdict: { decision: "hold", code: "awaiting_approval", rule: "approval.while_pending", reason: "an action is awaiting approval" } };
    return denial({ code: "awaiting_approval", rule: "approval.while_pending", reason: "an action in this session is awaiting approval" });
  }
  const early = durationRefusal(ctx, now) ?? rateRefusal(ctx, now, a.run) ?? (crossSession && { code: "rate_limited" as const, ...crossSession });
  if (early) return denial(early);
  if (!input.priced && p.unpriced_models === "deny" && hasBudget(p, a.action)) {
    return denial({ code: "policy_violation", rule: "unpriced_models", reason: `model "${input.model}" has no price, and this session has a budget` });
  }
  const budget = budgetRefusal(ctx, toNanos(input.estimateUsd), a.run, a.action);
  if (budget) return denial(budget);

  const window = [...ctx.promptWindow, input.promptTokens].slice(-p.runaway.window);
  if (isRunaway(window, p.runaway)) {
    const anomaly: EventDraft = {
      type: "anomaly.detected",
      id: `${id}#runaway`,
      data: { kind: "runaway", reason: `${p.runaway.consecutive} consecutive prompts each grew more than ${p.runaway.growth_ratio}x`, promptTokens: window, onDetect: p.runaway.on_detect === "kill" ? "kill" : "alert" },
    };
    if (p.runaway.on_detect === "kill") {
      const r: Refusal = { code: "session_killed", rule: "runaway", reason: "runaway loop detected: prompt keeps growing", kill: true };
      const d = refuse(r, { type: "request.denied", id, data: { requestId: input.requestId, kind: "llm", code: r.code, rule: r.rule, reason: r.reason, model: input.model, estimateUsd: input.estimateUsd, attribution: a } }, id);
      return { ...d, drafts: [anomaly, ...d.drafts] };
    }
    return { drafts: [reservation(input, now + p.budget.reservation_ttl), anomaly], verdict: { decision: "allow" } };
  }
  return { drafts: [reservation(input, now + p.budget.reservation_ttl)], verdict: { decision: "allow" } };
}

function reservation(input: ReserveInput, expiresAt: number): EventDraft {
  return {
    type: "request.reserved",
    id: `reserve:${input.requestId}`,
    data: {
      requestId: input.requestId,
      kind: "llm",
      provider: input.provider,
      model: input.model,
      path: input.path,
      estimateUsd: input.estimateUsd,
      promptTokens: input.promptTokens,
      maxOutputTokens: input.maxOutputTokens,
      promptHash: input.promptHash,
      expiresAt,
      attribution: input.attribution,
    },
  };
}

export interface SettleInput {
  requestId: string;
  costUsd: number;
  outcome: "completed" | "aborted" | "released";
  usage?: Usage;
}

/** Undefined when there is no open reservation with that id (already settled, or never made). */
export function decideSettle(view: View, input: SettleInput, now: number): Decision | undefined {
  const ctx = view.context;
  const r = ctx.reservations[input.requestId];
  if (!r) return undefined;
  const id = `settle:${input.requestId}`;
  const cost = input.outcome === "released" ? 0 : input.costUsd;
  const settled: EventDraft = { type: "request.settled", id, data: { requestId: input.requestId, costUsd: cost, outcome: input.outcome, usage: input.usage, model: r.model } };
  const after = preview(ctx, [settled], now);
  return { drafts: [settled, ...afterCharge(after, id, r.run, r.action)], verdict: { decision: "allow" } };
}

export interface ActionInput {
  id: string;
  action: string;
  args: Record<string, unknown>;
  argsHash: string;
  costUsd: number;
  attribution: Attribution;
}

export function decideAction(view: View, input: ActionInput, now: number, crossSession?: RateHit): Decision {
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
    data: { requestId: input.id, action: input.action, argsHash: input.argsHash, ...keep, decision, costUsd: input.costUsd, ...extra, attribution: a },
  });
  const denial = (r: Refusal): Decision => refuse(r, checked("deny", { code: r.code, rule: r.rule, reason: r.reason }), id);

  const gate = stateRefusal(view);
  if (gate) return denial(gate);
  if (p.actions.deny?.includes(input.action)) return denial({ code: "policy_violation", rule: "actions.deny", reason: `action "${input.action}" is on the deny list` });
  if (p.actions.allow && !p.actions.allow.includes(input.action)) return denial({ code: "policy_violation", rule: "actions.allow", reason: `action "${input.action}" is not on the allow list` });
  const args = checkArgs(p, input.action, input.args);
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
  | { id: string; type: "violation"; kind: string; detail?: string };

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

/** Ends the session: killed by an operator or policy, or closed as a normal end. An ended session stays as it ended. */
export function decideEnd(view: View, input: { how: "kill" | "close"; by: string; reason: string; id: string; replaced?: string }): Decision {
  if (view.state === "killed" || view.state === "closed") return { drafts: [], verdict: { decision: "deny", ...stateRefusal(view) } };
  const draft: EventDraft =
    input.how === "kill"
      ? { type: "session.killed", id: `kill:${input.id}`, data: { by: input.by, reason: input.reason, ...(input.replaced && { replaced: input.replaced }) } }
      : { type: "session.closed", id: `close:${input.id}`, data: { by: input.by, reason: input.reason } };
  return { drafts: [draft], verdict: { decision: "deny", code: input.how === "kill" ? "session_killed" : "session_closed", reason: input.reason } };
}

/** What a stream had produced when its heartbeats stopped. */
export type Abandoned = Record<string, { costUsd: number; usage: Usage }>;

/**
 * Reservations whose settle never came (charged at the estimate, or at what an abandoned
 * stream had produced), and approvals nobody answered in time.
 */
export function decideTimers(view: View, now: number, abandoned: Abandoned = {}, streaming: ReadonlySet<string> = new Set()): EventDraft[] {
  const ctx = view.context;
  const drafts: EventDraft[] = [];
  for (const r of Object.values(ctx.reservations)) {
    const stream = abandoned[r.requestId];
    // A stream still sending heartbeats is not abandoned, however long it runs.
    if (streaming.has(r.requestId)) continue;
    if (stream) {
      drafts.push({ type: "request.settled", id: `settle:${r.requestId}`, data: { requestId: r.requestId, costUsd: stream.costUsd, outcome: "aborted", usage: stream.usage, model: r.model } });
    } else if (r.expiresAt <= now) {
      drafts.push({ type: "request.settled", id: `settle:${r.requestId}`, data: { requestId: r.requestId, costUsd: toUsd(r.estimateNanos), outcome: "expired", model: r.model } });
    }
  }
  // What the charges set off: alerts, and a kill under on_exceed: kill.
  const live = view.state !== "killed" && view.state !== "closed";
  if (drafts.length && live && ctx.policy) {
    const charged = preview(ctx, drafts, now);
    const seen = new Set<string>();
    for (const r of Object.values(ctx.reservations).filter((r) => !charged.reservations[r.requestId])) {
      for (const d of afterCharge(charged, `settle:${r.requestId}`, r.run, r.action)) {
        const key = d.type === "alert.raised" ? d.data.rule : d.type;
        if (seen.has(key)) continue;
        seen.add(key);
        drafts.push(d);
      }
    }
  }
  // A kill in this batch ends pending approvals with the session; they do not time out.
  if (live && ctx.policy && !drafts.some((d) => d.type === "session.killed")) {
    for (const a of Object.values(ctx.approvals)) {
      if (a.deadline > now) continue;
      const id = `approval:${a.approvalId}`;
      if (ctx.policy.approval.on_timeout === "allow") drafts.push({ type: "approval.granted", id, data: { approvalId: a.approvalId, by: "timeout", note: "no decision before the deadline" } });
      else drafts.push({ type: "approval.denied", id, data: { approvalId: a.approvalId, by: "timeout", note: "no decision before the deadline", timedOut: true } });
    }
  }
  return drafts;
}

/** When the actor must wake next: the earliest reservation expiry or approval deadline. */
export function nextDeadline(ctx: SessionContext): number | undefined {
  let t = Infinity;
  for (const r of Object.values(ctx.reservations)) t = Math.min(t, r.expiresAt);
  for (const a of Object.values(ctx.approvals)) t = Math.min(t, a.deadline);
  return t === Infinity ? undefined : t;
}
