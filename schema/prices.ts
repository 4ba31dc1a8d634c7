// The price table: list prices in USD per 1M tokens (standard tier; no batch, flex,
// priority, regional-processing or promotional rates), the context windows and long-context
// tiers that bound a bill, and server-side tool fees. Compiled by hand from the providers'
// own pricing pages and model pages, never fetched at run time. Every group names the page
// it was read from and when; a model whose price could not be read from such a page is
// left out (a call to it is refused under a budget unless the policy declares its price,
// `pricing` in schema/policy.ts), never filled in from a guess.
//
// Pages read on 2026-11-23 (stored copies of):
//   OA-MODEL  developers.openai.com/api/docs/models/<model id>   (per-model "Pricing" block)
//   OA-CACHE  developers.openai.com/api/docs/guides/prompt-caching
//   AN-PRICE  platform.claude.com/docs/en/about-claude/pricing    ("Model pricing" table)
//   AN-MODEL  platform.claude.com/docs/en/models/<model>/overview ("Pricing", context window)
// Rows older than that were checked on 2025-10-15 against openai.com/api/pricing and
// anthropic.com/pricing, and are kept as they were.

export const PRICES_AS_OF = "2026-11-23";

export type Provider = "openai" | "anthropic";

export interface Price {
  input: number;
  output: number;
  /** OpenAI: cached prompt tokens. Anthropic: cache reads. Equal to `input` where there is no discount. */
  cachedInput: number;
  /** Cache writes: Anthropic's 5-minute TTL; OpenAI's from GPT-5.6 on (earlier OpenAI models write for free). */
  cacheWrite?: number;
  /** Anthropic cache writes with the 1-hour TTL; 2x input where not stated. */
  cacheWrite1h?: number;
}

const p = (input: number, output: number, cachedInput = input, cacheWrite?: number): Price =>
  cacheWrite === undefined ? { input, output, cachedInput } : { input, output, cachedInput, cacheWrite };

/** Anthropic's standard cache prices: 5m writes 1.25x input, 1h writes 2x input, reads 0.1x input. */
const a = (input: number, output: number): Price => p(input, output, input / 10, input * 1.25);
/** Anthropic rows that state every cache price: base input, 5m write, 1h write, cache hit, output. */
const an = (input: number, w5m: number, w1h: number, hit: number, output: number): Price => ({ input, output, cachedInput: hit, cacheWrite: w5m, cacheWrite1h: w1h });
/** GPT-5.6 and later: cache writes cost 1.25x the uncached input rate (OA-MODEL, OA-CACHE). */
const w = (input: number, output: number, cachedInput: number): Price => p(input, output, cachedInput, input * 1.25);

