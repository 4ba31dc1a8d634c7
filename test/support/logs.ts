import { decideAction, decideApproval, decideEnd, decideReport, decideReserve, decideSettle, type Decision } from "../../machines/decide";
import { appendDrafts, EMPTY_HEAD } from "../../machines/log";
import { initialSnapshot, stateOf, type SessionSnapshot } from "../../machines/session";
import { summarize } from "../../machines/summary";
import type { Attribution, GovernorEvent } from "../../schema/events";
import { parsePolicy } from "../../schema/policy";

// Session logs built by the functions the actor itself uses (policy engine, chain, fold),
// so a store test reads the same events a live Governor writes.

export class SessionLog {
  snapshot: SessionSnapshot = initialSnapshot();
  head = EMPTY_HEAD;
  readonly events: GovernorEvent[] = [];
  private n = 0;

  constructor(
    readonly tenant: string,
    readonly session: string,
    public now: number,
    opts: { user?: string; agent?: string; task?: string; policy?: unknown } = {},
  ) {
    const policy = parsePolicy(opts.policy ?? { budget: { session_usd: 1000 }, actions: { rules: { refund: { amount: { require_approval_above: 100 } } } } });
    this.apply({ drafts: [{ type: "session.opened", id: `open:${session}`, data: { tenant, session, policy, user: opts.user, agent: opts.agent, task: opts.task } }], verdict: { decision: "allow" } });
  }

  private view() {
    return { state: stateOf(this.snapshot), context: this.snapshot.context };
  }

  private apply(d: Decision | undefined, step = 1000) {
    if (!d) throw new Error("nothing to apply");
    this.now += step;
    const r = appendDrafts(this.snapshot, this.head, d.drafts, this.now);
    this.snapshot = r.snapshot;
    this.head = r.head;
    this.events.push(...r.events);
    return d.verdict;
  }

  action(name: string, costUsd: number, attribution: Attribution = {}, args: Record<string, unknown> = {}) {
    const id = `a${++this.n}`;
    return this.apply(decideAction(this.view(), { id, action: name, args, argsHash: "0".repeat(64), costUsd, attribution }, this.now));
  }

  /** A proxied call: reserve, then settle at `costUsd`. */
  llm(model: string, costUsd: number, attribution: Attribution = {}) {
    const requestId = `r${++this.n}`;
    const v = this.apply(decideReserve(this.view(), { requestId, provider: "openai", model, path: "chat/completions", estimateUsd: costUsd * 2, priced: true, promptTokens: 100, maxOutputTokens: 100, attribution }, this.now));
    if (v.decision === "allow") this.apply(decideSettle(this.view(), { requestId, costUsd, outcome: "completed", usage: { inputTokens: 100, outputTokens: 10, cachedInputTokens: 0, cacheWriteTokens: 0 } }, this.now));
    return v;
  }

  cost(usd: number) {
    return this.apply(decideReport(this.view(), { id: `c${++this.n}`, type: "cost", usd }, this.now));
  }

  approve(approvalId: string, decision: "approve" | "deny" = "approve") {
    return this.apply(decideApproval(this.view(), { approvalId, decision, by: "alice" }, this.now));
  }

  kill(reason = "test") {
    return this.apply(decideEnd(this.view(), { how: "kill", by: "alice", reason, id: `k${++this.n}` }));
  }

  get summary() {
    return summarize(this.snapshot);
  }

  /** The events as a client reads them: JSON text parsed back. */
  raw(): unknown[] {
    return this.events.map((e) => JSON.parse(JSON.stringify(e)));
  }
}
