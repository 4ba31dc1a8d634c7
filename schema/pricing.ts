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
    count(usage.outputTokens) * milli(price.output)
  );
}

export function costUsd(price: Price, usage: Usage): number {
  return costNanos(price, usage) / 1_000_000_000;
}
