import type * as Party from "partykit/server";
import "./hashing";
import { tryDecode } from "./uri";
import { BadRequestError, ForbiddenError, GovernorError, NotFoundError } from "../lib/errors";
import { ActionBody, ApprovalBody, KillBody, killRequest, OpenSessionBody, ReportBody, SessionId } from "../schema/api";
import { describeIssue, issuePath, mergePolicies, parsePolicy, parseYamlText, Policy, StrictPolicy } from "../schema/policy";
import { maskDeliveries, maskPolicySecrets } from "../schema/secrets";
import { parseSessionListQuery } from "../schema/session-list";
import { refuseDirectRequest } from "./admission";
import { authenticate, can, requirePermission, tokenFrom, type Principal } from "./auth";
import { assertDepth, assertWellFormed, attributionOf, closing, drainBody, errorResponse, json, parseJson, readText, validate } from "./http";
import { callSession, callTenant } from "./calls";
import { providerError, proxy } from "./proxy/forward";
import { callSessionCarrying } from "./proxy/settles";
import { endpointOf } from "./proxy/endpoints";
import { passThrough } from "./proxy/free";
import type { SessionOp } from "./ops";
import { wakeOnce } from "./wake";
import { mcpErrorResponse, mcpRoute } from "./mcp/route";
import { auditRoute } from "./audit-proxy";
import { erasureRoute } from "./erasure";
import { checkpointKey, whatIfRoute } from "./proof";
import { whoamiRoute } from "./whoami";
import { learnedRatiosRoute } from "./learned-ratios";

// The only HTTP door: authenticates the caller, checks tenant and role, validates the
// body, and hands a typed request to the actor that owns the session.

type Env = Record<string, unknown>;

function sessionIdFrom(raw: string | null | undefined, field: string): string {
  if (!raw) throw new BadRequestError(`${field} is required`, field);
  const r = SessionId.safeParse(raw);
  if (!r.success) throw new BadRequestError(`${field}: ${r.error.issues[0]?.message}`, field);
  return r.data;
}

async function bodyOf(req: Request): Promise<unknown> {
  const text = await readText(req);
  const type = req.headers.get("content-type") ?? "";
  if (/yaml/i.test(type)) {
    const value = parseYamlText(text);
    assertDepth(value);
    assertWellFormed(value);
    return value;
  }
  try {
    return parseJson(text);
  } catch (e) {
    // Only a body that is no JSON at all: JSON is YAML too, and its own problems keep their field.
    const notJson = e instanceof BadRequestError && e.message.startsWith("body is not valid JSON");
    throw notJson && looksLikeYaml(text) ? new BadRequestError(`${e.message}; for a YAML body send content-type: application/yaml`, "body") : e;
  }
}

/** A body that is no JSON but reads as a YAML mapping was meant as YAML. */
function looksLikeYaml(text: string): boolean {
  try {
    const v = parseYamlText(text);
    return v !== null && typeof v === "object" && !Array.isArray(v);
  } catch {
    return false;
  }
}

/** The tenant's default: set by an operator, else GOVERNOR_DEFAULT_POLICY, else none. */
async function tenantDefault(lobby: Party.FetchLobby, env: Env, tenant: string): Promise<{ policy: unknown; source: "tenant" | "env" | "none" }> {
  const res = await callTenant(lobby, tenant, { op: "get-default" });
  const stored = ((await res.json()) as { policy: unknown }).policy;
  if (stored !== null && stored !== undefined) return { policy: stored, source: "tenant" };
  if (typeof env.GOVERNOR_DEFAULT_POLICY === "string" && env.GOVERNOR_DEFAULT_POLICY.trim()) {
    try {
      return { policy: parseYamlText(env.GOVERNOR_DEFAULT_POLICY), source: "env" };
    } catch (e) {
      const why = e instanceof GovernorError ? ` (${e.message.replace(/^body is not valid YAML: /, "")})` : "";
      throw new GovernorError("conflict", 409, `GOVERNOR_DEFAULT_POLICY is not valid YAML or JSON${why}: fix the variable and restart, or set the tenant's default with PUT /v1/policy, which takes precedence`, { field: "GOVERNOR_DEFAULT_POLICY" });
    }
  }
  return { policy: null, source: "none" };
}

/**
 * Tenant default, overridden field by field by the session's own policy. A default stored
 * before today's rules (a lone surrogate, a pattern RE2 refuses) is not enforced half-way:
 * the open is refused naming it, until an operator sets the default again.
 */
