import type { Attribution, EventDraft, SeenToolCall, Usage } from "../schema/events";
import { toNanos, toUsd } from "../lib/money";
import { ratesCostUsd, type Rates } from "../schema/pricing";
import type { SessionContext } from "./context";
import { isRunaway, type RateHit } from "./rules";
import { afterError, withToolCalls } from "./loops";
import {
  afterCharge,
  errorRecorded,
  budgetRefusal,
  durationRefusal,
  hasBudget,
  headroomNanos,
  policyOf,
  preview,
  rateRefusal,
  refuse,
  stateRefusal,
  type Decision,
  type Refusal,
  type View,
} from "./decide";

// The money side of the policy engine: reserving a proxied call's worst case, settling it
// with what the provider billed, charging what never settled, and ending a session. Pure,
// like the rest of machines/: every figure comes in with the request.

export interface ReserveInput {
  requestId: string;
  provider: "openai" | "anthropic";
  model: string;
  path: string;
  estimateUsd: number;
  priced: boolean;
  /** Input tokens the estimate assumed (after the learned ratio). */
  promptTokens: number;
  /** Output tokens the estimate assumed, all choices together. */
  maxOutputTokens: number;
  promptHash?: string;
  attribution: Attribution;
  /** Runaway detection's measure; promptTokens when absent. */
  promptSize?: number;
  inputMethod?: "bound" | "count";
  estimateTokens?: number;
  inputRatio?: number;
  profile?: string;
  /** The estimate used the size bound and a counted estimate could be lower: a budget refusal asks for it instead. */
  countable?: boolean;
  /** What budget.fit_output needs to lower the output cap: the estimate without output, the output price, the cap. */
  fit?: { fixedNanos: number; outputNanosPerToken: number; choices: number; cap: number };
  /** Why the call cannot be priced although its model can (audio, an unpriced tool). */
  unpricedReason?: string;
  /** Tool calls of the request's newest assistant turn, for loop detection (machines/loops.ts). */
  toolCalls?: SeenToolCall[];
  /** Choices asked for (`n`). */
  choices?: number;
  /** Whether the output cap per choice was the call's own or the policy's default_max_tokens, and what it was. */
  capFrom?: "call" | "policy";
  outputCap?: number;
  /** USD per 1M output tokens the estimate used. */
  outputPrice?: number;
  /** USD per 1M input tokens the estimate used. */
  inputPrice?: number;
  /** The call may write to the prompt cache with this TTL. */
  cacheWrite?: "5m" | "1h";
  /** Server-side tool fees in the estimate, USD. */
  feesUsd?: number;
  /** Rates other than the gateway's table (a price the policy declares): settles are charged at them. */
  rates?: PricedAt;
}

/** Rates a call was priced at, and where they came from: the policy's `pricing` (its key), or the table (a what-if's fallback). */
export type PricedAt = Rates & { source: "policy" | "table"; key?: string };

/** What a reservation, or its refusal, records about the call, so a what-if can price and decide it again. */
function callFacts(input: ReserveInput) {
  return {
    provider: input.provider,
    path: input.path,
    promptTokens: input.promptTokens,
    maxOutputTokens: input.maxOutputTokens,
    promptHash: input.promptHash,
    ...(input.promptSize !== undefined && { promptSize: input.promptSize }),
    ...(input.choices !== undefined && { choices: input.choices }),
    ...(input.capFrom && { capFrom: input.capFrom }),
    ...(input.outputCap !== undefined && { outputCap: input.outputCap }),
    ...(input.outputPrice !== undefined && { outputPrice: input.outputPrice }),
    ...(input.inputPrice !== undefined && { inputPrice: input.inputPrice }),
    ...(input.cacheWrite && { cacheWrite: input.cacheWrite }),
    ...(input.feesUsd !== undefined && { feesUsd: input.feesUsd }),
    ...(input.rates && { rates: input.rates }),
    ...(!input.priced && { unpriced: true as const }),
    ...(!input.priced && input.unpricedReason && { unpricedReason: input.unpricedReason }),
  };
}

const fmt = (n: number) => `$${toUsd(n).toFixed(6).replace(/0+$/, "").replace(/\.$/, "")}`;

/**
 * budget.fit_output: the largest output cap (per choice) the tightest ceiling leaves room
 * for, when that is at least min_output_tokens; undefined when even that does not fit.
 */
