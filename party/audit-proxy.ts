import { GovernorError, NotFoundError } from "../lib/errors";
import { requirePermission, type Principal } from "./auth";

// /v1/audit/* goes to the audit service (a Node process beside the actors, at
// GOVERNOR_AUDIT_URL). The gateway has authenticated the caller; the service learns the
// caller's tenant and role from headers it trusts only with the shared secret. The
// client's token stays here.

type Env = Record<string, unknown>;

// Mirrors the service's AUDIT_HEADERS (audit/service.ts); the gateway bundle must not
// import Node code.
const HEADERS = { secret: "x-governor-audit-secret", tenant: "x-governor-tenant", role: "x-governor-role", name: "x-governor-name" } as const;

// Answer headers worth passing back; hop-by-hop and server details stay behind.
const PASSED_BACK = ["content-type", "content-disposition", "cache-control"];

/** Where the audit service is, when this deployment has one. */
export function auditService(env: Env): { base: string; secret: string } | undefined {
  const base = typeof env.GOVERNOR_AUDIT_URL === "string" ? env.GOVERNOR_AUDIT_URL.trim().replace(/\/+$/, "") : "";
  const secret = typeof env.GOVERNOR_AUDIT_SECRET === "string" ? env.GOVERNOR_AUDIT_SECRET : "";
  return base && secret ? { base, secret } : undefined;
}

const UNCONFIGURED = "the audit store is not configured here: set GOVERNOR_AUDIT_URL and GOVERNOR_AUDIT_SECRET (npm start does both)";

/** A request to the audit service on behalf of `p`; a service that cannot be reached or refuses the secret is a 503. */
export async function auditFetch(env: Env, p: Principal, path: string, init: { method: string; body?: string; accept?: string; search?: string }): Promise<Response> {
  const service = auditService(env);
  if (!service) throw new GovernorError("audit_unavailable", 503, UNCONFIGURED);
  let res: Response;
  try {
    res = await fetch(`${service.base}/v1/audit/${path}${init.search ?? ""}`, {
      method: init.method,
      headers: {
        [HEADERS.secret]: service.secret,
        [HEADERS.tenant]: p.tenant,
        [HEADERS.role]: p.role,
        [HEADERS.name]: p.name,
        accept: init.accept ?? "*/*",
        ...(init.body !== undefined && { "content-type": "application/json" }),
      },
      body: init.body,
    });
  } catch {
    throw new GovernorError("audit_unavailable", 503, "the audit service cannot be reached; is it running (npm start runs it)?");
  }
  if (res.status === 401) {
    await res.body?.cancel();
    throw new GovernorError("audit_unavailable", 503, "the audit service refused this gateway: GOVERNOR_AUDIT_SECRET differs between them");
  }
  return res;
}

export async function auditRoute(req: Request, env: Env, p: Principal, url: URL, erase: () => Promise<Response>): Promise<Response> {
  const method = req.method.toUpperCase();
  const segments = url.pathname.split("/").filter(Boolean).slice(2);
  if (!segments.length || segments.some((s) => !/^[A-Za-z0-9._~-]+$/.test(s) || s === "." || s === "..")) {
    throw new NotFoundError(`no audit route ${url.pathname}`);
  }
  // Reading and exporting: operators and auditors. Erasing: operators, in the gateway
  // (it erases in the actors' logs first, then has the service record it).
  if (method === "POST" && segments.join("/") === "erasures") {
    requirePermission(p, "configure");
    return erase();
  }
  if (method === "GET") requirePermission(p, "export");
  else throw new GovernorError("bad_request", 405, `the audit routes take GET (and POST /v1/audit/erasures), not ${method}`);
  if (!auditService(env)) throw new GovernorError("audit_unavailable", 503, UNCONFIGURED);
  const res = await auditFetch(env, p, segments.join("/"), { method, accept: req.headers.get("accept") ?? "*/*", search: url.search });
  const headers = new Headers();
  for (const h of PASSED_BACK) {
    const v = res.headers.get(h);
    if (v) headers.set(h, v);
  }
  // Streamed through: an export of any size passes without being held here.
  return new Response(res.body, { status: res.status, headers });
}