export const PRICES: Record<Provider, Record<string, Price>> = {
  openai: {
    // OA-MODEL gpt-5.6-sol: promotional $4 / $0.40 / $20 "at least until November 21, 2026",
    // stated as a 20% cut in input and 33% in output from the list price; the list price is
    // what a bound may assume once the promotion ends (the page does not say when it does).
    "gpt-5.6-sol": w(5, 30, 0.5),
    // OA-MODEL gpt-5.6-terra, gpt-5.6-luna (the July 2026 cuts are their list prices).
    "gpt-5.6-terra": w(2, 12, 0.2),
    "gpt-5.6-luna": w(0.2, 1.2, 0.02),
    // OA-MODEL gpt-5.4-pro: no cached-input price is listed, so cached tokens bill at input.
    "gpt-5.4-pro": p(30, 180),
    // OA-MODEL gpt-5.3-chat-latest (shown as retired; priced for calls that still reach it).
    "gpt-5.3-chat": p(1.75, 14, 0.175),
    // OA-MODEL gpt-5.1, gpt-5-codex, gpt-5-pro (no cached price listed), gpt-5-mini, gpt-5-nano.
    "gpt-5.1": p(1.25, 10, 0.125),
    "gpt-5-codex": p(1.25, 10, 0.125),
    "gpt-5-pro": p(15, 120),
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
    // OA-MODEL gpt-4 ($30 / $60) confirms the row.
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
    // AN-PRICE: base input, 5m write, 1h write, cache hit, output. Fable 5.1 and Mythos 5.1
    // read the cache at 0.025x input; Opus 5.5 and Sonnet 5.5 at 0.05x (AN-MODEL).
    "claude-fable-5-1": an(10, 12.5, 20, 0.25, 50),
    "claude-mythos-5-1": an(10, 12.5, 20, 0.25, 50),
    "claude-fable-5": an(10, 12.5, 20, 1, 50),
    "claude-mythos-5": an(10, 12.5, 20, 1, 50),
    "claude-opus-5-5": an(4, 5, 8, 0.2, 20),
    "claude-opus-5": an(5, 6.25, 10, 0.5, 25),
    "claude-opus-4-8": an(5, 6.25, 10, 0.5, 25),
    "claude-opus-4-7": an(5, 6.25, 10, 0.5, 25),
    "claude-opus-4-6": an(5, 6.25, 10, 0.5, 25),
    "claude-opus-4-5": an(5, 6.25, 10, 0.5, 25),
    // AN-MODEL sonnet-5-5 states a $0.20 cache read; third-party changelogs report a cut to
    // $0.10 from 2026-10-07 that no stored Anthropic page shows. The higher figure is kept:
    // cache reads never enter a reservation, and a settle at it can only charge more.
    "claude-sonnet-5-5": an(2, 2.5, 4, 0.2, 10),
    "claude-sonnet-5": an(2, 2.5, 4, 0.2, 10),
    "claude-sonnet-4-6": an(3, 3.75, 6, 0.3, 15),
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
export const ALIASES: Record<Provider, Record<string, string>> = {
  openai: {
    // OA-MODEL gpt-5.6-sol: "The gpt-5.6 alias routes requests to GPT-5.6 Sol".
    "gpt-5.6": "gpt-5.6-sol",
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

/**
 * Whole-request long-context prices: past `above` billed input tokens (cache reads and
 * writes included) every token of the request bills at `input` x input-side prices and
 * `output` x output. OA-MODEL gpt-5.6-* and gpt-5.4-pro: ">272K input tokens ... 2x input
 * and 1.5x output for the full request". AN-PRICE (2025-10-15): Sonnet 4 and 4.5 past 200K
 * with the 1M-context beta, $6 / $22.50. The 1M-context Claude models from Opus 4.6 and
 * Sonnet 4.6 on list one price for the whole window (AN-MODEL), so they have no tier.
 */
export interface LongTier {
  above: number;
  input: number;
  output: number;
}
const OPENAI_LONG: LongTier = { above: 272_000, input: 2, output: 1.5 };
const CLAUDE_LONG: LongTier = { above: 200_000, input: 2, output: 1.5 };
export const LONG: Record<Provider, Record<string, LongTier>> = {
  openai: { "gpt-5.6-sol": OPENAI_LONG, "gpt-5.6-terra": OPENAI_LONG, "gpt-5.6-luna": OPENAI_LONG, "gpt-5.4-pro": OPENAI_LONG },
  anthropic: { "claude-sonnet-4": CLAUDE_LONG, "claude-sonnet-4-5": CLAUDE_LONG },
};

/**
 * Context windows in tokens (OA-MODEL and AN-MODEL; rows from before 2026 as checked on
 * 2025-10-15): a longer prompt is refused with a 400 and not billed, so a bound may stop
 * there. A family not listed is capped only by the request's size (UNKNOWN_CONTEXT): a
 * window guessed too small would let the bound fall below the bill.
 */
export const CONTEXT: Record<Provider, Record<string, number>> = {
  openai: {
    "gpt-5.6-sol": 1_050_000,
    "gpt-5.6-terra": 1_050_000,
    "gpt-5.6-luna": 1_050_000,
    "gpt-5.4-pro": 1_050_000,
    "gpt-5.3-chat": 128_000,
    "gpt-5.1": 400_000,
    "gpt-5-codex": 400_000,
    "gpt-5-pro": 400_000,
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
  anthropic: {
    "claude-fable-5-1": 1_000_000,
    "claude-mythos-5-1": 1_000_000,
    "claude-fable-5": 1_000_000,
    "claude-mythos-5": 1_000_000,
    "claude-opus-5-5": 1_000_000,
    "claude-opus-5": 1_000_000,
    "claude-opus-4-6": 1_000_000,
    "claude-sonnet-5-5": 1_000_000,
    "claude-sonnet-5": 1_000_000,
    "claude-sonnet-4-6": 1_000_000,
    // 1M only with the `context-1m` beta header (contextWindow), at the LONG rates past 200K.
    "claude-sonnet-4-5": 200_000,
    "claude-sonnet-4": 200_000,
    "claude-haiku-4-5": 200_000,
    "claude-opus-4-1": 200_000,
    "claude-opus-4": 200_000,
    "claude-3-7-sonnet": 200_000,
    "claude-3-5-sonnet": 200_000,
    "claude-3-5-haiku": 200_000,
    "claude-3-opus": 200_000,
    "claude-3-haiku": 200_000,
  },
};
/** The proxy takes bodies up to 16 MiB, and a prompt holds no more tokens than its body has bytes. */
export const UNKNOWN_CONTEXT = 16 * 1024 * 1024;
/** Families that take 1M tokens with the `context-1m` beta header. */
export const CONTEXT_1M_BETA = new Set(["claude-sonnet-4", "claude-sonnet-4-5"]);

// Fees per use of a server-side tool, USD, on top of the tokens its results add to the input.
// Anthropic (docs.anthropic.com, web search tool): $10 per 1,000 searches; web fetch has no
// fee; code execution is billed by container time ($0.05 per hour, 5 minutes minimum, so
// $0.0042 per use is the fee of one short session). OpenAI (openai.com/api/pricing, built-in
// tools): web search $25 per 1,000 calls for the gpt-4o/4.1 search models and $10 for the
// others (the higher is taken), file search $2.50 per 1,000 calls, code interpreter $0.03
// per container. Checked on 2025-10-15; not re-read on PRICES_AS_OF.
export const TOOL_FEES: Record<Provider, Record<string, number>> = {
  anthropic: { web_search: 0.01, web_fetch: 0, code_execution: 0.0042 },
  openai: { web_search: 0.025, file_search: 0.0025, code_interpreter: 0.03 },
};
