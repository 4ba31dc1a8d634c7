import { z } from "zod";

// List prices, USD per 1M tokens, as published on openai.com/api/pricing and
// anthropic.com/pricing (standard tier, no batch/flex/priority discounts). Compiled by
// hand, not fetched: bump PRICES_AS_OF whenever a row is checked against those pages.
export const PRICES_AS_OF = "2025-10-15";

export type Provider = "openai" | "anthropic";

export const PriceSchema = z.object({
  input: z.number().finite().nonnegative(),
  output: z.number().finite().nonnegative(),
  /** OpenAI: cached prompt tokens. Anthropic: cache reads. Equal to `input` where there is no discount. */
  cachedInput: z.number().finite().nonnegative(),
  /** Anthropic cache writes at the default 5-minute TTL (1h writes cost 2x input and are not modelled). */
  cacheWrite: z.number().finite().nonnegative().optional(),
});
export type Price = z.infer<typeof PriceSchema>;

/**
 * Token usage normalised across providers. Each token is in exactly one bucket, so cost is a
 * plain dot product:
 * - `inputTokens`: uncached, non-cache-write prompt tokens (billed at `input`). OpenAI's
 *   `prompt_tokens` / `input_tokens` INCLUDE cached tokens, so parsers subtract them; Anthropic's
 *   `input_tokens` already excludes cache reads and writes.
 * - `cachedInputTokens`: OpenAI `cached_tokens`, Anthropic `cache_read_input_tokens`.
 * - `cacheWriteTokens`: Anthropic `cache_creation_input_tokens` (always 0 for OpenAI).
 * - `outputTokens`: completion/output tokens, reasoning/thinking tokens included.
 */
export type Usage = {
  inputTokens: number;
  outputTokens: number;
  cachedInputTokens: number;
  cacheWriteTokens: number;
  /** Anthropic cache writes with the 1-hour TTL (billed at 2x input); NOT also counted in `cacheWriteTokens`. */
  cacheWrite1hTokens?: number;
  /** Server-side tool uses that carry a fee of their own, by tool (`web_search: 3`). */
  serverTools?: Record<string, number>;
};

const p = (input: number, output: number, cachedInput = input, cacheWrite?: number): Price =>
  cacheWrite === undefined ? { input, output, cachedInput } : { input, output, cachedInput, cacheWrite };

// Anthropic: cache write = 1.25x input, cache read = 0.1x input. Long-context (>200K input)
// premiums on Sonnet 4/4.5 are not modelled.
const a = (input: number, output: number): Price => p(input, output, input / 10, input * 1.25);

export const PRICES: Record<Provider, Record<string, Price>> = {
  openai: {
    "gpt-5": p(1.25, 10, 0.125),
    "gpt-5-chat": p(1.25, 10, 0.125),
    "gpt-5-mini": p(0.25, 2, 0.025),
    "gpt-5-nano": p(0.05, 0.4, 0.005),
    "gpt-4.1": p(2, 8, 0.5),
    "gpt-4.1-mini": p(0.4, 1.6, 0.1),
    "gpt-4.1-nano": p(0.1, 0.4, 0.025),
    "gpt-4o": p(2.5, 10, 1.25),
    // The first gpt-4o snapshot kept its launch price; the family row would undercharge it.
    "gpt-4o-2024-05-13": p(5, 15),
    "chatgpt-4o-latest": p(5, 15),
    "gpt-4o-mini": p(0.15, 0.6, 0.075),
    o1: p(15, 60, 7.5),
    "o1-mini": p(1.1, 4.4, 0.55),
    "o1-preview": p(15, 60, 7.5),
    "o1-pro": p(150, 600),
    o3: p(2, 8, 0.5),
    "o3-mini": p(1.1, 4.4, 0.55),
    "o3-pro": p(20, 80),
    "o4-mini": p(1.1, 4.4, 0.275),
    "gpt-4-turbo": p(10, 30),
    "gpt-4": p(30, 60),
    "gpt-4-32k": p(60, 120),
    "gpt-3.5-turbo": p(0.5, 1.5),
    // Older 3.5 snapshots are dearer than the family alias.
    "gpt-3.5-turbo-0301": p(1.5, 2),
    "gpt-3.5-turbo-0613": p(1.5, 2),
    "gpt-3.5-turbo-1106": p(1, 2),
    "gpt-3.5-turbo-16k": p(3, 4),
    "text-embedding-3-small": p(0.02, 0),
    "text-embedding-3-large": p(0.13, 0),
    "text-embedding-ada-002": p(0.1, 0),
  },
  anthropic: {
    "claude-opus-4-1": a(15, 75),
    "claude-opus-4": a(15, 75),
    "claude-sonnet-4-5": a(3, 15),
    "claude-sonnet-4": a(3, 15),
    "claude-haiku-4-5": a(1, 5),
    "claude-3-7-sonnet": a(3, 15),
    "claude-3-5-sonnet": a(3, 15),
    "claude-3-5-haiku": a(0.8, 4),
    "claude-3-opus": a(15, 75),
    "claude-3-haiku": p(0.25, 1.25, 0.03, 0.3),
  },
};

