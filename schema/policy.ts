import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { Duration } from "../lib/duration";
import { BadRequestError } from "../lib/errors";
import { checkPolicyLimits } from "./policy-limits";
import { McpPolicy } from "./mcp";
import { Pricing } from "./declared-prices";

// Strict objects everywhere: a typo in a policy ("sesion_usd") must be refused with its
// path, not silently ignored and leave the session unbudgeted.
const Usd = z.number().finite().nonnegative();
const Fraction = z.number().gt(0).lte(1);

export const ArgRule = z.strictObject({
  max: z.number().finite().optional(),
  min: z.number().finite().optional(),
  // RE2 syntax, checked (with every other limit) by StrictPolicy; any string here, so a log
  // written when patterns were JavaScript RegExps still replays.
  pattern: z.string().optional(),
  forbidden: z.array(z.string().min(1)).optional(),
  require_approval_above: z.number().finite().optional(),
  required: z.boolean().optional(),
});

export const RateRule = z.strictObject({
  per: z.enum(["session", "user", "agent", "run"]),
  max: z.number().int().positive(),
  window: Duration,
});

export const NotifyTarget = z.union([
  z.strictObject({ slack: z.url() }),
  z.strictObject({ webhook: z.url() }),
]);

/**
 * Loops by repetition: the same call (action and arguments) `same_call` times within the
 * last `window` actions, or the same upstream error `same_error` times in a row. Absent:
 * off. `on_detect` defaults to the section's `runaway.on_detect` (where `off` turns this
 * off too); each later detection in the session climbs one step (alert, review, kill)
 * unless `escalate` is false.
 */
export const RepeatRule = z
  .strictObject({
    same_call: z.number().int().min(2).optional(),
    same_error: z.number().int().min(2).optional(),
    window: z.number().int().positive().optional(),
    on_detect: z.enum(["alert", "review", "kill"]).optional(),
    escalate: z.boolean().default(true),
  })
  .refine((r) => r.same_call !== undefined || r.same_error !== undefined, { message: "set same_call, same_error or both", path: ["same_call"] })
  .refine((r) => r.window === undefined || r.same_call === undefined || r.window >= r.same_call, {
    message: "window must be at least same_call: the same call could never repeat that often within it",
    path: ["window"],
  });

export const Policy = z.strictObject({
  version: z.literal(1).default(1),
  budget: z
    .strictObject({
      session_usd: Usd.optional(),
      run_usd: Usd.optional(),
      action_usd: z.record(z.string(), Usd).optional(),
      alert_at: Fraction.default(0.8),
      on_exceed: z.enum(["deny", "kill"]).default("deny"),
      // Worst-case output when a call names no max_tokens: the reservation must be finite.
      default_max_tokens: z.number().int().positive().default(4096),
      // A reservation whose settle never arrives is charged at its estimate after this long.
      reservation_ttl: Duration.default(600_000),
      // A call whose worst case does not fit but whose prompt does goes out with its output
      // cap lowered to what the budget leaves (never below min_output_tokens), instead of a 402.
      fit_output: z.boolean().default(false),
      min_output_tokens: z.number().int().positive().default(256),
    })
    .default({ alert_at: 0.8, on_exceed: "deny", default_max_tokens: 4096, reservation_ttl: 600_000, fit_output: false, min_output_tokens: 256 }),
  limits: z
    .strictObject({
      max_actions: z.number().int().nonnegative().optional(),
      max_duration: Duration.optional(),
      rate: z.array(RateRule).optional(),
    })
    .default({}),
  actions: z
    .strictObject({
      allow: z.array(z.string().min(1)).optional(),
      deny: z.array(z.string().min(1)).optional(),
      rules: z.record(z.string(), z.record(z.string(), ArgRule)).optional(),
    })
    .default({}),
  violations: z
    .strictObject({
      thresholds: z.record(z.string(), z.number().int().positive()).default({}),
      on_threshold: z.enum(["kill", "alert"]).default("kill"),
    })
    .default({ thresholds: {}, on_threshold: "kill" }),
  runaway: z
    .strictObject({
      growth_ratio: z.number().gt(1).default(1.4),
      consecutive: z.number().int().positive().default(3),
      window: z.number().int().positive().default(5),
      on_detect: z.enum(["alert", "kill", "off"]).default("alert"),
      repeat: RepeatRule.optional(),
    })
    .default({ growth_ratio: 1.4, consecutive: 3, window: 5, on_detect: "alert" }),
  approval: z
    .strictObject({
      timeout: Duration.default(300_000),
      on_timeout: z.enum(["deny", "allow"]).default("deny"),
      // While an approval is pending, proxied LLM calls are refused (409) or held.
      while_pending: z.enum(["refuse", "hold"]).default("refuse"),
    })
    .default({ timeout: 300_000, on_timeout: "deny", while_pending: "refuse" }),
  fail_mode: z.enum(["closed", "open"]).default("closed"),
  unpriced_models: z.enum(["deny", "allow"]).default("deny"),
  // Prices by "<provider>/<model>", USD per 1M tokens: they take precedence over the built-in
  // table (schema/prices.ts), and price models it does not know (schema/declared-prices.ts).
  pricing: Pricing.optional(),
  notify: z.array(NotifyTarget).default([]),
  // Upstream MCP servers: read from the tenant's policy by /v1/mcp/<server>; never stored in a session.
  mcp: McpPolicy.optional(),
  // Prompts and arguments are kept as hashes unless the policy asks for raw text.
  keep_raw: z.boolean().default(false),
});