async function effectivePolicy(lobby: Party.FetchLobby, env: Env, tenant: string, own: unknown) {
  const { policy: base, source } = await tenantDefault(lobby, env, tenant);
  if (base !== null && base !== undefined) {
    const r = StrictPolicy.safeParse(base);
    if (!r.success) {
      const problem = describeIssue(r.error, "", Policy);
      if (source === "env") throw new GovernorError("conflict", 409, `GOVERNOR_DEFAULT_POLICY does not pass validation (${problem}): fix the variable and restart, or set the tenant's default with PUT /v1/policy, which takes precedence`, { field: "GOVERNOR_DEFAULT_POLICY" });
      throw new GovernorError("conflict", 409, `the tenant's default policy no longer passes validation (${problem}): an operator must set it again (PUT /v1/policy)`, { field: issuePath(r.error, "default") });
    }
  }
  return parsePolicy(mergePolicies(base ?? {}, own ?? {}));
}

/** Operators set the secrets in a policy; everyone else sees them masked. */
function shownPolicy(p: Principal, policy: unknown): unknown {
  return can(p, "configure") ? policy : maskPolicySecrets(policy);
}

/** Path segments, percent-decoded; a malformed escape is the caller's mistake, not ours. */
function pathParts(pathname: string): string[] {
  return pathname
    .split("/")
    .filter(Boolean)
    .map((seg) => {
      const decoded = tryDecode(seg);
      if (decoded === undefined) throw new BadRequestError(`the path holds a malformed percent-encoding: "${seg.slice(0, 64)}"`, "path");
      return decoded;
    });
}

const methodNotAllowed = (method: string, allowed: string) =>
  new GovernorError("method_not_allowed", 405, `${method} is not allowed here: use ${allowed}`);

/**
 * PUT /v1/policy takes the policy itself, or `{policy}` as GET answers it (with its
 * `source` beside it, which is ignored): a policy has no `policy` field, so the two never mix up.
 */
function policyBody(raw: unknown): unknown {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw) || !("policy" in raw)) return raw;
  const { policy, source: _source, ...rest } = raw as Record<string, unknown>;
  const extra = Object.keys(rest);
  if (extra.length) throw new BadRequestError(`send either the policy itself or {"policy": {...}}, not both: ${extra.map((k) => JSON.stringify(k)).join(", ")} beside "policy"`, extra[0]);
  return policy;
}

/** A YAML or JSON body is either `{id, policy, ...}` or the policy itself with `id` beside it. */
function openBody(raw: unknown, query: URLSearchParams) {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw new BadRequestError("body must be an object", "body");
  const obj = { ...(raw as Record<string, unknown>) };
  if (!("id" in obj) && query.get("id")) obj.id = query.get("id");
  if (!("policy" in obj)) {
    const { id, agent, user, task, ...policy } = obj;
    return validate(OpenSessionBody, { id, agent, user, task, policy });
  }
  return validate(OpenSessionBody, obj);
}

