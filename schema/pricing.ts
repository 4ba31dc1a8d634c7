import { z } from "zod";
import { ALIASES, CONTEXT, CONTEXT_1M_BETA, LONG, PRICES, TOOL_FEES, UNKNOWN_CONTEXT, type Price, type Provider } from "./prices";

// Pricing arithmetic over the table in schema/prices.ts (and over prices a policy declares,
// schema/declared-prices.ts): which row a model id bills as, what a usage costs, and the
// rates a reservation must assume so that it is never below the bill.

export { PRICES, PRICES_AS_OF, TOOL_FEES, type Price, type Provider } from "./prices";

const Rate = z.number().finite().nonnegative();
export const PriceSchema = z.object({
  input: Rate,
  output: Rate,
  cachedInput: Rate,
  cacheWrite: Rate.optional(),
  cacheWrite1h: Rate.optional(),
});

/** A price and, where the provider bills long prompts dearer, the price of the whole request past `above` billed input tokens. */
export type Rates = Price & { long?: { above: number } & Price };
export const RatesSchema = PriceSchema.extend({ long: PriceSchema.extend({ above: z.number().int().positive() }).optional() });

/**
 * Token usage normalised across providers. Each token is in exactly one bucket, so cost is a
 * plain dot product:
 * - `inputTokens`: uncached, non-cache-write prompt tokens (billed at `input`). OpenAI's
 *   `prompt_tokens` / `input_tokens` INCLUDE cached tokens and cache writes, so parsers
 *   subtract them; Anthropic's `input_tokens` already excludes cache reads and writes.
 * - `cachedInputTokens`: OpenAI `cached_tokens`, Anthropic `cache_read_input_tokens`.
 * - `cacheWriteTokens`: Anthropic `cache_creation_input_tokens`, OpenAI `cache_write_tokens`.
 * - `outputTokens`: completion/output tokens, reasoning/thinking tokens included.
 */
export type Usage = {
  inputTokens: number;
  outputTokens: number;
  cachedInputTokens: number;
  cacheWriteTokens: number;
  /** Anthropic cache writes with the 1-hour TTL; NOT also counted in `cacheWriteTokens`. */
  cacheWrite1hTokens?: number;
  /** Server-side tool uses that carry a fee of their own, by tool (`web_search: 3`). */
  serverTools?: Record<string, number>;
};

// Only snapshot-shaped suffixes fall back to the family: "gpt-4o-audio-preview" or
// "o1-pro-x" must come out unknown, not silently priced as gpt-4o / o1.
export const SNAPSHOT: Record<Provider, RegExp> = {
  openai: /^-(?:\d{4}-\d{2}-\d{2}|\d{4}|latest)$/,
  anthropic: /^-(?:\d{8}|latest)$/,
};

const byLength = (ids: string[]) => ids.sort((x, y) => y.length - x.length);
const FAMILIES: Record<Provider, string[]> = {
  openai: byLength(Object.keys(PRICES.openai)),
  anthropic: byLength(Object.keys(PRICES.anthropic)),
};

/** The id a model name is looked up by: trimmed and lower-cased, as the providers match them. */
export const modelKey = (model: string) => model.trim().toLowerCase();

/** The entry of `ids` (longest first) that `id` is, or is a snapshot of. */
export function familyOf(provider: Provider, id: string, ids: readonly string[]): string | undefined {
  for (const family of ids) {
    if (id === family || (id.startsWith(family) && SNAPSHOT[provider].test(id.slice(family.length)))) return family;
  }
  return undefined;
}

export function priceFor(provider: Provider, model: string): { family: string; price: Price } | undefined {
  const table = PRICES[provider];
  if (!table || typeof model !== "string") return undefined;
  const id = modelKey(model);
  const hit = (family: string) => ({ family, price: table[family] });
  if (Object.hasOwn(table, id)) return hit(id);
  if (Object.hasOwn(ALIASES[provider], id)) return hit(ALIASES[provider][id]);
  // Longest family first, so gpt-4o-mini-2024-07-18 is gpt-4o-mini, not gpt-4o.
  const family = familyOf(provider, id, FAMILIES[provider]);
  return family ? hit(family) : undefined;
}

// Prices are at most 3 decimals per 1M tokens, so tokens * round(price * 1000) is the exact cost
// in integer nano-dollars (the unit lib/money sums in); one division at the end means the same
// usage always yields the same float, whatever the order of the terms.
export const milli = (usdPerMTok: number) => Math.round(usdPerMTok * 1000);
/** A derived price (a multiple of another) rounded up to what milli() can hold, so it never rounds to less. */
export const ceilMilli = (usdPerMTok: number) => Math.ceil(usdPerMTok * 1000 - 1e-6) / 1000;
const count = (n: number) => (Number.isFinite(n) && n > 0 ? Math.floor(n) : 0);

export const hourWrite = (price: Price) => price.cacheWrite1h ?? price.input * 2;

