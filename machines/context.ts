import type { GovernorEvent } from "../schema/events";
import { Policy } from "../schema/policy";
import { toNanos } from "../lib/money";
import type { Rates } from "../schema/pricing";
import { initialLoopState, reduceLoops, type LoopState } from "./loops";

// The session's context is a pure fold of its events: the same log always gives the same
// numbers, which is what lets an auditor replay a log and get the live actor's state.

export interface Reservation {
  requestId: string;
  kind: "llm" | "action";
  estimateNanos: number;
  expiresAt: number;
  model?: string;
  run?: string;
  action?: string;
  /** The input-token estimate before the learned ratio: what a settle's billed input is compared with. */
  estimateTokens?: number;
  profile?: string;
  provider?: "openai" | "anthropic";
  /** Rates the settle is charged at (a price the policy declared), from the reservation. */
  rates?: Rates;
}

export interface PendingApproval {
  approvalId: string;
  requestId: string;
  action: string;
  argsHash: string;
  args?: unknown;
  costUsd: number;
  rule: string;
  reason: string;
  deadline: number;
  requestedAt: number;
  run?: string;
  /** The approval.requested event's seq: where its arguments' values are kept (lib/pii.ts). Absent in snapshots from before. */
  seq?: number;
}

export interface Counters {
  llmCalls: number;
  actions: number;
  allowed: number;
  denied: number;
  reviews: number;
  violations: number;
  alerts: number;
  anomalies: number;
  /** Tool failures reported as facts (`error.recorded`). */
  errors: number;
}

export interface SessionContext {
  opened: boolean;
  tenant: string;
  session: string;
  policy: Policy | null;
  agent?: string;
  user?: string;
  task?: string;
  openedAt: number;
  lastActivity: number;
  seq: number;
  spentNanos: number;
  reservedNanos: number;
  /** What settles charged above their reservations, summed. */
  overrunNanos: number;
  reservations: Record<string, Reservation>;
  runSpentNanos: Record<string, number>;
  actionSpentNanos: Record<string, number>;
  counters: Counters;
  violationCounts: Record<string, number>;
  approvals: Record<string, PendingApproval>;
  /** Rules that already raised an alert: an alert is sent once per rule, not per call. */
  alerted: string[];
  /** Prompt sizes of the latest calls, newest last, as long as the runaway window. */
  promptWindow: number[];
  /** Timestamps of recent calls and actions, for per-session and per-run rate limits. */
  hits: number[];
  runHits: Record<string, number[]>;
  /** Repeated calls and errors (machines/loops.ts); absent in snapshots from before it existed. */
  loops?: LoopState;
  killed?: { by: string; reason: string; rule?: string; at: number };
  closed?: { by: string; reason?: string; at: number };
}

export function initialContext(): SessionContext {
  return {
    opened: false,
    tenant: "",
    session: "",
    policy: null,
    openedAt: 0,
    lastActivity: 0,
    seq: 0,
    spentNanos: 0,
    reservedNanos: 0,
    overrunNanos: 0,
    reservations: {},
    runSpentNanos: {},
    actionSpentNanos: {},
    counters: { llmCalls: 0, actions: 0, allowed: 0, denied: 0, reviews: 0, violations: 0, alerts: 0, anomalies: 0, errors: 0 },
    violationCounts: {},
    approvals: {},
    alerted: [],
    promptWindow: [],
    hits: [],
    runHits: {},
    loops: initialLoopState(),
  };
}

function add(map: Record<string, number>, key: string | undefined, nanos: number): Record<string, number> {
  if (!key || nanos === 0) return map;
  return { ...map, [key]: (map[key] ?? 0) + nanos };
}

/** Longest window any session- or run-scoped rate rule needs, so old hits can be dropped. */
function rateHorizon(policy: Policy | null): { session: number; run: number } {
  let session = 0;
  let run = 0;
  for (const r of policy?.limits.rate ?? []) {
    if (r.per === "session") session = Math.max(session, r.window);
    if (r.per === "run") run = Math.max(run, r.window);
  }
  return { session, run };
}

