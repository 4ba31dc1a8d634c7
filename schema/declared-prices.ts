import { z } from "zod";
import { LONG, type Price, type Provider } from "./prices";
import { ceilMilli, familyOf, modelKey, priceFor, scaled, type Rates } from "./pricing";

// Prices a policy declares (`pricing: { "openai/gpt-5.4-mini": { input: 0.75, output: 4.5 } }`,
// USD per 1M tokens), for a model the table in schema/prices.ts does not know, or at a rate
// the tenant knows better (a negotiated discount). A declared price takes precedence over
// the table, prices the reservation and the settle alike, and is recorded on the
// reservation, so a replay or a what-if prices the call the way the actor did.

/** Above every published per-token price (o1-pro output, $600), and low enough that no estimate leaves exact integer nano-dollars. */
export const MAX_DECLARED_PRICE = 1_000;
export const MAX_DECLARED_MODELS = 256;
const MAX_LONG_THRESHOLD = 10_000_000;

// milli() in schema/pricing.ts counts in thousandths of a dollar per 1M tokens (one
// nano-dollar per token); a finer price would round, and could round to less than declared.
const PerMTok = z
  .number()
  .finite()
  .nonnegative()
  .max(MAX_DECLARED_PRICE)
  .refine((v) => Math.abs(v * 1000 - Math.round(v * 1000)) < 1e-6, { message: "at most 3 decimal places (USD per 1M tokens; one nano-dollar per token is the finest price)" });

const Tier = {
  input: PerMTok,
  output: PerMTok,
  /** Cache reads / cached prompt tokens; `input` when absent (no discount assumed). */
  cached_input: PerMTok.optional(),
  /** Cache writes (Anthropic 5-minute TTL; OpenAI); 1.25x input when absent, the providers' write premium. */
  cache_write: PerMTok.optional(),
  /** Anthropic 1-hour cache writes; 2x input when absent. */
  cache_write_1h: PerMTok.optional(),
};

export const DeclaredPrice = z.strictObject({
  ...Tier,
  /**
   * What the whole request bills at past `above_tokens` input tokens. Absent: the long-context
   * multipliers of the table's row for the model, if it has one (schema/prices.ts LONG).
   */
  long_context: z.strictObject({ above_tokens: z.number().int().positive().max(MAX_LONG_THRESHOLD), ...Tier }).optional(),
});
export type DeclaredPrice = z.infer<typeof DeclaredPrice>;

/** `<provider>/<model id>`; model ids as the provider spells them (fine-tunes have colons). */
export const PRICING_KEY = /^(openai|anthropic)\/[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;

export const Pricing = z.record(z.string(), DeclaredPrice).superRefine((r, ctx) => {
  const keys = Object.keys(r);
  if (keys.length > MAX_DECLARED_MODELS) ctx.addIssue({ code: "custom", message: `at most ${MAX_DECLARED_MODELS} models`, path: [] });
  for (const key of keys) {
    if (!PRICING_KEY.test(key)) ctx.addIssue({ code: "custom", message: 'keys are "<provider>/<model>", provider openai or anthropic (e.g. "openai/gpt-5.4-mini")', path: [key] });
  }
});
export type Pricing = z.infer<typeof Pricing>;

/**
 * The declaration that prices this model: its own id (case-insensitive), or the id it is a
 * dated snapshot of (`openai/gpt-9` prices `gpt-9-2027-01-01`), the longest such id first.
 */
export function declaredPriceFor(pricing: Pricing | undefined, provider: Provider, model: string): { key: string; price: DeclaredPrice } | undefined {
  if (!pricing || typeof model !== "string") return undefined;
  const prefix = `${provider}/`;
  const ids = new Map<string, string>();
  for (const key of Object.keys(pricing)) if (key.toLowerCase().startsWith(prefix)) ids.set(modelKey(key.slice(prefix.length)), key);
  if (!ids.size) return undefined;
  const id = familyOf(provider, modelKey(model), [...ids.keys()].sort((x, y) => y.length - x.length));
  if (id === undefined) return undefined;
  const key = ids.get(id)!;
  return { key, price: pricing[key] };
}

function tier(t: { input: number; output: number; cached_input?: number; cache_write?: number; cache_write_1h?: number }): Price {
  return {
    input: t.input,
    output: t.output,
    cachedInput: t.cached_input ?? t.input,
    cacheWrite: t.cache_write ?? ceilMilli(t.input * 1.25),
    cacheWrite1h: t.cache_write_1h ?? ceilMilli(t.input * 2),
  };
}

/** The rates a declaration means, with the defaults above filled in. */
export function declaredRates(provider: Provider, model: string, d: DeclaredPrice): Rates {
  const base = tier(d);
  if (d.long_context) {
    const { above_tokens, ...t } = d.long_context;
    return { ...base, long: { above: above_tokens, ...tier(t) } };
  }
  const family = priceFor(provider, model)?.family;
  const table = family ? LONG[provider]?.[family] : undefined;
  return table ? { ...base, long: { above: table.above, ...scaled(base, table.input, table.output) } } : base;
}