function fittedCap(ctx: SessionContext, input: ReserveInput): number | undefined {
  const b = policyOf(ctx).budget;
  const fit = input.fit;
  if (!fit || fit.outputNanosPerToken <= 0) return undefined;
  const room = headroomNanos(ctx, input.attribution.run, input.attribution.action);
  if (room === undefined) return undefined;
  const cap = Math.min(fit.cap, Math.floor((room - fit.fixedNanos) / (fit.outputNanosPerToken * fit.choices)));
  return cap >= b.min_output_tokens ? cap : undefined;
}

/** A budget refusal says when the output cap, not the prompt, is what does not fit, and how to fix that. */
function withHint(ctx: SessionContext, input: ReserveInput, r: Refusal): Refusal {
  const fit = input.fit;
  if (!fit) return r;
  const b = policyOf(ctx).budget;
  const room = headroomNanos(ctx, input.attribution.run, input.attribution.action) ?? Infinity;
  const outputNanos = fit.cap * fit.choices * fit.outputNanosPerToken;
  if (fit.fixedNanos + b.min_output_tokens * fit.choices * fit.outputNanosPerToken > room) {
    return { ...r, reason: `${r.reason}: the prompt alone needs ${fmt(fit.fixedNanos)} and ${fmt(Math.max(0, room))} is left` };
  }
  const fix = b.fit_output ? "lower it" : "lower it, or set budget.fit_output: true to have such calls sent with the cap lowered to what the budget leaves";
  return { ...r, reason: `${r.reason}: the output cap of ${fit.cap} tokens${fit.choices > 1 ? ` x ${fit.choices} choices` : ""} reserves ${fmt(outputNanos)} of it (max_tokens, or the policy's default_max_tokens); ${fix}` };
}

/**
 * The estimate used the size bound and the budget would refuse it, while a counted estimate
 * (usually far lower) might fit: the caller counts and asks again before anything is decided.
 */
export function needsCount(view: View, input: ReserveInput): boolean {
  if (!input.countable || !input.priced || !view.context.policy) return false;
  if (view.state === "killed" || view.state === "closed" || view.state === "awaiting-approval") return false;
  return budgetRefusal(view.context, toNanos(input.estimateUsd), input.attribution.run, input.attribution.action) !== undefined;
}

/** `crossSession`: the tenant actor's refusal under a per-user or per-agent rate, if any. */
export function decideReserve(view: View, input: ReserveInput, now: number, crossSession?: RateHit): Decision {
  return withToolCalls(view, input.toolCalls, decideReserveRules(view, input, now, crossSession), now);
}

