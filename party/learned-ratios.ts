import type * as Party from "partykit/server";
import { GovernorError, NotFoundError } from "../lib/errors";
import { requirePermission, type Principal } from "./auth";
import { callTenant } from "./calls";
import { json } from "./http";

// GET/DELETE /v1/learned-ratios[/<model>[/<profile>]]: the tenant's learned input ratios
// (the largest billed/estimated input seen per model and prompt profile, which raise every
// later estimate and only ever go up on their own). Operators and auditors read them;
// only operators reset them, e.g. after a pricing or tokenizer fix made one obsolete.

type Ratio = { model: string; profile: string; ratio: number };

function split(key: string): { model: string; profile: string } {
  const cut = key.lastIndexOf("|");
  return { model: key.slice(0, cut), profile: key.slice(cut + 1) };
}

export async function learnedRatiosRoute(method: string, parts: string[], lobby: Party.FetchLobby, p: Principal): Promise<Response> {
  const [, , model, profile] = parts;
  if (parts.length > 4) throw new NotFoundError(`no route ${method} /${parts.join("/")}`);
  if (method === "GET") {
    requirePermission(p, "list");
    const res = await callTenant(lobby, p.tenant, { op: "ratios" });
    const { ratios } = (await res.json()) as { ratios: Record<string, number> };
    const rows: Ratio[] = Object.entries(ratios)
      .map(([k, ratio]) => ({ ...split(k), ratio }))
      .filter((r) => (model === undefined || r.model === model) && (profile === undefined || r.profile === profile))
      .sort((a, b) => a.model.localeCompare(b.model) || a.profile.localeCompare(b.profile));
    return json({ ratios: rows });
  }
  if (method === "DELETE") {
    requirePermission(p, "configure");
    return callTenant(lobby, p.tenant, { op: "forget-ratios", model, profile });
  }
  throw new GovernorError("method_not_allowed", 405, `${method} is not allowed here: use GET or DELETE`);
}
