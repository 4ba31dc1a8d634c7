import { sha256Hex } from "../lib/chain";
import type { Attribution, EventDraft, GovernorEvent, SeenToolCall } from "../schema/events";
import type { Policy } from "../schema/policy";
import type { SessionContext } from "./context";
import type { Decision, View } from "./decide";

// Loop detection by repetition (policy `runaway.repeat`): an agent calling the same tool
// with the same arguments again and again, or hitting the same upstream error again and
// again. Pure like the rest of the machine: the state below is folded from the log, and
// the checks only read it.

export type LoopLevel = "alert" | "review" | "kill";
const LADDER: readonly LoopLevel[] = ["alert", "review", "kill"];

export interface RepeatConfig {
  sameCall?: number;
  sameError?: number;
  window: number;
  onDetect: LoopLevel;
  escalate: boolean;
}

/** Undefined when repeat detection is off (no `runaway.repeat`, or `on_detect: off` inherited). */
export function repeatConfig(policy: Policy | null | undefined): RepeatConfig | undefined {
  const r = policy?.runaway.repeat;
  if (!r) return undefined;
  const inherited = policy.runaway.on_detect;
  const onDetect = r.on_detect ?? (inherited === "off" ? undefined : inherited);
  if (!onDetect) return undefined;
  return { sameCall: r.same_call, sameError: r.same_error, window: r.window ?? Math.max(10, r.same_call ?? 0), onDetect, escalate: r.escalate };
}

export interface ErrorRun {
  signature: string;
  source: "tool" | "llm";
  count: number;
}

export interface LoopState {
  /** Signatures of the latest actions (HTTP, socket, MCP), newest last, as long as the window. */
  calls: string[];
  /** Signatures of the latest tool calls seen in proxied LLM requests, newest last. */
  toolCalls: string[];
  /** Keys of tool calls already counted: an agent re-sends its history with every request. */
  seenToolCalls: string[];
  /** The current run of identical upstream errors. */
  errorRun: ErrorRun | null;
  /** Repeat detections so far; each later one climbs the ladder a step. */
  detections: number;
}

// Enough to recognise a history re-sent by a context-appending agent: only the newest
// assistant turn is offered, so this bounds retries of one request, not the history.
const SEEN_KEYS = 64;

export function initialLoopState(): LoopState {
  return { calls: [], toolCalls: [], seenToolCalls: [], errorRun: null, detections: 0 };
}

export function callSignature(action: string, argsHash: string): string {
  return sha256Hex(`${action}\n${argsHash}`);
}

function pushed(list: string[], sig: string, window: number): string[] {
  return [...list, sig].slice(-window);
}

/** The loop part of the fold: `before` is the context the event applies to. */
export function reduceLoops(before: SessionContext, event: GovernorEvent): LoopState {
  const s = before.loops ?? initialLoopState();
  const cfg = repeatConfig(before.policy);
  switch (event.type) {
    case "action.checked":
      return cfg?.sameCall ? { ...s, calls: pushed(s.calls, callSignature(event.data.action, event.data.argsHash), cfg.window) } : s;
    case "request.reserved": {
      const seen = event.data.toolCalls;
      if (!seen?.length) return s;
      let toolCalls = s.toolCalls;
      for (const t of seen) toolCalls = pushed(toolCalls, callSignature(t.name, t.argsHash), cfg?.window ?? 10);
      return { ...s, toolCalls, seenToolCalls: [...s.seenToolCalls, ...seen.map((t) => t.key)].slice(-SEEN_KEYS) };
    }
    case "error.recorded": {
      if (!cfg?.sameError) return s;
      const { signature, source } = event.data;
      const count = s.errorRun?.signature === signature ? s.errorRun.count + 1 : 1;
      return { ...s, errorRun: { signature, source, count } };
    }
    case "request.settled":
      // A model call that worked ends a run of model errors: the agent got past them.
      if (s.errorRun?.source === "llm" && event.data.outcome === "completed" && before.reservations[event.data.requestId]?.kind === "llm") return { ...s, errorRun: null };
      return s;
    case "anomaly.detected":
      if (event.data.kind === "repeat_call") return { ...s, calls: [], toolCalls: [], detections: s.detections + 1 };
      if (event.data.kind === "repeat_error") return { ...s, errorRun: null, detections: s.detections + 1 };
      return s;
    default:
      return s;
  }
}

export interface LoopHit {
  kind: "repeat_call" | "repeat_error";
  rule: string;
  reason: string;
  signature: string;
  count: number;
  level: LoopLevel;
  action?: string;
}

