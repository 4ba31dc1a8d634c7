import { sha256 } from "@noble/hashes/sha2.js";
import { utf8ToBytes } from "@noble/hashes/utils.js";
import { z } from "zod";
import { UnauthorizedError, GovernorError, ForbiddenError } from "../lib/errors";
import { Role, type Role as RoleT } from "../schema/protocol";
import { TenantId } from "../schema/api";

declare const PARTYKIT_HOST: string | undefined;

export interface Principal {
  tenant: string;
  role: RoleT;
  /** A name for the token, recorded as who approved or killed; never the token itself. */
  name: string;
}

const Grant = z.object({ tenant: TenantId, role: Role, name: z.string().max(128).optional() });
/** GOVERNOR_TOKENS: `{"<token>": {tenant, role, name?}}` or `[{token, tenant, role, name?}]`. */
export const TokenMap = z.union([
  z.record(z.string().min(8), Grant),
  z.array(Grant.extend({ token: z.string().min(8) })),
]);

interface Entry {
  digest: Uint8Array;
  principal: Principal;
}

let cached: { raw: string | undefined; entries: Entry[] } | undefined;

export const DEV_TOKEN = "dev";

/** `partykit dev` builds with PARTYKIT_HOST set to the loopback address; a deployment, to its domain. */
export function isLocalDev(): boolean {
  return typeof PARTYKIT_HOST !== "undefined" && /^(127\.0\.0\.1|localhost)(:|$)/.test(PARTYKIT_HOST);
}

function load(raw: string | undefined): Entry[] {
  if (cached && cached.raw === raw) return cached.entries;
  let entries: Entry[];
  if (raw === undefined || raw.trim() === "") {
    if (!isLocalDev()) throw new GovernorError("unauthorized", 503, "GOVERNOR_TOKENS is not set: a deployment refuses to serve without it");
    entries = [{ digest: sha256(utf8ToBytes(DEV_TOKEN)), principal: { tenant: "local", role: "operator", name: "dev" } }];
  } else {
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch {
      throw new GovernorError("internal_error", 500, "GOVERNOR_TOKENS is not valid JSON");
    }
    const parsed = TokenMap.safeParse(json);
    if (!parsed.success) throw new GovernorError("internal_error", 500, "GOVERNOR_TOKENS does not map tokens to {tenant, role}");
    const list = Array.isArray(parsed.data) ? parsed.data : Object.entries(parsed.data).map(([token, g]) => ({ ...g, token }));
    entries = list.map((g, i) => ({
      digest: sha256(utf8ToBytes(g.token)),
      principal: { tenant: g.tenant, role: g.role, name: g.name ?? `${g.role}-${i + 1}` },
    }));
  }
  cached = { raw, entries };
  return entries;
}

/** Compares digests of every configured token without an early exit, so timing says nothing. */
export function authenticate(token: string | null | undefined, raw: string | undefined): Principal {
  const entries = load(raw);
  if (!token) throw new UnauthorizedError("missing token: send Authorization: Bearer <token>");
  const digest = sha256(utf8ToBytes(token));
  let found: Principal | undefined;
  for (const e of entries) {
    let diff = 0;
    for (let i = 0; i < digest.length; i++) diff |= digest[i] ^ e.digest[i];
    if (diff === 0) found = e.principal;
  }
  if (!found) throw new UnauthorizedError("unknown token");
  return found;
}

// "read" is one session's live state (an agent watches its own budget); "list" is the
// tenant's index and "export" the full event log, which are for people, not agents.
export type Permission = "proxy" | "check" | "report" | "open" | "read" | "list" | "export" | "decide" | "configure";

const GRANTS: Record<RoleT, Permission[]> = {
  agent: ["proxy", "check", "report", "open", "read"],
  operator: ["proxy", "check", "report", "open", "read", "list", "export", "decide", "configure"],
  auditor: ["read", "list", "export"],
};

const DOING: Record<Permission, string> = {
  proxy: "make proxied calls",
  check: "check actions",
  report: "report facts",
  open: "open or close sessions",
  read: "read sessions",
  list: "list sessions or read deliveries",
  export: "export the event log",
  decide: "approve, deny or kill",
  configure: "set policies",
};

export function requirePermission(p: Principal, perm: Permission): void {
  if (!GRANTS[p.role].includes(perm)) throw new ForbiddenError(`role "${p.role}" may not ${DOING[perm]}`);
}

export function can(p: Principal, perm: Permission): boolean {
  return GRANTS[p.role].includes(perm);
}

/**
 * Bearer header or Anthropic's x-api-key; ?token= only for socket upgrades (browsers cannot
 * set socket headers), so a token never rides in a URL that could be forwarded or logged.
 */
export function tokenFrom(req: Request, { query = false } = {}): string | null {
  const auth = req.headers.get("authorization");
  if (auth?.toLowerCase().startsWith("bearer ")) return auth.slice(7).trim();
  const key = req.headers.get("x-api-key");
  if (key) return key.trim();
  const fromQuery = query ? new URL(req.url).searchParams.get("token") : null;
  // "Authorization: <token>" or "Basic ..." is a near miss worth naming, not a missing token.
  if (auth?.trim() && !fromQuery) throw new UnauthorizedError('the Authorization header must read "Bearer <token>": use Authorization: Bearer <token>');
  return fromQuery;
}

/** Every tenant the configured tokens name (the local `dev` tenant when none are set). */
export function knownTenants(raw: string | undefined): string[] {
  return [...new Set(load(raw).map((e) => e.principal.tenant))];
}