async function route(req: Request, lobby: Party.FetchLobby, ctx: Party.ExecutionContext): Promise<Response | null> {
  const url = new URL(req.url);
  if (url.pathname === "/healthz") return json({ ok: true });
  if (!url.pathname.startsWith("/v1/") && url.pathname !== "/v1") return null;
  const parts = pathParts(url.pathname);
  if (parts[0] !== "v1") return null;
  const env = lobby.env as Env;
  const p = authenticate(tokenFrom(req), env.GOVERNOR_TOKENS as string | undefined);
  const method = req.method.toUpperCase();
  const [, resource, id, sub, subId] = parts;
  // Settles of this session's finished calls waiting in this isolate ride along (proxy/settles.ts).
  const toSession = (session: string, op: SessionOp) => callSessionCarrying(lobby, ctx, p, session, op);
  if (resource === "audit") return auditRoute(req, env, p, url, () => erasureRoute(req, lobby, p));
  if (resource === "whoami") return whoamiRoute(method, parts, p);
  if (resource === "learned-ratios") return learnedRatiosRoute(method, parts, lobby, p);

  if (resource === "proxy") {
    requirePermission(p, "proxy");
    const provider = id;
    if (provider !== "openai" && provider !== "anthropic") throw new NotFoundError(`unknown provider "${provider}": use openai or anthropic`);
    // The provider path is taken as sent (still encoded) and must be plain segments: a
    // decoded %2F or ".." must not walk the gateway's provider key to another path.
    const rest = url.pathname.split("/").filter(Boolean).slice(3);
    if (!rest.length || rest.some((s) => !/^[A-Za-z0-9._~-]+$/.test(s) || s === "." || s === "..")) {
      throw new BadRequestError("the provider path may only hold plain segments (letters, digits, '.', '_', '~', '-')", "path");
    }
    // Only endpoints whose cost the reservation bounds go upstream (proxy/endpoints.ts).
    const endpoint = endpointOf(provider, rest.join("/"));
    if (method !== "POST") throw methodNotAllowed(method, "POST");
    if (endpoint === "free") return passThrough(req, env, provider, rest.join("/"));
    return proxy(req, lobby, ctx, p, provider, rest.join("/"));
  }

  if (resource === "mcp") {
    return mcpRoute(req, id, parts.slice(3), { lobby, ctx, principal: p, tenantPolicy: async () => (await tenantDefault(lobby, env, p.tenant)).policy });
  }

  if (resource === "checkpoints") {
    // The public key is no tenant's secret: any valid token may fetch it to verify a log.
    if (id !== "key" || parts.length > 3) throw new NotFoundError(`no route ${method} ${url.pathname}`);
    if (method !== "GET") throw methodNotAllowed(method, "GET");
    requirePermission(p, "read");
    return checkpointKey(lobby);
  }

  if (resource === "budget-check") {
    if (method !== "GET") throw methodNotAllowed(method, "GET");
    requirePermission(p, "read");
    const session = sessionIdFrom(url.searchParams.get("session"), "session");
    const res = await toSession(session, { op: "get" });
    if (!res.ok) return res;
    const s = (await res.json()) as { state: string; spentUsd: number; reservedUsd: number; remainingUsd: number | null };
    const live = s.state !== "killed" && s.state !== "closed";
    return json({ allowed: live && (s.remainingUsd === null || s.remainingUsd > 0), state: s.state, spentUsd: s.spentUsd, reservedUsd: s.reservedUsd, remainingUsd: s.remainingUsd });
  }

  if (resource === "policy") {
    if (parts.length > 2) throw new NotFoundError(`no route ${method} ${url.pathname}`);
    if (method === "GET") {
      requirePermission(p, "read");
      const d = await tenantDefault(lobby, env, p.tenant);
      return json({ ...d, policy: shownPolicy(p, d.policy) });
    }
    if (method === "PUT" || method === "POST") {
      requirePermission(p, "configure");
      const raw = policyBody(await bodyOf(req));
      parsePolicy(raw);
      return callTenant(lobby, p.tenant, { op: "set-default", policy: raw });
    }
    throw methodNotAllowed(method, "GET or PUT");
  }

  if (resource !== "sessions") throw new NotFoundError(`no route ${method} ${url.pathname}`);

  if (id === undefined) {
    if (method === "GET") {
      requirePermission(p, "list");
      return callTenant(lobby, p.tenant, { op: "page", query: parseSessionListQuery(url.searchParams, Date.now()) });
    }
    if (method === "POST") {
      requirePermission(p, "open");
      const body = openBody(await bodyOf(req), url.searchParams);
      const own = body.policy && typeof body.policy === "object" && Object.keys(body.policy).length ? body.policy : undefined;
      // An agent must not lift the limits its operators set: its sessions get the tenant default.
      if (own !== undefined && !can(p, "configure")) throw new ForbiddenError(`role "${p.role}" may open sessions under the tenant's default policy, but not set a policy`);
      if (own !== undefined && "mcp" in (own as object)) throw new BadRequestError("policy.mcp: MCP servers are configured in the tenant's policy (PUT /v1/policy), not per session", "policy.mcp");
      // A session's log never holds MCP credentials: /v1/mcp reads the servers from the tenant's policy.
      const { mcp: _servers, ...policy } = await effectivePolicy(lobby, env, p.tenant, own);
      return callSession(lobby, p, body.id, { op: "open", id: body.id, policy, agent: body.agent, user: body.user, task: body.task });
    }
    throw methodNotAllowed(method, "GET or POST");
  }

  const session = sessionIdFrom(id, "session id");
  // Only approvals take a fourth segment; anything longer names no route.
  if (parts.length > (sub === "approvals" ? 5 : 4)) throw new NotFoundError(`no route ${method} ${url.pathname}`);
  const key = `${method} ${sub ?? ""}`;
  switch (key) {
    case "GET ":
      requirePermission(p, "read");
      return toSession(session, { op: "get" });
    case "GET log": {
      requirePermission(p, "export");
      const after = Number(url.searchParams.get("after") ?? "0");
      const limit = Number(url.searchParams.get("limit") ?? "1000");
      if (!Number.isInteger(after) || after < 0) throw new BadRequestError("after must be a non-negative integer", "after");
      if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new BadRequestError("limit must be an integer from 1 to 10000", "limit");
      return toSession(session, { op: "log", after, limit });
    }
    case "GET deliveries": {
      // Delivery records hold the webhook URLs (secrets of their own): not for agents.
      requirePermission(p, "list");
      const res = await toSession(session, { op: "deliveries" });
      if (!res.ok || can(p, "configure")) return res;
      return json(maskDeliveries(await res.json()));
    }
    case "POST actions": {
      requirePermission(p, "check");
      const body = validate(ActionBody, await bodyOf(req));
      const wait = Number(url.searchParams.get("wait") ?? "0");
      if (!Number.isFinite(wait) || wait < 0) throw new BadRequestError("wait must be a number of seconds", "wait");
      return toSession(session, { op: "action", body, attribution: attributionOf(req).attribution, waitMs: wait * 1000 });
    }
    case "POST events": {
      requirePermission(p, "report");
      return toSession(session, { op: "report", body: validate(ReportBody, await bodyOf(req)) });
    }
    case "GET approvals": {
      // Every argument of a pending action, as sent: for those who may read the log.
      requirePermission(p, "export");
      if (!subId || !/^[A-Za-z0-9._~:-]{1,256}$/.test(subId)) throw new BadRequestError("approval id: 1-256 letters, digits, '.', '_', '~', ':' or '-'", "approvalId");
      return callSession(lobby, p, session, { op: "held-args", approvalId: subId });
    }
    case "POST approvals": {
      requirePermission(p, "decide");
      if (!subId || !/^[A-Za-z0-9._~:-]{1,256}$/.test(subId)) throw new BadRequestError("approval id: 1-256 letters, digits, '.', '_', '~', ':' or '-'", "approvalId");
      const body = validate(ApprovalBody, await bodyOf(req));
      return toSession(session, { op: "approval", approvalId: subId, decision: body.decision, note: body.note });
    }
    case "POST kill": {
      requirePermission(p, "decide");
      return kill(req, p, session, toSession);
    }
    case "POST what-if":
      // A re-decided copy of the log: for those who may read the log (operators, auditors).
      requirePermission(p, "export");
      return whatIfRoute(lobby, p, session, await bodyOf(req), url.searchParams);
    case "POST close": {
      // Closing is the normal end, for whoever may open sessions; killing is an operator's.
      requirePermission(p, "open");
      const text = await readText(req);
      const body = text.trim() ? validate(KillBody, parseJson(text)) : {};
      return toSession(session, { op: "close", reason: body.reason ?? "closed" });
    }
  }
  if (["", "log", "deliveries", "actions", "events", "approvals", "kill", "close", "what-if"].includes(sub ?? "")) {
    throw methodNotAllowed(method, sub === undefined || sub === "log" || sub === "deliveries" ? "GET" : sub === "approvals" ? "GET or POST" : "POST");
  }
  throw new NotFoundError(`no route ${method} ${url.pathname}`);
}

