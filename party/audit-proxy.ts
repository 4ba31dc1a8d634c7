import { BadRequestError, GovernorError, NotFoundError } from "../lib/errors";
import { requirePermission, type Principal } from "./auth";
import { readText } from "./http";

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

export async function auditRoute(req: Request, env: Env, p: Principal, url: URL): Promise<Response> {
  const method = req.method.toUpperCase();
  const segments = url.pathname.split("/").filter(Boolean).slice(2);
  if (!segments.length || segments.some((s) => !/^[A-Za-z0-9._~-]+$/.test(s) || s === "." || s === "..")) {
    throw new NotFoundError(`no audit route ${url.pathname}`);
  }
  // Reading and exporting: operators and auditors. Erasing: operators.
  if (method === "GET") requirePermission(p, "export");
  else if (method === "POST" && segments.join("/") === "erasures") requirePermission(p, "configure");
  else throw new GovernorError("bad_request", 405, `the audit routes take GET (and POST /v1/audit/erasures), not ${method}`);

  const base = typeof env.GOVERNOR_AUDIT_URL === "string" ? env.GOVERNOR_AUDIT_URL.trim().replace(/\/+$/, "") : "";
  const secret = typeof env.GOVERNOR_AUDIT_SECRET === "string" ? env.GOVERNOR_AUDIT_SECRET : "";
  if (!base || !secret) {
    throw new GovernorError("audit_unavailable", 503, "the audit store is not configured here: set GOVERNOR_AUDIT_URL and GOVERNOR_AUDIT_SECRET (npm start does both)");
  }
  const body = method === "POST" ? await readText(req) : undefined;
  if (body !== undefined && body.length && !(req.headers.get("content-type") ?? "").includes("json")) {
    throw new BadRequestError("send the body as JSON (Content-Type: application/json)", "body");
  }
  let res: Response;
  try {
    res = await fetch(`${base}/v1/audit/${segments.join("/")}${url.search}`, {
      method,
      headers: {
        [HEADERS.secret]: secret,
        [HEADERS.tenant]: p.tenant,
        [HEADERS.role]: p.role,
        [HEADERS.name]: p.name,
        accept: req.headers.get("accept") ?? "*/*",
        ...(body !== undefined && { "content-type": "application/json" }),
      },
      body,
    });
  } catch {
    throw new GovernorError("audit_unavailable", 503, "the audit service cannot be reached; is it running (npm start runs it)?");
  }
  if (res.status === 401) {
    await res.body?.cancel();
    throw new GovernorError("audit_unavailable", 503, "the audit service refused this gateway: GOVERNOR_AUDIT_SECRET differs between them");
  }
  const headers = new Headers();
  for (const h of PASSED_BACK) {
    const v = res.headers.get(h);
    if (v) headers.set(h, v);
  }
  // Streamed through: an export of any size passes without being held here.
  return new Response(res.body, { status: res.status, headers });
}