function recordHit(ctx: SessionContext, ts: number, run: string | undefined): Pick<SessionContext, "hits" | "runHits"> {
  const horizon = rateHorizon(ctx.policy);
  const hits = horizon.session > 0 ? [...ctx.hits.filter((t) => t > ts - horizon.session), ts] : ctx.hits;
  let runHits = ctx.runHits;
  if (horizon.run > 0 && run) {
    runHits = { ...runHits, [run]: [...(runHits[run] ?? []).filter((t) => t > ts - horizon.run), ts] };
  }
  return { hits, runHits };
}

function charge(ctx: SessionContext, nanos: number, run?: string, action?: string): Partial<SessionContext> {
  return {
    spentNanos: ctx.spentNanos + nanos,
    runSpentNanos: add(ctx.runSpentNanos, run, nanos),
    actionSpentNanos: add(ctx.actionSpentNanos, action, nanos),
  };
}

function without<T>(map: Record<string, T>, key: string): Record<string, T> {
  const { [key]: _gone, ...rest } = map;
  return rest;
}

/** The rates of a reservation event, without where they came from (the event keeps that). */
function ratesOf({ source: _source, key: _key, ...rates }: Rates & { source: string; key?: string }): Rates {
  return rates;
}

export function reduce(ctx: SessionContext, event: GovernorEvent): SessionContext {
  const next = reduceEvent(ctx, event);
  const loops = reduceLoops(ctx, event);
  return loops === ctx.loops ? next : { ...next, loops };
}

