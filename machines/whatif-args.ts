import { canonicalJson } from "../lib/chain";
import type { ArgRule, Policy } from "../schema/policy";
import type { EventOf } from "../schema/events";
import { checkArgs, type ArgVerdict, type RuleHit } from "./rules";

// An action's argument rules, decided again from what the log kept. Unless the recorded
// policy had `keep_raw`, the log holds only the arguments its rules named; a rule of the
// other policy that reads anything else can be settled only where the recorded decision
// already tells its outcome (the same rule, whose verdict the record shows), else it is
// unknown and the what-if says so instead of guessing.

export interface ArgsAnswer {
  verdict: ArgVerdict;
  /** False: the verdict is an assumption (the recorded outcome), `why` says what is missing. */
  known: boolean;
  why?: string;
}

type Rules = NonNullable<Policy["actions"]["rules"]>;
type Scoped = { scope: string; name: string; rule: ArgRule };

function scopedRules(rules: Rules | undefined, action: string): Scoped[] {
  const out: Scoped[] = [];
  for (const scope of [action, "*"]) {
    const perArg = rules && Object.hasOwn(rules, scope) ? rules[scope] : undefined;
    for (const [name, rule] of Object.entries(perArg ?? {})) out.push({ scope, name, rule });
  }
  return out;
}

const fromRule = (hit: string | undefined, s: Scoped) => hit !== undefined && (hit === `actions.rules.${s.scope}.${s.name}` || hit.startsWith(`actions.rules.${s.scope}.${s.name}.`));

/** What the argument stage of the recorded decision was, as far as the record tells. */
type RecordedStage = { kind: "pass" } | { kind: "deny" | "review"; hit: RuleHit } | { kind: "not-reached" };

function recordedStage(e: EventOf<"action.checked">): RecordedStage {
  const d = e.data;
  const hit = { rule: d.rule ?? "", reason: d.reason ?? "" };
  // Loop detection decides after the arguments: a review by it means they passed; a kill by
  // it replaced whatever they said.
  if (d.rule?.startsWith("runaway.repeat")) return d.decision === "review" ? { kind: "pass" } : { kind: "not-reached" };
  if (d.decision === "review") return { kind: "review", hit };
  if (d.decision === "allow") return { kind: "pass" };
  if (d.rule?.startsWith("actions.rules.")) return { kind: "deny", hit };
  // Refused before the arguments were looked at: the session had ended, or the action was listed.
  if (d.rule === "session.killed" || d.rule === "session.closed" || d.rule === "actions.deny" || d.rule === "actions.allow") return { kind: "not-reached" };
  return { kind: "pass" };
}

function assumed(stage: RecordedStage): ArgVerdict {
  if (stage.kind === "deny") return { deny: stage.hit };
  if (stage.kind === "review") return { review: stage.hit };
  return {};
}

function keptArgs(e: EventOf<"action.checked">): Record<string, unknown> {
  const a = e.data.args;
  return a && typeof a === "object" && !Array.isArray(a) ? (a as Record<string, unknown>) : {};
}

/** The other policy's argument verdict for a recorded action, or the recorded one assumed when the log cannot tell. */
export function argsVerdict(recorded: Policy, other: Policy, e: EventOf<"action.checked">): ArgsAnswer {
  const action = e.data.action;
  const args = keptArgs(e);
  if (recorded.keep_raw) return { verdict: checkArgs(other, action, args), known: true };

  const kept = new Set(scopedRules(recorded.actions.rules, action).map((s) => s.name).filter((n) => n !== "*"));
  const before = new Map(scopedRules(recorded.actions.rules, action).map((s) => [`${s.scope}\u0000${s.name}`, canonicalJson(s.rule)]));
  const checkable: Scoped[] = [];
  const same: Scoped[] = [];
  const blind: Scoped[] = [];
  for (const s of scopedRules(other.actions.rules, action)) {
    if (s.name !== "*" && kept.has(s.name)) checkable.push(s);
    else if (before.get(`${s.scope}\u0000${s.name}`) === canonicalJson(s.rule)) same.push(s);
    else blind.push(s);
  }

  // The rules whose arguments the log kept decide exactly.
  const onlyCheckable: Policy = { ...other, actions: { ...other.actions, rules: rulesOf(checkable) } };
  const exact = checkArgs(onlyCheckable, action, args);
  if (!same.length && !blind.length) return { verdict: exact, known: true };

  const stage = recordedStage(e);
  if (exact.deny) return { verdict: exact, known: true };
  if (blind.length) {
    const b = blind[0];
    const why =
      b.name === "*"
        ? `the rule actions.rules.${b.scope}.* reads every argument, and the log kept only ${kept.size ? [...kept].join(", ") : "none"} (set keep_raw to keep them all)`
        : `the rule actions.rules.${b.scope}.${b.name} reads argument "${b.name}", which the log did not keep`;
    return { verdict: assumed(stage), known: false, why };
  }
  // Only rules unchanged from the recorded policy remain: their verdict is in the record.
  if (stage.kind === "pass") return { verdict: exact, known: true };
  if (stage.kind === "deny" && same.some((s) => fromRule(stage.hit.rule, s))) return { verdict: { deny: stage.hit }, known: true };
  // A review means no rule refused, so the unchanged rules did not either.
  if (stage.kind === "review") return { verdict: { review: exact.review ?? stage.hit }, known: true };
  const why =
    stage.kind === "deny"
      ? `the recorded refusal (${stage.hit.rule}) came before the rule actions.rules.${same[0].scope}.${same[0].name} was checked, and the log did not keep what it reads`
      : `the recorded action was refused before any argument rule ran, and the log did not keep what actions.rules.${same[0].scope}.${same[0].name} reads`;
  return { verdict: assumed(stage), known: false, why };
}

/** Null prototypes: action and argument names come from the log, and "__proto__" is a name too. */
function rulesOf(list: Scoped[]): Rules {
  const out: Rules = Object.create(null);
  for (const s of list) {
    const inner = Object.hasOwn(out, s.scope) ? out[s.scope] : (out[s.scope] = Object.create(null));
    inner[s.name] = s.rule;
  }
  return out;
}
