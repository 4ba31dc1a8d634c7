import type * as Party from "partykit/server";
import type { Principal } from "./auth";
import { INTERNAL, type Carrying, type TenantOp } from "./ops";

// How the gateway reaches the actors: the caller's tenant and role ride along as headers,
// which only the gateway can set (actors refuse HTTP from outside).

type Parties = { parties: Party.Context["parties"] };

export function sessionStub(lobby: Parties, tenant: string, session: string) {
  return lobby.parties.session.get(`${tenant}:${session}`);
}

export async function callSession(lobby: Parties, p: Principal, session: string, op: Carrying): Promise<Response> {
  return sessionStub(lobby, p.tenant, session).fetch({
    method: "POST",
    headers: { "content-type": "application/json", [INTERNAL.tenant]: p.tenant, [INTERNAL.role]: p.role, [INTERNAL.name]: p.name },
    body: JSON.stringify(op),
  });
}

export async function callTenant(lobby: Parties, tenant: string, op: TenantOp): Promise<Response> {
  return lobby.parties.tenant.get(tenant).fetch({
    method: "POST",
    headers: { "content-type": "application/json", [INTERNAL.tenant]: tenant },
    body: JSON.stringify(op),
  });
}

