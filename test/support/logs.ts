import { decideAction, decideApproval, decideEnd, decideReport, decideReserve, decideSettle, type Decision } from "../../machines/decide";
import { appendDrafts, EMPTY_HEAD } from "../../machines/log";
import { initialSnapshot, stateOf, type SessionSnapshot } from "../../machines/session";
import { summarize } from "../../machines/summary";
import type { Attribution, GovernorEvent } from "../../schema/events";
import { parsePolicy } from "../../schema/policy";
import { randomBytes } from "node:crypto";
import { seal, toRanges, type Pii } from "../../lib/pii";

// Session logs built by the functions the actor itself uses (policy engine, chain, fold),
// so a store test reads the same events a live Governor writes.

export class SessionLog {
  snapshot: SessionSnapshot = initialSnapshot();
  head = EMPTY_HEAD;
  readonly events: GovernorEvent[] = [];
  /** The values beside each event (sealed logs: commitments inside, as the actor writes them now). */
  readonly pii = new Map<number, Pii>();
  private n = 0;
  private readonly sealed: boolean;

  constructor(
    readonly tenant: string,
    readonly session: string,
    public now: number,
    opts: { user?: string; agent?: string; task?: string; policy?: unknown; sealed?: boolean } = {},
  ) {
    this.sealed = opts.sealed ?? false;
    const policy = parsePolicy(opts.policy ?? { budget: { session_usd: 1000 }, actions: { rules: { refund: { amount: { require_approval_above: 100 } } } } });
    this.apply({ drafts: [{ type: "session.opened", id: `open:${session}`, data: { tenant, session, policy, user: opts.user, agent: opts.agent, task: opts.task } }], verdict: { decision: "allow" } });
  }

  private view() {
    return { state: stateOf(this.snapshot), context: this.snapshot.context };
  }

  private apply(d: Decision | undefined, step = 1000) {
    if (!d) throw new Error("nothing to apply");
    this.now += step;
    const r = appendDrafts(this.snapshot, this.head, d.drafts, this.now, this.sealed ? (type, data) => seal(type, data, () => randomBytes(16).toString("hex")) : undefined);
    this.snapshot = r.snapshot;
    this.head = r.head;
    this.events.push(...r.events);
    r.events.forEach((e, i) => r.pii[i] && this.pii.set(e.seq, r.pii[i]!));
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

  /** An erasure as the actor makes it: the values of `seqs` deleted, a subject.redacted appended. */
  erase(seqs: number[], subject = "hmac-sha256:test") {
    const fields = new Set<string>();
    for (const seq of seqs) {
      for (const p of Object.keys(this.pii.get(seq) ?? {})) if (!p.startsWith("/policy/")) fields.add(p);
      const rest = Object.fromEntries(Object.entries(this.pii.get(seq) ?? {}).filter(([p]) => p.startsWith("/policy/")));
      if (Object.keys(rest).length) this.pii.set(seq, rest);
      else this.pii.delete(seq);
    }
    this.apply({ drafts: [{ type: "subject.redacted", id: `erase:${++this.n}`, data: { subject, fields: [...fields].sort(), by: "alice", seqs: toRanges(seqs) } }], verdict: { decision: "allow" } });
  }

  /** The events as a client reads them: JSON text parsed back, each with its values beside it. */
  raw(): unknown[] {
    return this.events.map((e) => JSON.parse(JSON.stringify(this.pii.has(e.seq) ? { ...e, pii: this.pii.get(e.seq) } : e)));
  }
}
