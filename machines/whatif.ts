import { canonicalJson } from "../lib/chain";
import { toUsd } from "../lib/money";
import { EventData, type EventDraft, type EventOf, type GovernorEvent } from "../schema/events";
import { mergePolicies, parsePolicy, Policy } from "../schema/policy";
import type { WhatIfDifference, WhatIfKill, WhatIfOutcome, WhatIfReport, WhatIfUnknown } from "../schema/whatif";
import { decideAction, decideApproval, decideEnd, decideReport, decideReserve, decideSettle, decideTimers, type Decision, type SettleInput, type Verdict, type View } from "./decide";
import type { RateHit } from "./rules";
import { initialSnapshot, replay, stateOf, step, type SessionSnapshot } from "./session";
import { argsVerdict } from "./whatif-args";
import { callInput, unknownBecause, type RecordedCall } from "./whatif-calls";

// What-if replay: a recorded session decided again, request by request, under another
// policy, with the same pure engine and machine the actor runs. What came from outside
// (calls, actions, costs, violations, operators' decisions and kills, settles) is replayed
// at its recorded time; what the engine made of it (reservations, refusals, alerts, kills,
// approval timeouts) is made again. Pure: no clock, no I/O.

export type PolicyMode = "merge" | "replace";

/** The policy a what-if runs under: `other` over the recorded one field by field, or on its own. Throws BadRequestError naming the field. */
export function whatIfPolicy(events: GovernorEvent[], other: unknown, mode: PolicyMode): Policy {
  const opened = events[0];
  if (opened?.type !== "session.opened") return parsePolicy(other);
  return parsePolicy(mode === "merge" ? mergePolicies(opened.data.policy, other ?? {}) : other);
}

/** The session as the what-if sees it; events are folded without hashing (nobody reads this log). */
class Simulation {
  snapshot: SessionSnapshot = initialSnapshot();

  get view(): View {
    return { state: stateOf(this.snapshot), context: this.snapshot.context };
  }

  apply(drafts: EventDraft[], ts: number): GovernorEvent[] {
    const out: GovernorEvent[] = [];
    for (const d of drafts) {
      const e = { seq: this.snapshot.context.seq + 1, id: d.id, ts, type: d.type, data: EventData[d.type].parse(d.data), prev: "", hash: "" } as GovernorEvent;
      this.snapshot = step(this.snapshot, e);
      out.push(e);
    }
    return out;
  }
}

const ended = (v: View) => v.state === "killed" || v.state === "closed";

function outcomeOf(v: Verdict): WhatIfOutcome {
  return { decision: v.decision as WhatIfOutcome["decision"], ...(v.code && { code: v.code }), ...(v.rule && { rule: v.rule }), ...(v.reason && { reason: v.reason }) };
}

function sameOutcome(a: WhatIfOutcome, b: WhatIfOutcome): boolean {
  return a.decision === b.decision && (a.decision === "allow" || (a.rule ?? "") === (b.rule ?? ""));
}

function subjectOf(e: RecordedCall | EventOf<"action.checked">): string {
  if (e.type === "action.checked") return e.data.action;
  return `${e.data.provider ?? "llm"} ${e.data.model ?? "unknown model"}`;
}

/** What a kill is named after: the call or action whose decision (or settle) set it off. */
function triggerOf(e: GovernorEvent): { requestId?: string; subject?: string } {
  switch (e.type) {
    case "request.reserved":
    case "request.denied":
      return { requestId: e.data.requestId, subject: subjectOf(e) };
    case "action.checked":
      return { requestId: e.data.requestId, subject: e.data.action };
    case "request.settled":
      return { requestId: e.data.requestId, subject: e.data.outcome === "reported" ? "reported cost" : `settle of ${e.data.model ?? "a call"}` };
    case "violation.recorded":
      return { subject: `violation ${e.data.kind}` };
    case "approval.granted":
    case "approval.denied":
      return { subject: `approval ${e.data.approvalId}` };
    case "session.killed":
    case "session.closed":
      return { subject: `${e.type === "session.killed" ? "kill" : "close"} by ${e.data.by}` };
    default:
      return {};
  }
}

function crossRules(p: Policy): string {
  return canonicalJson((p.limits.rate ?? []).filter((r) => r.per === "user" || r.per === "agent"));
}