export function costNanos(price: Price, usage: Usage): number {
  return (
    count(usage.inputTokens) * milli(price.input) +
    count(usage.cachedInputTokens) * milli(price.cachedInput) +
    count(usage.cacheWriteTokens) * milli(price.cacheWrite ?? price.input) +
    count(usage.cacheWrite1hTokens ?? 0) * milli(hourWrite(price)) +
    count(usage.outputTokens) * milli(price.output)
  );
}

export function costUsd(price: Price, usage: Usage): number {
  return costNanos(price, usage) / 1_000_000_000;
}

/** Every input token the usage bills, whatever its bucket. */
export function billedInputTokens(u: Usage): number {
  return count(u.inputTokens) + count(u.cachedInputTokens) + count(u.cacheWriteTokens) + count(u.cacheWrite1hTokens ?? 0);
}

// ---------------------------------------------------------------- limits that bound a bill

/** The most input tokens one request to this family can carry (and so be billed for). */
export function contextWindow(provider: Provider, family: string, betas = ""): number {
  if (provider === "anthropic" && CONTEXT_1M_BETA.has(family) && /context-1m/i.test(betas)) return 1_000_000;
  return CONTEXT[provider]?.[family] ?? UNKNOWN_CONTEXT;
}

/** A price scaled by a long-context tier: input-side prices by `input`, output by `output`. */
export function scaled(price: Price, input: number, output: number): Price {
  const out: Price = { input: ceilMilli(price.input * input), output: ceilMilli(price.output * output), cachedInput: ceilMilli(price.cachedInput * input) };
  if (price.cacheWrite !== undefined) out.cacheWrite = ceilMilli(price.cacheWrite * input);
  if (price.cacheWrite1h !== undefined) out.cacheWrite1h = ceilMilli(price.cacheWrite1h * input);
  return out;
}

/** A table row with the long-context tier of its family, if it has one. */
export function ratesFor(provider: Provider, family: string, price: Price): Rates {
  const tier = LONG[provider]?.[family];
  return tier ? { ...price, long: { above: tier.above, ...scaled(price, tier.input, tier.output) } } : price;
}

/** The price that applies to a request with this many billed input tokens. */
export function tierAt(rates: Rates, inputTokens: number): Price {
  const { long, ...base } = rates;
  if (!long || inputTokens <= long.above) return base;
  const { above: _above, ...price } = long;
  return price;
}

/** The price that applies to a request with this many input tokens (long-context premiums included). */
export function priceAt(provider: Provider, family: string, price: Price, inputTokens: number): Price {
  return tierAt(ratesFor(provider, family, price), inputTokens);
}

/** The fees of the server-side tool uses a usage reports. */
export function toolFeesNanos(provider: Provider, usage: Usage): number {
  let n = 0;
  for (const [tool, uses] of Object.entries(usage.serverTools ?? {})) n += count(uses) * Math.round((TOOL_FEES[provider][tool] ?? 0) * 1e9);
  return n;
}

/** What a call with this usage costs at these rates: tokens at the tier its input reached, plus tool fees. */
export function ratesCostUsd(provider: Provider, rates: Rates, usage: Usage): number {
  return (costNanos(tierAt(rates, billedInputTokens(usage)), usage) + toolFeesNanos(provider, usage)) / 1_000_000_000;
}

/** What a call with this usage costs: tokens at the price that applies to its input, plus tool fees. */
export function callCostUsd(provider: Provider, family: string, price: Price, usage: Usage): number {
  return ratesCostUsd(provider, ratesFor(provider, family, price), usage);
}

// ---------------------------------------------------------------- what a reservation assumes

/** Whether, and for how long, a call may write to the prompt cache (Anthropic `cache_control`). */
export type CacheWrite = "none" | "5m" | "1h";

/**
 * The dearest rate any input token of the call can bill at. Anthropic writes only what a
 * `cache_control` marks (1.25x input for 5 minutes, 2x for an hour); OpenAI caches on its own,
 * so a model whose writes cost more than input (GPT-5.6 on) may bill any prompt at that rate.
 */
export function inputRate(provider: Provider, price: Price, cacheWrite: CacheWrite): number {
  if (cacheWrite === "1h") return Math.max(price.input, price.cacheWrite ?? 0, hourWrite(price));
  if (cacheWrite === "5m" || provider === "openai") return Math.max(price.input, price.cacheWrite ?? 0);
  return price.input;
}

export interface ReserveRates {
  /** USD per 1M tokens at the worst-case input rate, and per output token. */
  price: { input: number; output: number };
  /** The same past a long-context threshold of input tokens. */
  premium?: { above: number; input: number; output: number };
}

/** The rates a reservation uses; the long tier only where the call's context can reach it. */
export function reserveRates(provider: Provider, rates: Rates, cacheWrite: CacheWrite, context = UNKNOWN_CONTEXT): ReserveRates {
  const price = { input: inputRate(provider, rates, cacheWrite), output: rates.output };
  const long = rates.long;
  if (!long || context <= long.above) return { price };
  return { price, premium: { above: long.above, input: inputRate(provider, long, cacheWrite), output: long.output } };
}
