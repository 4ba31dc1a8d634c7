import type { z } from "zod";
import {
  MAX_FORBIDDEN,
  MAX_FORBIDDEN_TEXT,
  MAX_ID,
  MAX_PATTERNS,
  MAX_POLICY_KEY,
  MAX_POLICY_LIST,
  MAX_RATE_RULES,
  MAX_RULE_ACTIONS,
  MAX_RULE_ARGS,
  MAX_URL,
} from "../lib/limits";
import { MAX_SESSION_USD } from "../lib/money";
import { compilePattern } from "../lib/pattern";
import { findBadText } from "../lib/text";
import type { Policy } from "./policy";

// The bounds a policy must keep to be accepted at the edge. Each one limits the work a
// single request can make the actor do (a pattern, a forbidden list, a rate window) or the
// size of what the actor holds per session; each is far above what a real policy needs.

const MAX_NOTIFY = 16;
const MAX_RATE = 100_000; // calls per window: the actor holds one timestamp per counted call
const MAX_RUNAWAY_WINDOW = 1000;
const MAX_DURATION_MS = 366 * 86_400_000; // alarms and deadlines stay real dates
const MAX_OUTPUT_TOKENS = 10_000_000;
const MAX_STRING = 4096; // any other string in a policy
const MAX_MCP_SERVERS = 64;
const MAX_MCP_HEADERS = 32;

type Path = Array<string | number>;

export function checkPolicyLimits(policy: Policy, ctx: z.RefinementCtx): void {
  const issue = (path: Path, message: string) => ctx.addIssue({ code: "custom", message, path });

  const bad = findBadText(policy, MAX_STRING);
  if (bad) return issue(bad.path, bad.message);

  const b = policy.budget;
  for (const k of ["session_usd", "run_usd"] as const) {
    const v = b[k];
    if (v !== undefined && v > MAX_SESSION_USD) issue(["budget", k], `at most ${MAX_SESSION_USD} (the most one session may commit)`);
  }
  const perAction = Object.entries(b.action_usd ?? {});
  if (perAction.length > MAX_RULE_ACTIONS) issue(["budget", "action_usd"], `at most ${MAX_RULE_ACTIONS} actions`);
  for (const [name, v] of perAction) {
    if (name.length > MAX_POLICY_KEY) issue(["budget", "action_usd", name], `action names are at most ${MAX_POLICY_KEY} characters`);
    if (v > MAX_SESSION_USD) issue(["budget", "action_usd", name], `at most ${MAX_SESSION_USD}`);
  }
  if (b.default_max_tokens > MAX_OUTPUT_TOKENS) issue(["budget", "default_max_tokens"], `at most ${MAX_OUTPUT_TOKENS}`);
  if (b.reservation_ttl > MAX_DURATION_MS) issue(["budget", "reservation_ttl"], "at most 366 days");

  const l = policy.limits;
  if (l.max_duration !== undefined && l.max_duration > MAX_DURATION_MS) issue(["limits", "max_duration"], "at most 366 days");
  const rate = l.rate ?? [];
  if (rate.length > MAX_RATE_RULES) issue(["limits", "rate"], `at most ${MAX_RATE_RULES} rate rules`);
  rate.forEach((r, i) => {
    if (r.max > MAX_RATE) issue(["limits", "rate", i, "max"], `at most ${MAX_RATE} calls per window`);
    if (r.window > MAX_DURATION_MS) issue(["limits", "rate", i, "window"], "at most 366 days");
  });

  checkActions(policy.actions, issue);

  const kinds = Object.keys(policy.violations.thresholds);
  if (kinds.length > MAX_RULE_ACTIONS) issue(["violations", "thresholds"], `at most ${MAX_RULE_ACTIONS} kinds`);
  for (const k of kinds) if (k.length > MAX_POLICY_KEY) issue(["violations", "thresholds", k], `kinds are at most ${MAX_POLICY_KEY} characters`);

  if (policy.runaway.window > MAX_RUNAWAY_WINDOW) issue(["runaway", "window"], `at most ${MAX_RUNAWAY_WINDOW}`);
  if (policy.runaway.consecutive > MAX_RUNAWAY_WINDOW) issue(["runaway", "consecutive"], `at most ${MAX_RUNAWAY_WINDOW}`);
  if (!Number.isFinite(policy.runaway.growth_ratio)) issue(["runaway", "growth_ratio"], "must be a finite number");
  if (policy.approval.timeout > MAX_DURATION_MS) issue(["approval", "timeout"], "at most 366 days");
  // The actor holds the repeat window per session.
  const repeat = policy.runaway.repeat;
  for (const k of ["same_call", "same_error", "window"] as const) {
    const v = repeat?.[k];
    if (v !== undefined && v > MAX_RUNAWAY_WINDOW) issue(["runaway", "repeat", k], `at most ${MAX_RUNAWAY_WINDOW}`);
  }
  checkMcp(policy.mcp, issue);

  if (policy.notify.length > MAX_NOTIFY) issue(["notify"], `at most ${MAX_NOTIFY} targets`);
  policy.notify.forEach((t, i) => {
    const url = "slack" in t ? t.slack : t.webhook;
    if (url.length > MAX_URL) issue(["notify", i, "slack" in t ? "slack" : "webhook"], `at most ${MAX_URL} characters`);
  });
}

