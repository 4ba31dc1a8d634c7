import { TokenMap } from "../party/auth";
import { parseYamlText, StrictPolicy, describeIssue, Policy } from "../schema/policy";

// What `npm start` checks before it starts anything: the variables the server would
// otherwise refuse on every request (GOVERNOR_TOKENS) or on every session open
// (GOVERNOR_DEFAULT_POLICY). Each problem is one line naming the variable.

export function configProblems(env: Record<string, string | undefined>): string[] {
  const problems: string[] = [];
  const tokens = env.GOVERNOR_TOKENS;
  if (tokens !== undefined && tokens.trim() !== "") {
    let value: unknown;
    try {
      value = JSON.parse(tokens);
    } catch (e) {
      // The parser's message can quote the text, and the text holds tokens: only where it broke.
      const at = /position \d+/.exec((e as Error).message)?.[0];
      problems.push(`GOVERNOR_TOKENS is not valid JSON${at ? ` (at ${at})` : ""}; expected {"<token>": {"tenant": "...", "role": "operator|agent|auditor"}}`);
    }
    if (value !== undefined) {
      const r = TokenMap.safeParse(value);
      if (!r.success) {
        // The union's own message says only "invalid input": name the entry of the shape the value has.
        const issue = r.error.issues[0] as { code?: string; errors?: Array<Array<{ path: PropertyKey[]; message: string }>> };
        const branch = Array.isArray(value) ? issue.errors?.[1] : issue.errors?.[0];
        const first = branch?.[0];
        // A map's keys are the tokens: an entry is named by its place, never by its token.
        const path = first ? [...first.path] : [];
        if (!Array.isArray(value) && path.length && value && typeof value === "object") path[0] = `entry ${Object.keys(value).indexOf(String(path[0])) + 1}`;
        if (first && /key in record/i.test(first.message)) first.message = "the token is shorter than 8 characters";
        const where = path.map(String).join(".");
        problems.push(`GOVERNOR_TOKENS does not map tokens (8+ characters) to {tenant, role}${where ? `: at ${where}: ${first!.message}` : first ? `: ${first.message}` : ""}; expected {"<token>": {"tenant": "...", "role": "operator|agent|auditor", "name"?: "..."}} or a list of {token, tenant, role}`);
      }
    }
  }
  const policy = env.GOVERNOR_DEFAULT_POLICY;
  if (policy !== undefined && policy.trim() !== "") {
    try {
      const r = StrictPolicy.safeParse(parseYamlText(policy));
      if (!r.success) problems.push(`GOVERNOR_DEFAULT_POLICY is not a valid policy: ${describeIssue(r.error, "", Policy)}`);
    } catch (e) {
      problems.push(`GOVERNOR_DEFAULT_POLICY is not valid YAML or JSON: ${(e as Error).message.replace(/^body is not valid YAML: /, "")}`);
    }
  }
  return problems;
}
