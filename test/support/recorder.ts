import { canonicalJson, sha256Hex } from "../../lib/chain";
import { decideAction, decideApproval, decideEnd, decideReport, decideReserve, decideSettle, decideTimers } from "../../machines/decide";
import { summarize } from "../../machines/summary";
import type { PricedAt } from "../../machines/money";
import type { Attribution } from "../../schema/events";
import type { PolicyInput } from "../../schema/policy";
import { FoldedSession } from "./folded";

// Builds a session's log with the functions the actor uses, in the order it uses them:
// the actor minus storage and sockets. Prices follow the actor's worst case.

export const PRICE = { input: 2.5, output: 10 };

export class Recorder extends FoldedSession {
  private n = 0;

  constructor(policy: PolicyInput = {}, who: { tenant?: string; session?: string; signingKid?: string } = {}) {
    super(policy, { ...who, tenant: who.tenant ?? "acme", openId: "open:s" });
  }

  get summary() {
    return summarize(this.snapshot);
  }

  tick(ms = 1000) {
    this.now += ms;
    return this;
  }

  /**
   * A proxied call: reserve its worst case, then (when allowed) settle what it produced.
   * `rates`: priced at a price the policy declares (the actor's party/session/pricing.ts), the
   * gateway then reporting $0 for a model its table does not know; `unpriced`: no price at all.
   */
  call(promptTokens: number, outputTokens: number, opts: { maxTokens?: number; attribution?: Attribution; model?: string; rates?: PricedAt; unpriced?: boolean } = {}) {
    const requestId = `req-${++this.n}`;
    const policy = this.snapshot.context.policy!;
    const cap = opts.maxTokens ?? policy.budget.default_max_tokens;
    const price = opts.rates ?? PRICE;
    const estimateUsd = opts.unpriced ? 0 : (promptTokens * price.input + cap * price.output) / 1_000_000;
    const verdict = this.apply(
      decideReserve(
        this.view,
        {
          requestId,
          provider: "openai",
          model: opts.model ?? "gpt-4o",
          path: "v1/chat/completions",
          estimateUsd,
          priced: !opts.unpriced,
          promptTokens,
          maxOutputTokens: cap,
          attribution: opts.attribution ?? {},
          choices: 1,
          capFrom: opts.maxTokens === undefined ? "policy" : "call",
          outputCap: cap,
          feesUsd: 0,
          ...(!opts.unpriced && { outputPrice: price.output, inputPrice: price.input }),
          ...(opts.rates && { rates: opts.rates }),
        },
        this.now,
      ),
    );
    this.tick(200);
    if (verdict.decision === "allow") {
      const costUsd = opts.rates || opts.unpriced ? 0 : (promptTokens * PRICE.input + outputTokens * PRICE.output) / 1_000_000;
      const d = decideSettle(this.view, { requestId, costUsd, outcome: "completed", usage: { inputTokens: promptTokens, outputTokens, cachedInputTokens: 0, cacheWriteTokens: 0 } }, this.now);
      if (d) this.apply(d);
    }
    this.tick();
    return { ...verdict, requestId };
  }

  action(action: string, costUsd = 0, args: Record<string, unknown> = {}) {
    const id = `act-${++this.n}`;
    const v = this.apply(decideAction(this.view, { id, action, args, argsHash: sha256Hex(canonicalJson(args)), costUsd, attribution: {} }, this.now));
    this.tick();
    return { ...v, id };
  }

  cost(usd: number) {
    this.apply(decideReport(this.view, { id: `c-${++this.n}`, type: "cost", usd }, this.now));
    return this.tick();
  }

  /** A tool's failure reported as a fact (error.recorded). */
  error(action: string, code: string, message = "failed") {
    this.apply(decideReport(this.view, { id: `e-${++this.n}`, type: "error", action, code, message }, this.now));
    return this.tick();
  }

  violation(kind: string) {
    this.apply(decideReport(this.view, { id: `v-${++this.n}`, type: "violation", kind }, this.now));
    return this.tick();
  }

  approve(approvalId: string, decision: "approve" | "deny" = "approve") {
    const d = decideApproval(this.view, { approvalId, decision, by: "alice" }, this.now);
    if (!d) throw new Error(`no pending approval ${approvalId}`);
    this.apply(d);
    return this.tick();
  }

  timers() {
    const drafts = decideTimers(this.view, this.now);
    if (drafts.length) this.apply({ drafts, verdict: { decision: "allow" } });
    return this.tick();
  }

  end(how: "kill" | "close", reason = "done") {
    this.apply(decideEnd(this.view, { how, by: "alice", reason, id: `end-${++this.n}` }));
    return this.tick();
  }
}