/** `recorded`: the log's folded end state, when the caller has it already (it is folded again otherwise). */
export function whatIf(events: GovernorEvent[], policy: Policy, mode: PolicyMode, recorded?: SessionSnapshot): WhatIfReport {
  const opened = events[0];
  if (opened?.type !== "session.opened") throw new Error("a session's log starts with session.opened");
  const recordedPolicy = Policy.parse(opened.data.policy);
  const run = new WhatIfRun(events, recordedPolicy, policy);
  run.start(opened);
  for (const e of events.slice(1)) run.offer(e);
  return run.report(mode, recorded ?? replay(events));
}

class WhatIfRun {
  private sim = new Simulation();
  private differences: WhatIfDifference[] = [];
  private unknown: WhatIfUnknown[] = [];
  private requests = 0;
  private kill: WhatIfKill | null = null;
  /** Recorded approval id -> the what-if's approval id for the same action. */
  private approvals = new Map<string, string>();
  private settledCost = new Map<string, number>();
  private granted = new Set<string>();
  /** The recorded approval each decision asked for, by the id of what asked (`action:…`, `reserve:…`, `report:…`). */
  private recordedApprovals = new Map<string, string>();
  /** Errors the record attached to settles (`settle:<id>#error`), by request id. */
  private settleErrors = new Map<string, EventOf<"error.recorded">>();
  private readonly sameCross: boolean;
  private readonly sameApprovals: boolean;
  private readonly notes = new Set<string>();

  constructor(
    private readonly events: GovernorEvent[],
    private readonly recorded: Policy,
    private readonly policy: Policy,
  ) {
    for (const e of events) {
      if (e.type === "request.settled") this.settledCost.set(e.data.requestId, (this.settledCost.get(e.data.requestId) ?? 0) + e.data.costUsd);
      if (e.type === "approval.granted") this.granted.add(e.data.approvalId);
      if (e.type === "approval.requested") this.recordedApprovals.set(e.id.split("#")[0], e.data.approvalId);
      if (e.type === "error.recorded" && e.id.startsWith("settle:") && e.id.endsWith("#error")) this.settleErrors.set(e.id.slice("settle:".length, -"#error".length), e);
    }
    this.sameCross = crossRules(recorded) === crossRules(policy);
    this.sameApprovals = canonicalJson(recorded.approval) === canonicalJson(policy.approval);
    if (!this.sameCross && crossRules(policy) !== "[]") this.notes.add("per-user and per-agent rates span sessions: this what-if counts only this session's calls against them");
  }

  start(opened: EventOf<"session.opened">) {
    this.sim.apply([{ type: "session.opened", id: opened.id, data: { ...opened.data, policy: this.policy } }], opened.ts);
  }

  /** One recorded event: follow-ups (`<id>#...`) are the engine's own and are made again, not replayed. */
  offer(e: GovernorEvent) {
    if (e.id.includes("#")) return;
    this.timers(e.ts);
    switch (e.type) {
      case "request.reserved":
      case "request.denied":
        if (e.data.kind === "llm") return this.call(e);
        return this.asRecorded(e);
      case "request.settled":
        return e.data.outcome === "reported" ? this.cost(e) : this.settle(e);
      case "action.checked":
        return this.action(e);
      case "violation.recorded":
        return this.apply(e, decideReport(this.sim.view, { id: e.id.replace(/^report:/, ""), type: "violation", kind: e.data.kind, detail: e.data.detail }, e.ts));
      case "error.recorded": {
        // The recorded signature: the message behind it may not have been kept.
        const d = e.data;
        return this.apply(e, decideReport(this.sim.view, { id: e.id.replace(/^report:/, ""), type: "error", action: d.action, code: d.code, message: d.message, signature: d.signature }, e.ts));
      }
      case "approval.granted":
      case "approval.denied":
        return this.decision(e);
      case "session.killed":
      case "session.closed":
        return this.end(e);
      case "session.opened":
        return;
      default:
        return this.asRecorded(e);
    }
  }

  private apply(e: GovernorEvent, d: Decision, who?: { requestId: string; subject: string }) {
    const wasEnded = ended(this.sim.view);
    const out = this.sim.apply(d.drafts, e.ts);
    for (const x of out) {
      if (x.type !== "approval.requested") continue;
      const recorded = this.recordedApprovals.get(x.id.split("#")[0]);
      if (recorded) this.approvals.set(recorded, x.data.approvalId);
      else this.notes.add("approvals the recorded session never asked for are taken as unanswered: they end by approval.timeout and approval.on_timeout");
    }
    const killed = out.find((x): x is EventOf<"session.killed"> => x.type === "session.killed");
    if (killed && !wasEnded && !this.kill) this.kill = { seq: e.seq, ts: e.ts, ...(who ?? triggerOf(e)), by: killed.data.by, rule: killed.data.rule, reason: killed.data.reason };
    return out;
  }

