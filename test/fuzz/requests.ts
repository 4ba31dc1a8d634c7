import { TOKENS } from "../support/server";
import { json, num, type Rng, str } from "./prng";

// Generators of hostile HTTP requests and socket messages: every route, random and
// adversarial bodies, headers and paths. Valid-looking requests are mutated one step, so
// many get past the first check and exercise the next one.

export interface FuzzRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string | Uint8Array;
  /** The session the request names, when it names one we watch. */
  session?: string;
}

const ROUTES: Array<[string, string]> = [
  ["POST", "/v1/sessions"],
  ["GET", "/v1/sessions"],
  ["GET", "/v1/sessions/:id"],
  ["GET", "/v1/budget-check?session=:id"],
  ["POST", "/v1/sessions/:id/actions"],
  ["POST", "/v1/sessions/:id/actions?wait=:n"],
  ["POST", "/v1/sessions/:id/events"],
  ["POST", "/v1/sessions/:id/approvals/:aid"],
  ["GET", "/v1/sessions/:id/approvals/:aid"],
  ["POST", "/v1/sessions/:id/kill"],
  ["POST", "/v1/sessions/:id/close"],
  ["GET", "/v1/sessions/:id/log?after=:n&limit=:n"],
  ["GET", "/v1/sessions/:id/deliveries"],
  ["POST", "/v1/sessions/:id/what-if"],
  ["POST", "/v1/sessions/:id/what-if?mode=replace"],
  ["GET", "/v1/checkpoints/key"],
  ["GET", "/v1/policy"],
  ["PUT", "/v1/policy"],
  ["POST", "/v1/proxy/openai/v1/chat/completions"],
  ["POST", "/v1/proxy/anthropic/v1/messages"],
  ["POST", "/v1/proxy/openai/v1/embeddings"],
  ["POST", "/v1/proxy/anthropic/v1/messages/count_tokens"],
  ["POST", "/v1/proxy/openai/v1/images/generations"],
  ["GET", "/v1/proxy/openai/v1/models"],
  ["GET", "/v1/whoami"],
  ["GET", "/v1/learned-ratios"],
  ["GET", "/v1/learned-ratios/:id"],
  ["DELETE", "/v1/learned-ratios/:id/:id"],
  ["GET", "/healthz"],
  ["GET", "/parties/session/acme::id"],
  ["POST", "/parties/tenant/acme"],
  ["POST", "/party/main-room"],
  ["GET", "/"],
];

const METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "PROPFIND"];
const BAD_SEGMENTS = ["%E0%A4%A", "%", "%ZZ", "%C0%AF", "%ED%A0%80", "..", ".", "%2F", "%2e%2e", "a%00b", "x".repeat(300), "ünï", "%F0%9F%98%80", ""];

function token(r: Rng): string | undefined {
  const k = r.int(0, 9);
  if (k === 0) return undefined;
  if (k === 1) return str(r, 20).replace(/[^\x21-\x7e]/g, "");
  if (k === 2) return TOKENS.foreign;
  if (k === 3) return TOKENS.auditor;
  if (k <= 6) return TOKENS.agent;
  return TOKENS.operator;
}