function decideReserveRules(view: View, input: ReserveInput, now: number, crossSession?: RateHit): Decision {
  const ctx = view.context;
  const p = policyOf(ctx);
  const a = input.attribution;
  const id = `reserve:${input.requestId}`;
  const denialFor = (r: Refusal, call: ReserveInput): Decision =>
    refuse(r, { type: "request.denied", id, data: { requestId: input.requestId, kind: "llm", code: r.code, rule: r.rule, reason: r.reason, model: input.model, estimateUsd: call.estimateUsd, attribution: a, ...callFacts(call) } }, id);
  const denial = (r: Refusal) => denialFor(r, input);

  const gate = stateRefusal(view);
  if (gate) return denial(gate);
  if (view.state === "awaiting-approval") {
    if (p.approval.while_pending === "hold") return { drafts: [], verdict: { decision: "hold", code: "awaiting_approval", rule: "approval.while_pending", reason: "an action is awaiting approval" } };
    return denial({ code: "awaiting_approval", rule: "approval.while_pending", reason: "an action in this session is awaiting approval: decide it (POST /v1/sessions/:id/approvals/:aid, or the console), or set approval.while_pending: hold to have calls wait" });
  }
  const early = durationRefusal(ctx, now) ?? rateRefusal(ctx, now, a.run) ?? (crossSession && { code: "rate_limited" as const, ...crossSession });
  if (early) return denial(early);
  if (!input.priced && p.unpriced_models === "deny" && hasBudget(p, a.action)) {
    return denial({ code: "policy_violation", rule: "unpriced_models", reason: unpricedReason(input) });
  }
  let estimateUsd = input.estimateUsd;
  let maxOutputTokens = input.maxOutputTokens;
  let outputCap: number | undefined;
  const budget = budgetRefusal(ctx, toNanos(estimateUsd), a.run, a.action);
  if (budget) {
    // The size bound can be far above the real count: ask for the count before refusing.
    if (input.countable) return { drafts: [], verdict: { decision: "count" } };
    const cap = p.budget.fit_output ? fittedCap(ctx, input) : undefined;
    if (cap === undefined || !input.fit) return denial(withHint(ctx, input, budget));
    outputCap = cap;
    maxOutputTokens = cap * input.fit.choices;
    estimateUsd = toUsd(input.fit.fixedNanos + maxOutputTokens * input.fit.outputNanosPerToken);
  }
  const fitted = { ...input, estimateUsd, maxOutputTokens, fittedCap: outputCap };

  const window = [...ctx.promptWindow, input.promptSize ?? input.promptTokens].slice(-p.runaway.window);
  const allow: Decision["verdict"] = { decision: "allow", ...(outputCap !== undefined && { outputCap }) };
  if (isRunaway(window, p.runaway)) {
    const anomaly: EventDraft = {
      type: "anomaly.detected",
      id: `${id}#runaway`,
      data: { kind: "runaway", reason: `${p.runaway.consecutive} consecutive prompts each grew more than ${p.runaway.growth_ratio}x`, promptTokens: window, onDetect: p.runaway.on_detect === "kill" ? "kill" : "alert" },
    };
    if (p.runaway.on_detect === "kill") {
      const d = denialFor({ code: "session_killed", rule: "runaway", reason: "runaway loop detected: prompt keeps growing", kill: true }, fitted);
      return { ...d, drafts: [anomaly, ...d.drafts] };
    }
    return { drafts: [reservation(fitted, now + p.budget.reservation_ttl), anomaly], verdict: allow };
  }
  return { drafts: [reservation(fitted, now + p.budget.reservation_ttl)], verdict: allow };
}

/** Why an unpriced call is refused, and what would let it through: a declared price where the model is what lacks one. */
function unpricedReason(input: ReserveInput): string {
  const allow = "set unpriced_models: allow to let such calls through uncounted";
  if (input.unpricedReason) return `this call cannot be priced (${input.unpricedReason}), and this session has a budget; ${allow}`;
  const key = `${input.provider}/${input.model}`;
  return `model "${input.model}" has no price, and this session has a budget; declare its price in the policy under pricing ("${key}": { input, output } in USD per 1M tokens), or ${allow}`;
}

function reservation(input: ReserveInput & { fittedCap?: number }, expiresAt: number): EventDraft {
  return {
    type: "request.reserved",
    id: `reserve:${input.requestId}`,
    data: {
      requestId: input.requestId,
      kind: "llm",
      model: input.model,
      estimateUsd: input.estimateUsd,
      expiresAt,
      attribution: input.attribution,
      ...callFacts(input),
      ...(input.inputMethod && { inputMethod: input.inputMethod }),
      ...(input.estimateTokens !== undefined && { estimateTokens: input.estimateTokens }),
      ...(input.inputRatio !== undefined && { inputRatio: input.inputRatio }),
      ...(input.profile && { profile: input.profile }),
      ...(input.fittedCap !== undefined && { fittedCap: input.fittedCap }),
    },
  };
}

export interface SettleInput {
  requestId: string;
  costUsd: number;
  outcome: "completed" | "aborted" | "released";
  usage?: Usage;
  /** Why the call failed upstream, for calls that did: recorded as an LLM error (loop detection). */
  error?: { code?: string; message?: string; /** The recorded one, when a what-if replays the settle. */ signature?: string };
}

const OVERRUN_RULE = "budget.overrun";

/** Billed input tokens over the reservation's estimate of them (before the learned ratio). */
function inputRatio(estimateTokens: number | undefined, usage: Usage | undefined): number | undefined {
  if (!usage || !estimateTokens) return undefined;
  const billed = usage.inputTokens + usage.cachedInputTokens + usage.cacheWriteTokens + (usage.cacheWrite1hTokens ?? 0);
  return Math.round((billed / estimateTokens) * 1e4) / 1e4;
}