/** Where this detection lands on the ladder: `on_detect`, one step higher per earlier detection. */
export function levelFor(cfg: RepeatConfig, detections: number): LoopLevel {
  if (!cfg.escalate) return cfg.onDetect;
  return LADDER[Math.min(LADDER.indexOf(cfg.onDetect) + detections, LADDER.length - 1)];
}

function countIn(list: string[], sig: string, window: number): number {
  return pushed(list, sig, window).filter((x) => x === sig).length;
}

/** Would this call be the `same_call`-th identical one within the window? */
export function repeatedCall(ctx: SessionContext, action: string, argsHash: string): LoopHit | undefined {
  const cfg = repeatConfig(ctx.policy);
  if (!cfg?.sameCall) return undefined;
  const s = ctx.loops ?? initialLoopState();
  const sig = callSignature(action, argsHash);
  const count = countIn(s.calls, sig, cfg.window);
  if (count < cfg.sameCall) return undefined;
  return {
    kind: "repeat_call",
    rule: "runaway.repeat.same_call",
    reason: `loop detected: ${action} was called with the same arguments ${count} times within the last ${cfg.window} actions`,
    signature: sig,
    count,
    level: levelFor(cfg, s.detections),
    action,
  };
}

/** Tool calls of a request's history not counted before (by their key). */
export function unseenToolCalls(ctx: SessionContext, candidates: SeenToolCall[] | undefined): SeenToolCall[] {
  if (!candidates?.length) return [];
  const seen = new Set((ctx.loops ?? initialLoopState()).seenToolCalls);
  return candidates.filter((t) => !seen.has(t.key));
}

/** The first of `calls` (in order) that repeats often enough, counting the ones before it. */
export function repeatedToolCall(ctx: SessionContext, calls: SeenToolCall[]): LoopHit | undefined {
  const cfg = repeatConfig(ctx.policy);
  if (!cfg?.sameCall) return undefined;
  const s = ctx.loops ?? initialLoopState();
  let window = s.toolCalls;
  for (const t of calls) {
    const sig = callSignature(t.name, t.argsHash);
    const count = countIn(window, sig, cfg.window);
    if (count >= cfg.sameCall) {
      return {
        kind: "repeat_call",
        rule: "runaway.repeat.same_call",
        reason: `loop detected: the model called ${t.name} with the same arguments ${count} times within its last ${cfg.window} tool calls`,
        signature: sig,
        count,
        level: levelFor(cfg, s.detections),
        action: t.name,
      };
    }
    window = pushed(window, sig, cfg.window);
  }
  return undefined;
}

/** Does the error just recorded (already folded into `ctx`) complete a run of `same_error`? */
export function repeatedError(ctx: SessionContext, action?: string): LoopHit | undefined {
  const cfg = repeatConfig(ctx.policy);
  const s = ctx.loops ?? initialLoopState();
  const run = s.errorRun;
  if (!cfg?.sameError || !run || run.count < cfg.sameError) return undefined;
  const what = run.source === "llm" ? "model call" : "tool";
  return {
    kind: "repeat_error",
    rule: "runaway.repeat.same_error",
    reason: `loop detected: the same ${what} error${action ? ` from ${action}` : ""} ${run.count} times in a row`,
    signature: run.signature,
    count: run.count,
    level: levelFor(cfg, s.detections),
    action,
  };
}

function anomaly(hit: LoopHit, id: string): EventDraft {
  return {
    type: "anomaly.detected",
    id: `${id}#loop`,
    data: { kind: hit.kind, reason: hit.reason, onDetect: hit.level, rule: hit.rule, action: hit.action, signature: hit.signature, count: hit.count },
  };
}

function killed(hit: LoopHit, id: string): EventDraft {
  return { type: "session.killed", id: `${id}#kill`, data: { by: "policy", rule: hit.rule, reason: hit.reason } };
}

/** An operator's review of the loop itself, for detections that have no action to hold. */
function loopReview(ctx: SessionContext, hit: LoopHit, id: string, requestId: string, now: number, attribution: Attribution): EventDraft {
  return {
    type: "approval.requested",
    id: `${id}#approval`,
    data: {
      approvalId: `apr_${ctx.seq + 1}`,
      requestId,
      action: hit.action ?? hit.kind,
      argsHash: hit.signature,
      costUsd: 0,
      rule: hit.rule,
      reason: `${hit.reason}: continue?`,
      deadline: now + (ctx.policy?.approval.timeout ?? 300_000),
      attribution,
    },
  };
}

const live = (view: View) => view.state !== "killed" && view.state !== "closed";

/**
 * An action's decision with the repeated-call check applied. The action stays in the
 * window whatever was decided: an agent stuck on a refused call is looping too.
 * alert: the decision stands; review: an allowed call waits for an operator; kill: the
 * call is refused and the session killed.
 */
