import { FORBIDDEN_STEPS_PER_UNIT, MAX_CHECK_WORK } from "../lib/limits";
import { compilePattern, testPattern } from "../lib/pattern";
import type { ArgRule, Policy, RateRule } from "../schema/policy";

// Pure checks of single policy rules. Each returns undefined when the rule passes, or
// what decided and why, so every refusal can name its rule.

export interface RuleHit {
  rule: string;
  reason: string;
}

export interface RateHit extends RuleHit {
  retryAfterMs: number;
}

/** The names the allow/deny lists let through; argument rules and limits are decided per call. */
export function listedActions(policy: Policy | null, names: string[]): string[] {
  const { allow, deny } = policy?.actions ?? {};
  return names.filter((n) => !deny?.includes(n) && (!allow || allow.includes(n)));
}

/** `hits` are timestamps of earlier counted calls; the call at `now` is the candidate. */
export function checkRate(rule: RateRule, hits: number[], now: number, label: string): RateHit | undefined {
  const inWindow = hits.filter((t) => t > now - rule.window);
  if (inWindow.length < rule.max) return undefined;
  const oldest = Math.min(...inWindow);
  return {
    rule: `limits.rate[per=${rule.per}]`,
    reason: `${label} made ${inWindow.length} calls in the last ${rule.window / 1000}s (max ${rule.max})`,
    retryAfterMs: Math.max(1, oldest + rule.window - now),
  };
}

/** True when the newest `consecutive` prompts each grew more than `ratio` over the one before. */
export function isRunaway(window: number[], runaway: Policy["runaway"]): boolean {
  if (runaway.on_detect === "off") return false;
  const n = runaway.consecutive;
  if (window.length < n + 1) return false;
  const tail = window.slice(-(n + 1));
  for (let i = 1; i < tail.length; i++) {
    if (!(tail[i - 1] > 0 && tail[i] > tail[i - 1] * runaway.growth_ratio)) return false;
  }
  return true;
}

function stringsIn(value: unknown, out: string[] = []): string[] {
  if (typeof value === "string") out.push(value);
  else if (Array.isArray(value)) for (const v of value) stringsIn(v, out);
  else if (value && typeof value === "object") for (const v of Object.values(value)) stringsIn(v, out);
  return out;
}

export interface ArgVerdict {
  deny?: RuleHit;
  review?: RuleHit;
}

/**
 * The work budget of one action's argument checks (see MAX_CHECK_WORK). Deterministic, so
 * a replay or what-if of the same action reaches the same verdict.
 */
class Meter {
  private left = MAX_CHECK_WORK;
  spend(units: number): boolean {
    this.left -= units;
    return this.left >= 0;
  }
}

function tooMuch(path: string, name: string): ArgVerdict {
  return { deny: { rule: path, reason: `argument "${name}" is too large to check against this rule (limit ${MAX_CHECK_WORK} units of work per action): send smaller arguments` } };
}

function checkOne(rule: ArgRule, path: string, name: string, value: unknown, present: boolean, meter: Meter): ArgVerdict {
  if (!present) return rule.required ? { deny: { rule: path, reason: `argument "${name}" is required` } } : {};
  const num = typeof value === "number" ? value : typeof value === "string" && value.trim() !== "" && Number.isFinite(Number(value)) ? Number(value) : undefined;
  if (rule.max !== undefined || rule.min !== undefined || rule.require_approval_above !== undefined) {
    if (num === undefined) return { deny: { rule: path, reason: `argument "${name}" must be a number` } };
    if (rule.max !== undefined && num > rule.max) return { deny: { rule: `${path}.max`, reason: `argument "${name}" is ${num}, above the maximum ${rule.max}` } };
    if (rule.min !== undefined && num < rule.min) return { deny: { rule: `${path}.min`, reason: `argument "${name}" is ${num}, below the minimum ${rule.min}` } };
  }
  if (rule.pattern !== undefined) {
    if (typeof value !== "string") return { deny: { rule: `${path}.pattern`, reason: `argument "${name}" does not match ${rule.pattern}` } };
    const compiled = compilePattern(rule.pattern);
    // A policy stored before patterns ran on RE2 may hold one RE2 refuses: fail closed.
    if (!compiled.ok) return { deny: { rule: `${path}.pattern`, reason: `pattern ${rule.pattern} cannot be checked in linear time (${compiled.error}): argument "${name}" refused` } };
    if (!meter.spend(compiled.program * (value.length + 1))) return tooMuch(`${path}.pattern`, name);
    if (!testPattern(compiled, value)) return { deny: { rule: `${path}.pattern`, reason: `argument "${name}" does not match ${rule.pattern}` } };
  }
  if (rule.forbidden?.length) {
    const texts = stringsIn(value);
    let size = 0;
    for (const t of texts) size += t.length + 1;
    if (!meter.spend((size * rule.forbidden.length) / FORBIDDEN_STEPS_PER_UNIT)) return tooMuch(`${path}.forbidden`, name);
    const lowered = texts.map((s) => s.toLowerCase());
    const found = rule.forbidden.find((f) => lowered.some((t) => t.includes(f.toLowerCase())));
    if (found) return { deny: { rule: `${path}.forbidden`, reason: `argument "${name}" contains forbidden text "${found}"` } };
  }
  if (rule.require_approval_above !== undefined && num !== undefined && num > rule.require_approval_above) {
    return { review: { rule: `${path}.require_approval_above`, reason: `argument "${name}" is ${num}, above ${rule.require_approval_above}: needs approval` } };
  }
  return {};
}

/** Applies `actions.rules[action]` and `actions.rules["*"]`; "*" as an argument name means every argument. */
export function checkArgs(policy: Policy, action: string, args: Record<string, unknown>): ArgVerdict {
  const rules = policy.actions.rules ?? {};
  const meter = new Meter();
  let review: RuleHit | undefined;
  for (const scope of [action, "*"]) {
    const perArg = Object.hasOwn(rules, scope) ? rules[scope] : undefined;
    if (!perArg) continue;
    for (const [name, rule] of Object.entries(perArg)) {
      const path = `actions.rules.${scope}.${name}`;
      const targets: Array<[string, unknown, boolean]> =
        name === "*" ? Object.entries(args).map(([k, v]) => [k, v, true]) : [[name, Object.hasOwn(args, name) ? args[name] : undefined, Object.hasOwn(args, name)]];
      for (const [argName, value, present] of targets) {
        const v = checkOne(rule, path, argName, value, present, meter);
        if (v.deny) return { deny: v.deny };
        review ??= v.review;
      }
    }
  }
  return review ? { review } : {};
}