/**
 * The settle, and when it charged more than was reserved, the overrun on it and one alert
 * per session naming the model and how far billed input went past the estimate.
 */
function settled(ctx: SessionContext, requestId: string, reported: number, outcome: "completed" | "aborted" | "released" | "expired", usage: Usage | undefined, now: number): EventDraft[] {
  const r = ctx.reservations[requestId];
  const id = `settle:${requestId}`;
  // A call priced at rates the gateway does not hold (a declared price) is charged here, from
  // the provider's usage, at the rates it was reserved at; otherwise the gateway's figure stands.
  const costUsd = outcome !== "released" && usage && r?.rates && r.provider ? ratesCostUsd(r.provider, r.rates, usage) : reported;
  const overrunNanos = r ? Math.max(0, toNanos(costUsd) - r.estimateNanos) : 0;
  const ratio = r ? inputRatio(r.estimateTokens, usage) : undefined;
  const draft: EventDraft = {
    type: "request.settled",
    id,
    data: { requestId, costUsd, outcome, usage, model: r?.model, ...(overrunNanos > 0 && { overrunUsd: toUsd(overrunNanos) }), ...(ratio !== undefined && { inputRatio: ratio }) },
  };
  const after = preview(ctx, [draft], now);
  const out: EventDraft[] = [draft];
  if (overrunNanos > 0 && !ctx.alerted.includes(OVERRUN_RULE) && ctx.policy) {
    const why = ratio !== undefined && ratio > 1 ? `billed ${ratio}x the input tokens estimated` : "billed more than its estimate";
    out.push({
      type: "alert.raised",
      id: `${id}#overrun`,
      data: {
        kind: "overrun",
        rule: OVERRUN_RULE,
        reason: `${r?.model ?? "a call"} ${why}: settled ${fmt(toNanos(costUsd))} on a ${fmt(r?.estimateNanos ?? 0)} reservation (later estimates for this model are raised by the ratio)`,
        spentUsd: toUsd(after.spentNanos),
        ...(ctx.policy.budget.session_usd !== undefined && { limitUsd: ctx.policy.budget.session_usd }),
        ...(r?.model && { model: r.model }),
        ...(ratio !== undefined && { ratio }),
        overrunUsd: toUsd(overrunNanos),
      },
    });
  }
  return [...out, ...afterCharge(preview(ctx, out, now), id, r?.run, r?.action)];
}

/** Undefined when there is no open reservation with that id (already settled, or never made). */
export function decideSettle(view: View, input: SettleInput, now: number): Decision | undefined {
  const ctx = view.context;
  const r = ctx.reservations[input.requestId];
  if (!r) return undefined;
  const cost = input.outcome === "released" ? 0 : input.costUsd;
  const drafts = settled(ctx, input.requestId, cost, input.outcome, input.usage, now);
  if (input.error && ctx.policy) {
    const id = `settle:${input.requestId}`;
    const action = r.model ?? "llm";
    const failed = errorRecorded(ctx.policy, `${id}#error`, { ...input.error, action }, "llm");
    drafts.push(failed, ...afterError(view, preview(ctx, [...drafts, failed], now), id, input.requestId, action, now, { run: r.run }));
  }
  return { drafts, verdict: { decision: "allow" } };
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
  const live = view.state !== "killed" && view.state !== "closed";
  let scratch = ctx;
  const drafts: EventDraft[] = [];
  const seen = new Set<string>();
  for (const r of Object.values(ctx.reservations)) {
    // A stream still sending heartbeats is not abandoned, however long it runs.
    if (streaming.has(r.requestId)) continue;
    const stream = abandoned[r.requestId];
    let batch: EventDraft[] | undefined;
    if (stream) batch = settled(scratch, r.requestId, stream.costUsd, "aborted", stream.usage, now);
    else if (r.expiresAt <= now) batch = settled(scratch, r.requestId, toUsd(r.estimateNanos), "expired", undefined, now);
    if (!batch) continue;
    // One alert per rule and one kill per batch, however many reservations it settles.
    for (const d of batch) {
      const key = d.type === "alert.raised" ? d.data.rule : d.type === "session.killed" ? d.type : undefined;
      if (key && seen.has(key)) continue;
      if (key) seen.add(key);
      drafts.push(d);
      scratch = preview(scratch, [d], now);
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
