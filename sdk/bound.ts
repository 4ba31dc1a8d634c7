import type { SessionSummary } from "../schema/protocol";
import type { Governor } from "./client";
import type { ActionDecision, Attribution, BudgetCheck, FailMode, Fact, ReportResult } from "./types";

// One session as one agent run sees it: the client, the session id, and who is acting.
// Plain HTTP, no socket, so it costs nothing to create one per run or per request.

const POLICY_RETRY_MS = 30_000;

export interface CheckInput {
  /** Makes the check idempotent: a retry with the same id gets the first answer. */
  id?: string;
  args?: Record<string, unknown>;
  costUsd?: number;
  /** Seconds to hold the answer to a review until an operator decides (the server caps it at 120). */
  waitSeconds?: number;
  failMode?: FailMode;
  signal?: AbortSignal;
}

export class BoundSession {
  /** fail_mode of the session's policy, once a summary of it has been seen. */
  private policyFailMode?: FailMode;
  private policyAskedAt?: number;

  constructor(
    readonly governor: Governor,
    readonly id: string,
    readonly attribution: Attribution = {},
  ) {}

  /** A copy acting for another run (or agent, user): same session, same client. */
  with(attribution: Attribution): BoundSession {
    const b = new BoundSession(this.governor, this.id, { ...this.attribution, ...attribution });
    b.policyFailMode = this.policyFailMode;
    return b;
  }

  /** The headers that name this session on a proxied call. */
  headers(): Record<string, string> {
    const a = this.attribution;
    const h: Record<string, string> = { "X-Session-ID": this.id };
    if (a.agent) h["X-Agent-ID"] = a.agent;
    if (a.user) h["X-User-ID"] = a.user;
    if (a.run) h["X-Run-ID"] = a.run;
    if (a.task) h["X-Task-Context"] = a.task;
    return h;
  }

  /** `new OpenAI(session.openai())`: the official OpenAI SDK through the proxy. */
  openai() {
    return this.governor.proxyOptions("openai", this.headers());
  }

  /** `new Anthropic(session.anthropic())`: the official Anthropic SDK through the proxy. */
  anthropic() {
    return this.governor.proxyOptions("anthropic", this.headers());
  }

  /**
   * The fail mode that applies: the caller's own choice (per call, then the client's),
   * else the session policy's `fail_mode`, else closed.
   */
  failMode(override?: FailMode): FailMode {
    return override ?? this.governor.explicitFailMode ?? this.policyFailMode ?? "closed";
  }

  /** Records what a summary says about the policy; called with every summary this session fetches. */
  learn(summary: Pick<SessionSummary, "failMode">): void {
    if (summary.failMode) this.policyFailMode = summary.failMode;
  }

  /**
   * Fetches the policy's fail_mode once, while Governor can be reached; quietly does nothing
   * when it cannot, and tries again only after a while, so an outage does not double every call.
   */
  async ensurePolicyKnown(): Promise<void> {
    if (this.policyFailMode || this.governor.explicitFailMode) return;
    const now = Date.now();
    if (this.policyAskedAt !== undefined && now - this.policyAskedAt < POLICY_RETRY_MS) return;
    this.policyAskedAt = now;
    try {
      await this.get();
    } catch {
      /* unreachable or refused: the fail mode falls back to the client's */
    }
  }

  check(action: string, input: CheckInput = {}): Promise<ActionDecision> {
    const a = this.attribution;
    return this.governor.checkAction(
      this.id,
      { id: input.id, action, args: input.args ?? {}, costUsd: input.costUsd ?? 0, run: a.run, agent: a.agent, user: a.user },
      { waitSeconds: input.waitSeconds, failMode: this.failMode(input.failMode), signal: input.signal },
    );
  }

  report(fact: Fact): Promise<ReportResult> {
    return this.governor.report(this.id, fact);
  }

  async get(): Promise<SessionSummary> {
    const s = await this.governor.getSession(this.id);
    this.learn(s);
    return s;
  }

  budgetCheck(): Promise<BudgetCheck> {
    return this.governor.budgetCheck(this.id);
  }
}