function reduceEvent(ctx: SessionContext, event: GovernorEvent): SessionContext {
  const base = { ...ctx, seq: event.seq, lastActivity: event.ts };
  const c = ctx.counters;
  switch (event.type) {
    case "session.opened": {
      const d = event.data;
      // Parsed again so a log written before a policy field existed gets that field's default.
      return { ...base, opened: true, tenant: d.tenant, session: d.session, policy: Policy.parse(d.policy), agent: d.agent, user: d.user, task: d.task, openedAt: event.ts };
    }
    case "request.reserved": {
      const d = event.data;
      const nanos = toNanos(d.estimateUsd);
      const r: Reservation = {
        requestId: d.requestId,
        kind: d.kind,
        estimateNanos: nanos,
        expiresAt: d.expiresAt,
        model: d.model,
        run: d.attribution.run,
        action: d.attribution.action,
        ...(d.estimateTokens !== undefined && { estimateTokens: d.estimateTokens }),
        ...(d.profile && { profile: d.profile }),
        ...(d.provider && { provider: d.provider }),
        ...(d.rates && { rates: ratesOf(d.rates) }),
      };
      const window = ctx.policy?.runaway.window ?? 5;
      // Runaway compares sizes call to call: the size bound where the event has it, else (older logs) the token count.
      const size = d.promptSize ?? d.promptTokens;
      const promptWindow = d.kind === "llm" && size !== undefined ? [...ctx.promptWindow, size].slice(-window) : ctx.promptWindow;
      return {
        ...base,
        ...recordHit(ctx, event.ts, d.attribution.run),
        reservations: { ...ctx.reservations, [d.requestId]: r },
        reservedNanos: ctx.reservedNanos + nanos,
        promptWindow,
        counters: { ...c, llmCalls: c.llmCalls + (d.kind === "llm" ? 1 : 0), allowed: c.allowed + 1 },
      };
    }
    case "request.settled": {
      const d = event.data;
      // A reported cost is a bill from outside: it never closes a reservation.
      const r = d.outcome === "reported" ? undefined : ctx.reservations[d.requestId];
      const nanos = toNanos(d.costUsd);
      return {
        ...base,
        ...(r ? { reservations: without(ctx.reservations, d.requestId), reservedNanos: ctx.reservedNanos - r.estimateNanos } : {}),
        ...charge(ctx, nanos, r?.run ?? d.attribution.run, r?.action ?? d.attribution.action),
        overrunNanos: ctx.overrunNanos + (d.overrunUsd ? toNanos(d.overrunUsd) : 0),
      };
    }
    case "request.denied":
      return {
        ...base,
        counters: { ...c, denied: c.denied + 1, llmCalls: c.llmCalls + (event.data.kind === "llm" ? 1 : 0), actions: c.actions + (event.data.kind === "action" ? 1 : 0) },
      };
    case "action.checked": {
      const d = event.data;
      const next: SessionContext = { ...base, counters: { ...c, actions: c.actions + 1 } };
      if (d.decision === "deny") return { ...next, counters: { ...next.counters, denied: c.denied + 1 } };
      if (d.decision === "review") return { ...next, ...recordHit(ctx, event.ts, d.attribution.run), counters: { ...next.counters, reviews: c.reviews + 1 } };
      return {
        ...next,
        ...recordHit(ctx, event.ts, d.attribution.run),
        ...charge(ctx, toNanos(d.costUsd), d.attribution.run, d.action),
        counters: { ...next.counters, allowed: c.allowed + 1 },
      };
    }
    case "violation.recorded":
      return {
        ...base,
        violationCounts: { ...ctx.violationCounts, [event.data.kind]: (ctx.violationCounts[event.data.kind] ?? 0) + 1 },
        counters: { ...c, violations: c.violations + 1 },
      };
    case "error.recorded":
      // A snapshot from before this counter existed has none.
      return { ...base, counters: { ...c, errors: (c.errors ?? 0) + 1 } };
    case "anomaly.detected":
      return {
        ...base,
        alerted: [...ctx.alerted, `${event.data.kind}@${event.seq}`],
        counters: { ...c, anomalies: c.anomalies + 1 },
        promptWindow: event.data.kind === "runaway" ? [] : ctx.promptWindow,
      };
    case "alert.raised":
      return { ...base, alerted: ctx.alerted.includes(event.data.rule) ? ctx.alerted : [...ctx.alerted, event.data.rule], counters: { ...c, alerts: c.alerts + 1 } };
    case "approval.requested": {
      const d = event.data;
      const p: PendingApproval = { approvalId: d.approvalId, requestId: d.requestId, action: d.action, argsHash: d.argsHash, args: d.args, costUsd: d.costUsd, rule: d.rule, reason: d.reason, deadline: d.deadline, requestedAt: event.ts, run: d.attribution.run, seq: event.seq };
      return { ...base, approvals: { ...ctx.approvals, [d.approvalId]: p } };
    }
    case "approval.granted": {
      // A granted action is charged now: that is when it is allowed to run.
      const p = ctx.approvals[event.data.approvalId];
      if (!p) return base;
      return { ...base, approvals: without(ctx.approvals, p.approvalId), ...charge(ctx, toNanos(p.costUsd), p.run, p.action), counters: { ...c, allowed: c.allowed + 1 } };
    }
    case "approval.denied": {
      const p = ctx.approvals[event.data.approvalId];
      if (!p) return base;
      return { ...base, approvals: without(ctx.approvals, p.approvalId), counters: { ...c, denied: c.denied + 1 } };
    }
    // An ended session has nothing left to approve: pending approvals end with it.
    // The first end is the one that stands (logs written before exactly-one-end may hold more).
    case "session.killed":
      return { ...base, approvals: {}, killed: ctx.killed ?? (ctx.closed ? undefined : { by: event.data.by, reason: event.data.reason, rule: event.data.rule, at: event.ts }) };
    case "session.closed":
      return { ...base, approvals: {}, closed: ctx.closed ?? (ctx.killed ? undefined : { by: event.data.by, reason: event.data.reason, at: event.ts }) };
    case "subject.redacted":
      return base;
  }
}
