import { toNanos, toUsd } from "../lib/money";
import type { EventOf } from "../schema/events";
import type { Policy } from "../schema/policy";
import type { Verdict } from "./decide";
import type { ReserveInput } from "./money";

// A recorded proxied call, rebuilt as the policy engine's input. The reservation's estimate
// is what the actor computed; only `default_max_tokens` of the other policy can change it
// (for a call that named no output cap), and only the log's own figures are used to say by
// how much. Whatever the log lacks is named, so the what-if can call the decision unknown.

export type RecordedCall = EventOf<"request.reserved"> | EventOf<"request.denied">;

export interface CallInput {
  input: ReserveInput;
  /** Why the estimate, or the prompt size, is not known from the log. */
  missing: { estimate?: string; prompt?: string };
}

interface Priced {
  estimateNanos: number;
  maxOutputTokens: number;
  fit?: NonNullable<ReserveInput["fit"]>;
}

/**
 * The call's worst case under the other policy, from the log's own figures: the recorded
 * estimate less its output part is what the prompt (and any tool fees) cost; the output
 * cap is the call's own, or the other policy's default_max_tokens when the call named none.
 */
function repriced(recorded: Policy, other: Policy, d: RecordedCall["data"]): Priced | string {
  const estimateNanos = toNanos(d.estimateUsd ?? 0);
  const maxOut = d.maxOutputTokens ?? 0;
  if (d.unpriced) return { estimateNanos: 0, maxOutputTokens: maxOut };
  if (d.capFrom && d.choices !== undefined && d.outputCap !== undefined && d.outputPrice !== undefined) {
    const perToken = Math.round(d.outputPrice * 1000);
    const fixedNanos = Math.max(0, estimateNanos - maxOut * perToken);
    const cap = d.capFrom === "policy" ? other.budget.default_max_tokens : d.outputCap;
    return { estimateNanos: fixedNanos + cap * d.choices * perToken, maxOutputTokens: cap * d.choices, fit: { fixedNanos, outputNanosPerToken: perToken, choices: d.choices, cap } };
  }
  // A log from before these figures were recorded: its estimate stands while nothing that shapes it changed.
  const b = recorded.budget;
  const o = other.budget;
  if (b.default_max_tokens !== o.default_max_tokens) return `default_max_tokens changes from ${b.default_max_tokens} to ${o.default_max_tokens}, and the log does not say whether this call named its own output cap`;
  if (b.fit_output !== o.fit_output || b.min_output_tokens !== o.min_output_tokens) return "budget.fit_output changes, and the log does not hold what lowering this call's output cap needs";
  return { estimateNanos, maxOutputTokens: maxOut };
}

export function callInput(recorded: Policy, other: Policy, e: RecordedCall): CallInput {
  const d = e.data;
  const missing: CallInput["missing"] = {};
  if (d.promptTokens === undefined && d.promptSize === undefined) missing.prompt = "the log does not record this call's prompt size (it predates refusals carrying it)";
  let priced: Priced = { estimateNanos: toNanos(d.estimateUsd ?? 0), maxOutputTokens: d.maxOutputTokens ?? 0 };
  if (d.estimateUsd === undefined) missing.estimate = "the log does not record this call's estimate";
  else {
    const r = repriced(recorded, other, d);
    if (typeof r === "string") missing.estimate = r;
    else priced = r;
  }
  // Logs written before `unpriced` was recorded: a call reserved at $0 had no price.
  const isPriced = d.unpriced ? false : d.capFrom !== undefined || d.estimateUsd === undefined || d.estimateUsd > 0;
  return {
    input: {
      requestId: d.requestId,
      provider: d.provider ?? "openai",
      model: d.model ?? "unknown",
      path: d.path ?? "",
      estimateUsd: toUsd(priced.estimateNanos),
      priced: isPriced,
      promptTokens: d.promptTokens ?? 0,
      ...(d.promptSize !== undefined && { promptSize: d.promptSize }),
      maxOutputTokens: priced.maxOutputTokens,
      promptHash: d.promptHash,
      attribution: d.attribution,
      // The log holds the figure the actor settled on; there is nothing left to count.
      countable: false,
      ...(priced.fit && { fit: priced.fit }),
      ...(d.toolCalls && { toolCalls: d.toolCalls }),
    },
    missing,
  };
}

const EARLY = /^(session\.killed|session\.closed|approval\.while_pending|limits\.max_duration|limits\.rate\[|unpriced_models)/;
const BUDGET = /^(budget\.|max_event_usd$|max_session_usd$)/;

/** Undefined when the verdict follows from what the log holds; else why it does not. */
export function unknownBecause(v: Verdict, missing: CallInput["missing"]): string | undefined {
  if (v.decision === "hold") return "the call would have waited for a pending approval, and the record cannot say how that wait would have ended";
  if (v.decision === "count") return "the call would have been counted again, and the log holds only the figure used";
  if (!missing.estimate && !missing.prompt) return undefined;
  const rule = v.rule ?? "";
  if (v.decision === "deny" && EARLY.test(rule)) return undefined;
  if (v.decision === "deny" && BUDGET.test(rule)) return missing.estimate;
  return missing.estimate ?? missing.prompt;
}