  /** Replays a recorded fact as it stands, when the engine has no decision to make about it. */
  private asRecorded(e: GovernorEvent) {
    this.sim.apply([{ type: e.type, id: e.id, data: e.data } as EventDraft], e.ts);
  }

  /**
   * Approvals time out by the what-if policy's clock. Approvals the record also asked for
   * are left to the record's own decisions when the approval settings did not change.
   */
  private timers(now: number) {
    const v = this.sim.view;
    if (ended(v) || !Object.keys(v.context.approvals).length) return;
    const mine = new Set(this.sameApprovals ? this.approvals.values() : []);
    const approvals = Object.fromEntries(Object.entries(v.context.approvals).filter(([id]) => !mine.has(id)));
    if (!Object.keys(approvals).length) return;
    const drafts = decideTimers({ state: v.state, context: { ...v.context, reservations: {}, approvals } }, now);
    if (drafts.length) this.sim.apply(drafts, now);
  }

  private call(e: RecordedCall) {
    this.requests++;
    const d = e.data;
    const subject = subjectOf(e);
    const happened: WhatIfOutcome =
      e.type === "request.reserved"
        ? { decision: "allow", costUsd: this.settledCost.get(d.requestId) ?? null }
        : { decision: "deny", code: e.data.code, rule: e.data.rule, reason: e.data.reason, costUsd: 0 };
    const { input, missing, note } = callInput(this.recorded, this.policy, e);
    if (note) this.notes.add(note);
    const decision = decideReserve(this.sim.view, input, e.ts, this.crossSession(e));
    const why = unknownBecause(decision.verdict, missing);
    const base = { seq: e.seq, ts: e.ts, requestId: d.requestId, kind: "llm" as const, subject, happened };
    if (why) {
      this.unknown.push({ ...base, why, assumed: { ...happened } });
      this.asRecorded(e);
      return;
    }
    this.apply(e, decision, { requestId: d.requestId, subject });
    const wouldHave = outcomeOf(decision.verdict);
    if (wouldHave.decision === "allow") {
      if (happened.decision === "allow") wouldHave.costUsd = happened.costUsd;
      else {
        // What was reserved, after budget.fit_output lowered the cap if it did.
        const reserved = this.sim.view.context.reservations[d.requestId];
        Object.assign(wouldHave, { costUsd: null, reservedUsd: reserved ? toUsd(reserved.estimateNanos) : input.estimateUsd });
      }
    } else wouldHave.costUsd = 0;
    if (!sameOutcome(happened, wouldHave)) this.differences.push({ ...base, wouldHave });
  }

  /** A refusal under a per-user or per-agent rate came from the tenant; with the same rules, it stands. */
  private crossSession(e: RecordedCall | EventOf<"action.checked">): RateHit | undefined {
    if (e.type === "request.reserved") return undefined;
    const { rule, reason } = e.data;
    if (!this.sameCross || !rule || !/^limits\.rate\[per=(user|agent)\]$/.test(rule)) return undefined;
    return { rule, reason: reason ?? "rate limit across sessions", retryAfterMs: 1000 };
  }

  private action(e: EventOf<"action.checked">) {
    this.requests++;
    const d = e.data;
    const happened: WhatIfOutcome = {
      decision: d.decision,
      ...(d.code && { code: d.code }),
      ...(d.rule && { rule: d.rule }),
      ...(d.reason && { reason: d.reason }),
      costUsd: d.decision === "allow" || (d.approvalId && this.granted.has(d.approvalId)) ? d.costUsd : 0,
    };
    const args = argsVerdict(this.recorded, this.policy, e);
    const kept = d.args && typeof d.args === "object" && !Array.isArray(d.args) ? (d.args as Record<string, unknown>) : {};
    const input = { id: d.requestId, action: d.action, args: kept, argsHash: d.argsHash, costUsd: d.costUsd, attribution: d.attribution, source: d.source, argVerdict: args.verdict };
    const decision = decideAction(this.sim.view, input, e.ts, this.crossSession(e));
    const wouldHave = outcomeOf(decision.verdict);
    wouldHave.costUsd = wouldHave.decision === "allow" ? d.costUsd : 0;
    const base = { seq: e.seq, ts: e.ts, requestId: d.requestId, kind: "action" as const, subject: d.action, happened };
    // The arguments only matter when the decision got as far as checking them.
    const beforeArgs = /^(session\.killed|session\.closed|actions\.deny|actions\.allow)$/.test(wouldHave.rule ?? "") && wouldHave.decision === "deny";
    this.apply(e, decision, { requestId: d.requestId, subject: d.action });
    if (!args.known && !beforeArgs) {
      this.unknown.push({ ...base, why: args.why ?? "the log did not keep the arguments", assumed: wouldHave });
      return;
    }
    if (!sameOutcome(happened, wouldHave)) this.differences.push({ ...base, wouldHave });
  }