function actionBody(r: Rng): Record<string, unknown> {
  return {
    ...(r.bool(0.3) && { id: str(r, 20) }),
    action: r.pick(["search", "refund", "delete_database", "sql", str(r, 12)]),
    ...(r.bool(0.7) && { args: { account: r.pick(["AB12345678", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!", str(r)]), amount: num(r), q: r.bool(0.2) ? `${"a".repeat(r.int(1, 40_000))}!` : json(r, 2) } }),
    ...(r.bool(0.6) && { costUsd: num(r) }),
    ...(r.bool(0.2) && { run: str(r, 10) }),
  };
}

function routeBody(r: Rng, path: string): unknown {
  if (path.includes("/actions")) return actionBody(r);
  if (path.includes("/events")) return r.bool() ? { type: "cost", usd: num(r), action: str(r, 8) } : { type: "violation", kind: r.pick(["pii_blocked", str(r, 8)]), detail: str(r) };
  if (path.includes("/approvals/")) return { decision: r.pick(["approve", "deny", str(r, 6)]), note: str(r) };
  if (path.endsWith("/kill") || path.endsWith("/close")) return { reason: str(r, 60) };
  if (path === "/v1/policy" || path.includes("/what-if")) return policyBody(r);
  if (path === "/v1/sessions") return { id: r.pick(["fz-new", str(r, 10)]), ...(r.bool(0.5) && { policy: policyBody(r) }), agent: str(r, 10), user: str(r, 10) };
  if (path.includes("/proxy/")) return { model: r.pick(["gpt-4o-mini", "claude-3-5-haiku-latest", str(r, 10)]), messages: [{ role: "user", content: str(r) }], max_tokens: num(r), n: num(r) };
  return json(r, 2);
}

function policyBody(r: Rng): unknown {
  return {
    ...(r.bool(0.5) && { budget: { session_usd: num(r), ...(r.bool(0.3) && { action_usd: { [str(r, 8)]: num(r) } }) } }),
    ...(r.bool(0.5) && { actions: { rules: { [r.pick(["refund", "*", str(r, 6)])]: { [r.pick(["account", "*", str(r, 6)])]: { pattern: r.pick(["^(a+)+$", "(?=x)", "[", "(a)\\1", ".{999}.{999}", str(r, 20)]), forbidden: [str(r, 10)] } } } } }),
    ...(r.bool(0.3) && { limits: { rate: [{ per: r.pick(["session", "user", "x"]), max: num(r), window: r.pick(["1m", "99999999d", str(r, 5)]) }] } }),
    ...(r.bool(0.3) && { notify: [{ webhook: r.pick(["https://example.com/h?token=x", str(r, 20)]) }] }),
    ...(r.bool(0.2) && { [str(r, 6)]: json(r, 2) }),
  };
}

/** One step away from valid: a field dropped, retyped, swapped for nasty text, or the whole body replaced. */
function mutate(r: Rng, value: unknown): unknown {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return r.bool(0.5) ? json(r, 2) : value;
  const o = { ...(value as Record<string, unknown>) };
  const keys = Object.keys(o);
  switch (r.int(0, 5)) {
    case 0:
      if (keys.length) delete o[r.pick(keys)];
      return o;
    case 1:
      if (keys.length) o[r.pick(keys)] = json(r, 2);
      return o;
    case 2:
      if (keys.length) o[r.pick(keys)] = str(r, 60);
      return o;
    case 3:
      o[str(r, 8)] = json(r, 1);
      return o;
    case 4:
      return json(r, 3);
    default:
      return o;
  }
}

function bodyBytes(r: Rng, value: unknown): string | Uint8Array {
  switch (r.int(0, 11)) {
    case 0:
      return new Uint8Array(Array.from({ length: r.int(1, 64) }, () => r.int(0, 255))); // not UTF-8, not JSON
    case 1:
      return JSON.stringify(value).slice(0, r.int(0, 20)); // truncated
    case 2:
      return `${"[".repeat(r.int(60, 5000))}`; // deep
    case 3:
      return "id: fz-yaml\nbudget: {session_usd: 1}\nnotify: [{webhook: \"https://x.example/\\ud800\"}]\n";
    case 4:
      return `{"reason": "half \\ud83d", "action": "a\\udc00", "id": "x"}`;
    case 5:
      return JSON.stringify({ pad: "x".repeat(r.int(1_000_000, 1_200_000)) }); // past the body limit
    default:
      return JSON.stringify(value) ?? "null";
  }
}

function encodeSegment(s: string): string {
  try {
    return encodeURIComponent(s);
  } catch {
    return "%ED%A0%80"; // what a lone surrogate would be, had it been encoded as UTF-8 anyway
  }
}

export function fuzzRequest(r: Rng, sessions: string[]): FuzzRequest {
  let [method, template] = r.pick(ROUTES);
  if (r.bool(0.1)) method = r.pick(METHODS);
  const session = r.bool(0.85) ? r.pick(sessions) : undefined;
  const id = session ?? r.pick([str(r, 12), r.pick(BAD_SEGMENTS)]);
  let path = template
    .replace(":id", r.bool(0.9) ? encodeSegment(id) : r.pick(BAD_SEGMENTS))
    .replace(":aid", r.pick(["apr_1", "apr_999", r.pick(BAD_SEGMENTS), "a:b"]))
    .replace(/:n/g, () => r.pick(["0", "1", "-1", "1e309", "NaN", "99999999999", "0.5", ""]));
  if (r.bool(0.1)) path += `/${r.pick(BAD_SEGMENTS)}`;
  if (r.bool(0.05)) path = `/${r.pick(BAD_SEGMENTS)}/${r.pick(BAD_SEGMENTS)}`;
  const headers: Record<string, string> = {};
  const t = token(r);
  if (t !== undefined) headers[r.bool(0.9) ? "authorization" : "x-api-key"] = r.bool(0.95) ? `Bearer ${t}` : t;
  const hasBody = method !== "GET" && method !== "HEAD";
  let body: string | Uint8Array | undefined;
  if (hasBody && r.bool(0.9)) {
    const base = routeBody(r, template.split("?")[0].replace(":id", "x"));
    body = bodyBytes(r, r.bool(0.5) ? mutate(r, base) : base);
    headers["content-type"] = r.pick(["application/json", "application/json", "application/yaml", "text/plain", "application/json; charset=latin1", ""]);
    if (r.bool(0.05)) headers["content-encoding"] = r.pick(["gzip", "br", "identity", "x-unknown"]);
  }
  // Attribution headers, within and past their limits (header values are byte strings).
  for (const h of ["x-agent-id", "x-user-id", "x-run-id", "x-action", "x-task-context", "idempotency-key", "x-session-id"]) {
    if (r.bool(0.15)) headers[h] = r.bool(0.3) ? "v".repeat(r.int(1000, 9000)) : r.pick(["bot", "ünï", "a b", "%E0", "x".repeat(r.int(0, 300))]);
  }
  if (template.includes("/proxy/") && r.bool(0.8) && session) headers["x-session-id"] = session;
  return { method, path, headers, body, session };
}

/** A socket message: valid ones mutated, raw garbage, binary frames, and oversized ones. */
export function fuzzMessage(r: Rng): string | Uint8Array {
  const k = r.int(0, 9);
  if (k === 0) return new Uint8Array(Array.from({ length: r.int(0, 40) }, () => r.int(0, 255)));
  if (k === 1) return str(r, 80);
  if (k === 2) return JSON.stringify({ type: "check", id: "big", action: "a", args: { pad: "x".repeat(r.int(300_000, 900_000)) } });
  const valid = r.pick([
    { type: "check", id: str(r, 10), ...actionBody(r) },
    { type: "report", report: r.bool() ? { type: "cost", usd: num(r) } : { type: "violation", kind: str(r, 10) } },
    { type: "approve", approvalId: str(r, 10), note: str(r) },
    { type: "deny", approvalId: str(r, 10) },
    { type: "subscribe", tail: r.bool(), after: num(r) },
    { type: str(r, 8) },
  ]);
  return JSON.stringify(r.bool(0.6) ? mutate(r, valid) : valid) ?? "null";
}