/**
 * The kill switch answers to its caller's role and the session, never to its body: a body
 * too large, not JSON, or with a reason that is not well-formed text still kills, with the
 * reason replaced and the event and answer saying so.
 */
async function kill(req: Request, p: Principal, session: string, toSession: (session: string, op: SessionOp) => Promise<Response>): Promise<Response> {
  let text = "";
  let unreadable: string | undefined;
  try {
    text = await readText(req);
  } catch (e) {
    unreadable = e instanceof GovernorError ? e.message : "the request body could not be read";
    await drainBody(req);
  }
  const { reason, replaced } = unreadable ? { reason: "killed by an operator", replaced: unreadable } : killRequest(text);
  const res = await toSession(session, { op: "kill", reason, ...(replaced && { replaced }) });
  if (!res.ok || !replaced) return res;
  return json({ ...((await res.json()) as object), reasonReplaced: replaced });
}

export default class Gateway {
  constructor(readonly room: Party.Room) {}

  // The gateway is PartyKit's "main" party too, so /party/<id> would reach a room of it
  // that has no handlers (a 500 from PartyKit); nothing is served there.
  static onBeforeRequest = refuseDirectRequest;
  static onBeforeConnect = refuseDirectRequest;

  static async onFetch(req: Party.Request, lobby: Party.FetchLobby, ctx: Party.ExecutionContext): Promise<Response> {
    wakeOnce(lobby, ctx);
    const request = req as unknown as Request;
    let res: Response;
    try {
      res = (await route(request, lobby, ctx)) ?? json({ error: { code: "not_found", message: "not found" } }, 404);
    } catch (e) {
      // Proxy callers get refusals in their provider's shape, so their SDK raises its own error.
      const path = new URL(req.url).pathname;
      const provider = /^\/v1\/proxy\/(openai|anthropic)\//.exec(path)?.[1] as "openai" | "anthropic" | undefined;
      if (path.startsWith("/v1/mcp/")) res = mcpErrorResponse(e);
      else if (provider && e instanceof GovernorError) res = providerError(provider, e.status, e.code, e.message, { field: e.field, rule: e.rule, retryAfter: e.retryAfter });
      else res = errorResponse(e);
    }
    // A refusal made before the body was read (a bad token, an unknown route) leaves it
    // unread, and the runtime would then drop the keep-alive connection: read it first.
    // Past the drain limit the connection ends, and the answer says so.
    return (await drainBody(request)) ? res : closing(res);
  }
}


