import { GovernorError, NotFoundError } from "../lib/errors";
import type { WhoAmI } from "../schema/whoami";
import type { Principal } from "./auth";
import { json } from "./http";

// GET /v1/whoami: any valid token learns its own tenant, role and name (a console or CLI
// takes the tenant from here rather than from what the user typed). The gateway has
// already authenticated the token; nothing here reaches an actor.

export function whoamiRoute(method: string, parts: string[], p: Principal): Response {
  if (parts.length > 2) throw new NotFoundError(`no route ${method} /${parts.join("/")}`);
  if (method !== "GET") throw new GovernorError("method_not_allowed", 405, `${method} is not allowed here: use GET`);
  const who: WhoAmI = { tenant: p.tenant, role: p.role, name: p.name };
  // Identity answers are per token: no shared cache may keep one for another caller.
  return json(who, 200, { "cache-control": "no-store", vary: "authorization" });
}