function checkMcp(mcp: Policy["mcp"], issue: (path: Path, message: string) => void) {
  const servers = Object.entries(mcp?.servers ?? {});
  if (servers.length > MAX_MCP_SERVERS) issue(["mcp", "servers"], `at most ${MAX_MCP_SERVERS} servers`);
  for (const [name, s] of servers) {
    const at: Path = ["mcp", "servers", name];
    if (s.url.length > MAX_URL) issue([...at, "url"], `at most ${MAX_URL} characters`);
    if (Object.keys(s.headers ?? {}).length > MAX_MCP_HEADERS) issue([...at, "headers"], `at most ${MAX_MCP_HEADERS} headers`);
    const costs = Object.entries(s.tool_costs ?? {});
    if (costs.length > MAX_RULE_ACTIONS) issue([...at, "tool_costs"], `at most ${MAX_RULE_ACTIONS} tools`);
    for (const [tool, usd] of costs) if (usd > MAX_SESSION_USD) issue([...at, "tool_costs", tool], `at most ${MAX_SESSION_USD}`);
    if (s.timeout > MAX_DURATION_MS) issue([...at, "timeout"], "at most 366 days");
  }
}

function checkActions(actions: Policy["actions"], issue: (path: Path, message: string) => void) {
  for (const list of ["allow", "deny"] as const) {
    const names = actions[list] ?? [];
    if (names.length > MAX_POLICY_LIST) issue(["actions", list], `at most ${MAX_POLICY_LIST} actions`);
    names.forEach((n, i) => {
      if (n.length > MAX_ID) issue(["actions", list, i], `action names are at most ${MAX_ID} characters`);
    });
  }
  const rules = Object.entries(actions.rules ?? {});
  if (rules.length > MAX_RULE_ACTIONS) issue(["actions", "rules"], `at most ${MAX_RULE_ACTIONS} actions`);
  let patterns = 0;
  for (const [action, perArg] of rules) {
    const at: Path = ["actions", "rules", action];
    if (action.length > MAX_POLICY_KEY) issue(at, `action names are at most ${MAX_POLICY_KEY} characters`);
    const args = Object.entries(perArg);
    if (args.length > MAX_RULE_ARGS) issue(at, `at most ${MAX_RULE_ARGS} argument rules per action`);
    for (const [arg, rule] of args) {
      const here: Path = [...at, arg];
      if (arg.length > MAX_POLICY_KEY) issue(here, `argument names are at most ${MAX_POLICY_KEY} characters`);
      if (rule.pattern !== undefined) {
        if (++patterns > MAX_PATTERNS) {
          issue([...here, "pattern"], `a policy holds at most ${MAX_PATTERNS} patterns`);
        } else {
          const compiled = compilePattern(rule.pattern);
          if (!compiled.ok) issue([...here, "pattern"], compiled.error);
        }
      }
      const forbidden = rule.forbidden ?? [];
      if (forbidden.length > MAX_FORBIDDEN) issue([...here, "forbidden"], `at most ${MAX_FORBIDDEN} entries`);
      forbidden.forEach((f, i) => {
        if (f.length > MAX_FORBIDDEN_TEXT) issue([...here, "forbidden", i], `at most ${MAX_FORBIDDEN_TEXT} characters`);
      });
    }
  }
}
