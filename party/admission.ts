import type * as Party from "partykit/server";
import { authenticate, tokenFrom, type Principal } from "./auth";
import { closing, drainBody, errorResponse, json } from "./http";
import { INTERNAL } from "./ops";

// The actors' own doors. Sockets come straight to a room (browsers cannot go through a
// proxy route with headers), so each room checks the token and its tenant itself; HTTP
// reaches actors only through the gateway.

/** `allow` throws when this principal may not open the room; the principal rides along as headers. */
export function admitSocket(req: Party.Request, lobby: Party.Lobby, allow: (p: Principal, roomId: string) => void): Party.Request | Response {
  try {
    const p = authenticate(tokenFrom(req as unknown as Request, { query: true }), lobby.env.GOVERNOR_TOKENS as string | undefined);
    // The room PartyKit resolved, not our reading of the URL: extra path segments are ignored by it.
    allow(p, lobby.id);
    req.headers.set(INTERNAL.tenant, p.tenant);
    req.headers.set(INTERNAL.role, p.role);
    req.headers.set(INTERNAL.name, p.name);
    return req;
  } catch (e) {
    return errorResponse(e);
  }
}

/** Read first, so a keep-alive client's connection survives the refusal. */
export async function refuseDirectRequest(req: Party.Request): Promise<Response> {
  const res = json({ error: { code: "not_found", message: "use the /v1 routes" } }, 404);
  return (await drainBody(req as unknown as Request)) ? res : closing(res);
}
