import type * as Party from "partykit/server";
import type { RateHit } from "../../machines/rules";
import type { Attribution } from "../../schema/events";
import { callTenant } from "../calls";
import type { Journal } from "./journal";

/** Quotas per user and per agent span sessions, so the tenant actor holds them. */
export async function crossSessionRate(room: Party.Room, journal: Journal, attribution: Attribution): Promise<RateHit | undefined> {
  const c = journal.context;
  const rules = (c.policy?.limits.rate ?? []).filter((r) => r.per === "user" || r.per === "agent");
  if (!rules.length) return undefined;
  const keys = rules.flatMap((r) => {
    // The request's own values, or the session's as revealed: never a commitment, which differs per session.
    const who = r.per === "user" ? attribution.user ?? journal.vault.value(c.user) : attribution.agent ?? c.agent;
    return who ? [{ key: `${r.per}:${who}:${r.max}/${r.window}`, max: r.max, windowMs: r.window }] : [];
  });
  if (!keys.length) return undefined;
  const res = await callTenant(room.context, c.tenant, { op: "hit", keys, now: Date.now() });
  const answer = (await res.json()) as { ok: boolean; key?: string; retryAfterMs?: number; count?: number };
  if (answer.ok) return undefined;
  const per = answer.key?.split(":")[0] ?? "user";
  // The reason goes into the log: it names the rule, never the person (an agent's name is the deployment's own).
  const whom = per === "agent" ? `agent ${answer.key?.split(":")[1] ?? ""}` : "this user";
  return { rule: `limits.rate[per=${per}]`, reason: `${whom} reached its rate limit across sessions`, retryAfterMs: answer.retryAfterMs ?? 1000 };
}
