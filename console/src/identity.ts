import { WhoAmI } from "../../schema/whoami";
import { ApiError, getJson } from "./api";
import { banner } from "./banners";
import { config } from "./config";

// The token's own tenant and role (GET /v1/whoami), and what a refused socket means: a
// browser never learns why an upgrade was refused, but one HTTP call tells a dead token,
// an unreachable server and a token that is fine apart.

export type Identified = { ok: true; who: WhoAmI } | { ok: false; why: string; retry: boolean };

export async function identify(): Promise<Identified> {
  let who: WhoAmI;
  try {
    who = await getJson("/v1/whoami", WhoAmI);
  } catch (e) {
    const retry = e instanceof ApiError && (e.status === 0 || e.status >= 500);
    return { ok: false, why: e instanceof ApiError ? e.toString() : String(e), retry };
  }
  if (who.role === "agent") return { ok: false, why: `this is an agent's token (${who.name}, tenant ${who.tenant}): the console needs an operator's or auditor's token`, retry: false };
  config.tenant = who.tenant;
  config.role = who.role;
  config.name = who.name;
  if (config.asked && config.asked !== who.tenant) {
    banner(`The link asked for tenant ${config.asked}, but this token belongs to tenant ${who.tenant}: showing ${who.tenant}. Sign in with a token of ${config.asked} to see its sessions.`, "warn");
  }
  // The address says which tenant is shown, so a reload or a copied link does not mislead.
  const url = new URL(location.href);
  if (url.searchParams.get("tenant") !== who.tenant) {
    url.searchParams.set("tenant", who.tenant);
    history.replaceState(history.state, "", url);
  }
  config.asked = null;
  return { ok: true, who };
}

export type SocketCheck = { kind: "refused"; why: string } | { kind: "unreachable" } | { kind: "unexplained" };

/**
 * A socket closed before it opened: asks whoami what the server thinks of the token. A
 * refused token (401) also sends the app back to the sign-in form (api.ts).
 */
export async function checkSocket(what: string, needs?: (who: WhoAmI) => string | null): Promise<SocketCheck> {
  let who: WhoAmI;
  try {
    who = await getJson("/v1/whoami", WhoAmI);
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return { kind: "refused", why: `${what} was refused: ${e.toString()}` };
    return { kind: "unreachable" };
  }
  if (who.tenant !== config.tenant) return { kind: "refused", why: `${what} was refused: this token belongs to tenant ${who.tenant}, not ${config.tenant}` };
  const missing = needs?.(who);
  if (missing) return { kind: "refused", why: `${what} was refused: ${missing}` };
  return { kind: "unexplained" };
}