// Ids that are neither a family nor family + snapshot suffix, but bill as one.
const ALIASES: Record<Provider, Record<string, string>> = {
  openai: {
    "gpt-4-turbo-preview": "gpt-4-turbo",
    "gpt-4-1106-preview": "gpt-4-turbo",
    "gpt-4-0125-preview": "gpt-4-turbo",
    "gpt-4-vision-preview": "gpt-4-turbo",
  },
  anthropic: {
    "claude-opus-4-0": "claude-opus-4",
    "claude-sonnet-4-0": "claude-sonnet-4",
  },
};

// Only snapshot-shaped suffixes fall back to the family: "gpt-4o-audio-preview" or
// "o1-pro-x" must come out unknown, not silently priced as gpt-4o / o1.
const SNAPSHOT: Record<Provider, RegExp> = {
  openai: /^-(?:\d{4}-\d{2}-\d{2}|\d{4}|latest)$/,
  anthropic: /^-(?:\d{8}|latest)$/,
};

const FAMILIES: Record<Provider, string[]> = {
  openai: Object.keys(PRICES.openai).sort((x, y) => y.length - x.length),
  anthropic: Object.keys(PRICES.anthropic).sort((x, y) => y.length - x.length),
};

export function priceFor(provider: Provider, model: string): { family: string; price: Price } | undefined {
  const table = PRICES[provider];
  if (!table || typeof model !== "string") return undefined;
  const id = model.trim().toLowerCase();
  const hit = (family: string) => ({ family, price: table[family] });
  if (Object.hasOwn(table, id)) return hit(id);
  if (Object.hasOwn(ALIASES[provider], id)) return hit(ALIASES[provider][id]);
  // Longest family first, so gpt-4o-mini-2024-07-18 is gpt-4o-mini, not gpt-4o.
  for (const family of FAMILIES[provider]) {
    if (id.startsWith(family) && SNAPSHOT[provider].test(id.slice(family.length))) return hit(family);
  }
  return undefined;
}

// Prices are at most 3 decimals per 1M tokens, so tokens * round(price * 1000) is the exact cost
// in integer nano-dollars (the unit lib/money sums in); one division at the end means the same
// usage always yields the same float, whatever the order of the terms.
const milli = (usdPerMTok: number) => Math.round(usdPerMTok * 1000);
const count = (n: number) => (Number.isFinite(n) && n > 0 ? Math.floor(n) : 0);