  private settle(e: EventOf<"request.settled">) {
    const d = e.data;
    // The call never went out in the what-if, or was settled there already.
    if (!this.sim.view.context.reservations[d.requestId]) return;
    // An upstream failure the record attached to this settle counts toward loop detection again.
    const failed = this.settleErrors.get(d.requestId)?.data;
    const error = failed && { code: failed.code, message: failed.message, signature: failed.signature };
    const input = { requestId: d.requestId, costUsd: d.costUsd, outcome: d.outcome, usage: d.usage, ...(error && { error }) } as SettleInput;
    const decision = decideSettle(this.sim.view, input, e.ts);
    if (decision) this.apply(e, decision);
  }

  private cost(e: EventOf<"request.settled">) {
    const d = e.data;
    const id = d.requestId.replace(/^report:/, "");
    let decision: Decision;
    try {
      decision = decideReport(this.sim.view, { id, type: "cost", usd: d.costUsd, action: d.attribution.action, run: d.attribution.run }, e.ts);
    } catch {
      // A cost the bounds refuse today was accepted when it was reported: it stands.
      this.asRecorded(e);
      return;
    }
    this.apply(e, decision);
  }

  private decision(e: EventOf<"approval.granted"> | EventOf<"approval.denied">) {
    const mine = this.approvals.get(e.data.approvalId);
    if (!mine || !this.sim.view.context.approvals[mine]) return;
    // A timeout under other approval settings is the what-if's own timer's to decide.
    if (e.data.by === "timeout" && !this.sameApprovals) return;
    const d = decideApproval(this.sim.view, { approvalId: mine, decision: e.type === "approval.granted" ? "approve" : "deny", by: e.data.by, note: e.data.note }, e.ts);
    if (d) this.apply(e, d);
  }

  private end(e: EventOf<"session.killed"> | EventOf<"session.closed">) {
    const how = e.type === "session.killed" ? "kill" : "close";
    const id = e.id.replace(/^(kill|close):/, "");
    const replaced = e.type === "session.killed" ? e.data.replaced : undefined;
    this.apply(e, decideEnd(this.sim.view, { how, by: e.data.by, reason: e.data.reason ?? (how === "kill" ? "killed" : "closed"), id, ...(replaced && { replaced }) }));
  }

  report(mode: PolicyMode, rec: SessionSnapshot): WhatIfReport {
    const rc = rec.context;
    const recordedKill = this.events.find((e): e is EventOf<"session.killed"> => e.type === "session.killed");
    const trigger = recordedKill && (this.events.find((e) => e.id === recordedKill.id.split("#")[0]) ?? recordedKill);
    const sim = this.sim.snapshot;
    const unsettled = Object.values(sim.context.reservations).filter((r) => !this.settledCost.has(r.requestId));
    const unsettledNanos = unsettled.reduce((n, r) => n + r.estimateNanos, 0);
    return {
      mode,
      policy: this.policy,
      requests: this.requests,
      differences: this.differences,
      unknown: this.unknown,
      recorded: {
        state: stateOf(rec),
        spentUsd: toUsd(rc.spentNanos),
        killed: recordedKill && trigger ? { seq: trigger.seq, ts: trigger.ts, ...triggerOf(trigger), by: recordedKill.data.by, rule: recordedKill.data.rule, reason: recordedKill.data.reason } : null,
      },
      whatIf: { state: stateOf(sim), spentUsd: toUsd(sim.context.spentNanos), unsettledUsd: toUsd(unsettledNanos), killed: this.kill },
      savedUsd: toUsd(rc.spentNanos - sim.context.spentNanos),
      notes: [...this.notes],
    };
  }
}