/**
 * The policy as the edge takes it: the shape above, plus well-formed text, RE2 patterns and
 * bounds on every list, count and amount (schema/policy-limits.ts). `Policy` alone parses
 * what is stored, which an older version may have written under looser rules.
 */
export const StrictPolicy = Policy.superRefine(checkPolicyLimits);

export type Policy = z.infer<typeof Policy>;
export type PolicyInput = z.input<typeof Policy>;
export type ArgRule = z.infer<typeof ArgRule>;
export type RateRule = z.infer<typeof RateRule>;
export type RepeatRule = z.infer<typeof RepeatRule>;
export type NotifyTarget = z.infer<typeof NotifyTarget>;

/** "budget.session_usd" style path of the first issue, for 400 answers. */
export function issuePath(error: z.ZodError, prefix = ""): string {
  const issue = error.issues[0];
  const path = issue?.path.map(String).join(".") ?? "";
  return [prefix, path].filter(Boolean).join(".") || prefix || "(root)";
}

/** `schema`: what was parsed, so an unknown field can be named with the valid ones. */
export function describeIssue(error: z.ZodError, prefix = "", schema?: z.ZodType): string {
  const issue = error.issues[0];
  if (issue?.code === "unrecognized_keys") {
    // A typo is named with the fields that would have been taken there.
    const valid = schema && fieldsAt(schema, issue.path);
    const unknown = issue.keys.map((k) => JSON.stringify(k)).join(", ");
    return `${issuePath(error, prefix)}: unknown field${issue.keys.length > 1 ? "s" : ""} ${unknown}${valid ? `; valid fields: ${valid.join(", ")}` : ""}`;
  }
  return `${issuePath(error, prefix)}: ${issue?.message ?? "invalid"}`;
}

/** The field names of the object schema at `path` inside `schema`, when the path leads to one. */
function fieldsAt(schema: z.ZodType, path: readonly PropertyKey[]): string[] | undefined {
  let at: unknown = schema;
  let i = 0;
  for (let guard = 0; guard < 64 && at; guard++) {
    const def = (at as { _zod?: { def?: Record<string, unknown> } })._zod?.def;
    if (!def) return undefined;
    if (def.innerType) at = def.innerType;
    else if (def.type === "pipe") at = def.in;
    else if (def.type === "array" && i < path.length) (at = def.element), i++;
    else if (def.type === "object") {
      const shape = def.shape as Record<string, unknown>;
      if (i === path.length) return Object.keys(shape);
      at = shape[String(path[i++])];
    } else return undefined;
  }
  return undefined;
}

export function parsePolicy(input: unknown, prefix = "policy"): Policy {
  const r = StrictPolicy.safeParse(input ?? {});
  if (!r.success) throw new BadRequestError(describeIssue(r.error, prefix, Policy), issuePath(r.error, prefix));
  return r.data;
}

export function parseYamlText(text: string): unknown {
  try {
    return parseYaml(text);
  } catch (e) {
    throw new BadRequestError(`body is not valid YAML: ${yamlProblem(e as Error & { linePos?: Array<{ line: number }> }, text)}`, "body");
  }
}

/**
 * The parser's first line ends "at line 4, column 3:" and shows the place on the lines
 * after it; on one line, the offending line is quoted instead (JSON-escaped, so a tab or a
 * stray space at its start shows).
 */
function yamlProblem(e: Error & { linePos?: Array<{ line: number }> }, text: string): string {
  const first = e.message.split("\n")[0].replace(/:\s*$/, "");
  const line = e.linePos?.[0]?.line;
  const shown = line === undefined ? undefined : text.split(/\r?\n/)[line - 1];
  if (shown === undefined || shown.trim() === "") return first;
  return `${first}, which reads ${JSON.stringify(shown.length > 120 ? `${shown.slice(0, 120)}...` : shown)}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The tenant's default overridden field by field by the session's own policy; lists are replaced whole. */
export function mergePolicies(base: unknown, override: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(override)) return override === undefined ? base : override;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(override)) out[k] = k in base ? mergePolicies(base[k], v) : v;
  return out;
}
