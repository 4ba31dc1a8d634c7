import { canonicalJson } from "../lib/chain";
import { toNanos, toUsd } from "../lib/money";
import { declaredPriceFor, declaredRates } from "../schema/declared-prices";
import type { EventOf } from "../schema/events";
import type { Policy } from "../schema/policy";
import { milli, priceFor, ratesFor, reserveRates } from "../schema/pricing";
import type { Verdict } from "./decide";
import type { PricedAt, ReserveInput } from "./money";

// A recorded proxied call, rebuilt as the policy engine's input. The reservation's estimate
// is what the actor computed; only `default_max_tokens` of the other policy can change it
// (for a call that named no output cap), and only the log's own figures are used to say by
// how much. Whatever the log lacks is named, so the what-if can call the decision unknown.

export type RecordedCall = EventOf<"request.reserved"> | EventOf<"request.denied">;

export interface CallInput {
  input: ReserveInput;
  /** Why the estimate, or the prompt size, is not known from the log. */
  missing: { estimate?: string; prompt?: string };
  /** What the what-if prices this call at, when that is not what the record did. */
  note?: string;
}

interface Priced {
  estimateNanos: number;
  maxOutputTokens: number;
  fit?: NonNullable<ReserveInput["fit"]>;
  /** False when the other policy leaves the call without a price. */
  priced?: boolean;
  rates?: PricedAt;
}

type RecordedData = RecordedCall["data"];

/** The output cap per choice under the other policy: the call's own, or the other policy's default when the call named none. */
function capUnder(other: Policy, d: RecordedData): number | undefined {
  if (!d.capFrom || d.choices === undefined || d.outputCap === undefined) return undefined;
  return d.capFrom === "policy" ? other.budget.default_max_tokens : d.outputCap;
}

/**
 * The rates the other policy prices the call at, when they are not the recorded ones: its own
 * declaration for the model, else (a declaration it drops) the built-in table's row, else none.
 * "same" when the call's price does not change.
 */
function otherRates(recorded: Policy, other: Policy, d: RecordedData): { rates?: PricedAt } | "same" {
  const provider = d.provider ?? "openai";
  const model = d.model ?? "";
  const before = declaredPriceFor(recorded.pricing, provider, model);
  const after = declaredPriceFor(other.pricing, provider, model);
  if (canonicalJson(before?.price ?? null) === canonicalJson(after?.price ?? null)) return "same";
  if (after) return { rates: { ...declaredRates(provider, model, after.price), source: "policy", key: after.key } };
  const table = priceFor(provider, model);
  return table ? { rates: { ...ratesFor(provider, table.family, table.price), source: "table" } } : {};
}

/** The call's worst case at other rates, from what the log records of it (prompt tokens, tool fees, cache writes, output cap). */
function pricedAt(other: Policy, d: RecordedData, to: { rates?: PricedAt }): Priced | string {
  const why = `the price of ${d.model ?? "this model"} changes under this policy`;
  if (d.feesUsd === undefined || d.promptTokens === undefined) return `${why}, and the log predates the facts a call is priced again from`;
  const cap = capUnder(other, d);
  if (cap === undefined) return `${why}, and the log does not say what output cap this call had`;
  const maxOutputTokens = cap * d.choices!;
  // A call the table could not price for what it holds (audio, an unpriced tool) stays unpriced whatever the model costs.
  if (!to.rates || d.unpricedReason) return { estimateNanos: 0, maxOutputTokens, priced: false };
  const { price, premium } = reserveRates(d.provider ?? "openai", to.rates, d.cacheWrite ?? "none");
  const rate = premium && d.promptTokens > premium.above ? premium : price;
  const fixedNanos = d.promptTokens * milli(rate.input) + toNanos(d.feesUsd);
  const perToken = milli(rate.output);
  return {
    estimateNanos: fixedNanos + maxOutputTokens * perToken,
    maxOutputTokens,
    fit: { fixedNanos, outputNanosPerToken: perToken, choices: d.choices!, cap },
    priced: true,
    rates: to.rates,
  };
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
  const cap = capUnder(other, d);
  if (cap !== undefined && d.outputPrice !== undefined) {
    const perToken = milli(d.outputPrice);
    const fixedNanos = Math.max(0, estimateNanos - maxOut * perToken);
    return { estimateNanos: fixedNanos + cap * d.choices! * perToken, maxOutputTokens: cap * d.choices!, fit: { fixedNanos, outputNanosPerToken: perToken, choices: d.choices!, cap } };
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
  const to = otherRates(recorded, other, d);
  if (d.estimateUsd === undefined) missing.estimate = "the log does not record this call's estimate";
  else {
    const r = to === "same" ? repriced(recorded, other, d) : pricedAt(other, d, to);
    if (typeof r === "string") missing.estimate = r;
    else priced = r;
  }
  // Logs written before `unpriced` was recorded: a call reserved at $0 had no price.
  const isPriced = priced.priced ?? (d.unpriced ? false : d.capFrom !== undefined || d.estimateUsd === undefined || d.estimateUsd > 0);
  // Settles are charged at the rates the call is priced at: the what-if's own where its price
  // changed, else the ones the record priced it at (a declared price).
  const rates = to === "same" ? d.rates : priced.rates;
  const name = `${d.provider ?? "openai"}/${d.model ?? "?"}`;
  const from = (r: PricedAt) => (r.source === "policy" ? `this policy's declared price (pricing."${r.key}")` : "the built-in price table, as this policy declares no price for it");
  const note = to === "same" ? undefined : to.rates ? `calls of ${name} are priced at ${from(to.rates)}, and so are their settles, from the recorded usage` : `calls of ${name} have no price under this policy`;
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
      ...(d.unpricedReason && { unpricedReason: d.unpricedReason }),
      ...(rates && { rates }),
    },
    missing,
    ...(note && { note }),
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