export function withRepeatedCall(view: View, action: string, argsHash: string, base: Decision, now: number): Decision {
  if (!live(view)) return base;
  const hit = repeatedCall(view.context, action, argsHash);
  if (!hit) return base;
  const [checked, ...rest] = base.drafts;
  if (checked?.type !== "action.checked") return base;
  const id = checked.id;
  const decided = checked.data.decision;
  if (hit.level === "kill") {
    const refused: EventDraft = { ...checked, data: { ...checked.data, decision: "deny", code: "session_killed", rule: hit.rule, reason: hit.reason, approvalId: undefined } };
    return { drafts: [refused, anomaly(hit, id), killed(hit, id)], verdict: { decision: "deny", code: "session_killed", rule: hit.rule, reason: hit.reason } };
  }
  if (hit.level === "review" && decided === "allow") {
    const approvalId = `apr_${view.context.seq + 1}`;
    const d = checked.data;
    const reviewed: EventDraft = { ...checked, data: { ...d, decision: "review", rule: hit.rule, reason: hit.reason, approvalId } };
    const requested: EventDraft = {
      type: "approval.requested",
      id: `${id}#approval`,
      data: { approvalId, requestId: d.requestId, action: d.action, argsHash: d.argsHash, args: d.args, costUsd: d.costUsd ?? 0, rule: hit.rule, reason: hit.reason, deadline: now + (view.context.policy?.approval.timeout ?? 300_000), attribution: d.attribution },
    };
    return { drafts: [reviewed, requested, anomaly(hit, id)], verdict: { decision: "review", rule: hit.rule, reason: hit.reason, approvalId } };
  }
  return { drafts: [checked, ...rest, anomaly(hit, id)], verdict: base.verdict };
}

/**
 * A proxied LLM call with the tool calls its history shows for the first time: they are
 * recorded with the reservation, and a repeated one escalates like a repeated action.
 * review and kill refuse the call (a model call cannot wait on an approval itself).
 */
export function withToolCalls(view: View, candidates: SeenToolCall[] | undefined, base: Decision, now: number): Decision {
  const [reserved, ...rest] = base.drafts;
  if (!live(view) || base.verdict.decision !== "allow" || reserved?.type !== "request.reserved" || !repeatConfig(view.context.policy)?.sameCall) return base;
  const fresh = unseenToolCalls(view.context, candidates);
  if (!fresh.length) return base;
  const hit = repeatedToolCall(view.context, fresh);
  if (!hit || hit.level === "alert") {
    const recorded: EventDraft = { ...reserved, data: { ...reserved.data, toolCalls: fresh } };
    return { drafts: [recorded, ...rest, ...(hit ? [anomaly(hit, reserved.id)] : [])], verdict: base.verdict };
  }
  const r = reserved.data;
  const code = hit.level === "kill" ? "session_killed" : "awaiting_approval";
  // The call's facts and its tool calls go with the refusal, so a what-if can decide it again.
  const { expiresAt: _e, inputMethod: _m, estimateTokens: _t, inputRatio: _r, profile: _p, fittedCap: _f, ...facts } = r;
  const denied: EventDraft = {
    type: "request.denied",
    id: reserved.id,
    data: { ...facts, kind: "llm", code, rule: hit.rule, reason: hit.reason, attribution: r.attribution ?? {}, toolCalls: fresh },
  };
  const follow = hit.level === "kill" ? killed(hit, reserved.id) : loopReview(view.context, hit, reserved.id, r.requestId, now, r.attribution ?? {});
  // A prompt-growth anomaly found in the same call is kept; the reservation's other follow-ups go with it.
  const others = rest.filter((d) => d.type === "anomaly.detected");
  return { drafts: [denied, ...others, anomaly(hit, reserved.id), follow], verdict: { decision: "deny", code, rule: hit.rule, reason: hit.reason } };
}

/**
 * The follow-ups of an upstream error just recorded (`after` has it folded in): nothing,
 * or an anomaly escalated to an alert, a review of the loop, or a kill.
 */
export function afterError(view: View, after: SessionContext, id: string, requestId: string, action: string | undefined, now: number, attribution: Attribution = {}): EventDraft[] {
  if (!live(view)) return [];
  const hit = repeatedError(after, action);
  if (!hit) return [];
  if (hit.level === "kill") return [anomaly(hit, id), killed(hit, id)];
  // One review at a time is enough: a loop that goes on while it waits escalates further.
  if (hit.level === "review" && view.state !== "awaiting-approval") return [anomaly(hit, id), loopReview(after, hit, id, requestId, now, attribution)];
  return [anomaly(hit, id)];
}