export function costNanos(price: Price, usage: Usage): number {
  return (
    count(usage.inputTokens) * milli(price.input) +
    count(usage.cachedInputTokens) * milli(price.cachedInput) +
    count(usage.cacheWriteTokens) * milli(price.cacheWrite ?? price.input) +
    count(usage.cacheWrite1hTokens ?? 0) * milli(price.input * 2) +
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
//
// The reservation of a call must be >= anything the provider can bill for it. Besides the
// per-token prices above, that needs: how many input tokens a request can hold at most
// (the context window: a longer prompt is refused with a 400 and not billed), the prices
// that apply past a long-context threshold, and the fees of server-side tools.

// Context windows in tokens, from the providers' model pages (platform.openai.com/docs/models,
// docs.anthropic.com/en/docs/about-claude/models/overview), checked on PRICES_AS_OF.
const CONTEXT: Record<Provider, Record<string, number>> = {
  openai: {
    "gpt-5": 400_000,
    "gpt-5-chat": 128_000,
    "gpt-5-mini": 400_000,
    "gpt-5-nano": 400_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.1-mini": 1_047_576,
    "gpt-4.1-nano": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4o-2024-05-13": 128_000,
    "chatgpt-4o-latest": 128_000,
    "gpt-4o-mini": 128_000,
    o1: 200_000,
    "o1-mini": 128_000,
    "o1-preview": 128_000,
    "o1-pro": 200_000,
    o3: 200_000,
    "o3-mini": 200_000,
    "o3-pro": 200_000,
    "o4-mini": 200_000,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-4-32k": 32_768,
    "gpt-3.5-turbo": 16_385,
    "gpt-3.5-turbo-0301": 4_096,
    "gpt-3.5-turbo-0613": 4_096,
    "gpt-3.5-turbo-1106": 16_385,
    "gpt-3.5-turbo-16k": 16_385,
    // Embeddings take up to 2,048 inputs of 8,192 tokens each in one request.
    "text-embedding-3-small": 2048 * 8192,
    "text-embedding-3-large": 2048 * 8192,
    "text-embedding-ada-002": 2048 * 8192,
  },
  anthropic: {},
};
const CLAUDE_CONTEXT = 200_000;
// Sonnet 4 and 4.5 take 1M tokens with the `context-1m-2025-08-07` beta header; past 200K
// input tokens the whole request is billed at the long-context rates (anthropic.com/pricing:
// input $6, output $22.50 per MTok; cache reads and writes scale with input).
const LONG_CONTEXT_1M = new Set(["claude-sonnet-4", "claude-sonnet-4-5"]);
const LONG_CONTEXT_THRESHOLD = 200_000;

/** The most input tokens one request to this family can carry (and so be billed for). */
export function contextWindow(provider: Provider, family: string, betas = ""): number {
  if (provider === "anthropic") return LONG_CONTEXT_1M.has(family) && /context-1m/i.test(betas) ? 1_000_000 : CLAUDE_CONTEXT;
  return CONTEXT.openai[family] ?? 1_000_000;
}

/** The price that applies to a request with this many input tokens (long-context premiums included). */
export function priceAt(provider: Provider, family: string, price: Price, inputTokens: number): Price {
  if (provider === "anthropic" && LONG_CONTEXT_1M.has(family) && inputTokens > LONG_CONTEXT_THRESHOLD) {
    return { input: price.input * 2, output: price.output * 1.5, cachedInput: price.cachedInput * 2, cacheWrite: (price.cacheWrite ?? price.input) * 2 };
  }
  return price;
}

// Fees per use of a server-side tool, USD, on top of the tokens its results add to the input.
// Anthropic (docs.anthropic.com, web search tool): $10 per 1,000 searches; web fetch has no
// fee; code execution is billed by container time ($0.05 per hour, 5 minutes minimum, so
// $0.0042 per use is the fee of one short session). OpenAI (openai.com/api/pricing, built-in
// tools): web search $25 per 1,000 calls for the gpt-4o/4.1 search models and $10 for the
// others (the higher is taken), file search $2.50 per 1,000 calls, code interpreter $0.03
// per container.
export const TOOL_FEES: Record<Provider, Record<string, number>> = {
  anthropic: { web_search: 0.01, web_fetch: 0, code_execution: 0.0042 },
  openai: { web_search: 0.025, file_search: 0.0025, code_interpreter: 0.03 },
};

/** The fees of the server-side tool uses a usage reports. */
export function toolFeesNanos(provider: Provider, usage: Usage): number {
  let n = 0;
  for (const [tool, uses] of Object.entries(usage.serverTools ?? {})) n += count(uses) * Math.round((TOOL_FEES[provider][tool] ?? 0) * 1e9);
  return n;
}

/** What a call with this usage costs: tokens at the price that applies to its input, plus tool fees. */
export function callCostUsd(provider: Provider, family: string, price: Price, usage: Usage): number {
  return (costNanos(priceAt(provider, family, price, billedInputTokens(usage)), usage) + toolFeesNanos(provider, usage)) / 1_000_000_000;
}
