import type * as Party from "partykit/server";
import { parseNdjson, type Entry, type KeySource } from "../lib/audit";
import { describeKey } from "../lib/checkpoint";
import { BadRequestError, GovernorError } from "../lib/errors";
import { replayReport } from "../lib/replay";
import type { Principal } from "./auth";
import { callSession } from "./calls";
import { json } from "./http";
import { deploymentKey } from "./signing";

// The routes of a record that proves itself: the deployment's public checkpoint key, and
// a session decided again under another policy (the JSON `governor replay --policy --json`
// prints, verified the same way).

const PAGE = 10_000;

/** GET /v1/checkpoints/key */
export async function checkpointKey(lobby: Party.FetchLobby): Promise<Response> {
  const k = await deploymentKey(lobby.env as Record<string, unknown>, lobby);
  if (!k.key) throw new GovernorError("internal_error", 503, k.why, { field: "GOVERNOR_SIGNING_KEY" });
  return json({ ...(await describeKey(k.key)), source: k.source });
}

/** The whole log as the actor exports it, its checkpoint line included. */
async function wholeLog(lobby: Party.FetchLobby, p: Principal, session: string): Promise<Entry[] | Response> {
  const entries: Entry[] = [];
  let after = 0;
  for (;;) {
    const res = await callSession(lobby, p, session, { op: "log", after, limit: PAGE });
    if (!res.ok) return res;
    entries.push(...parseNdjson(await res.text()));
    const next = Number(res.headers.get("x-governor-next-after"));
    if (!res.headers.has("x-governor-next-after") || !Number.isInteger(next) || next <= after) return entries;
    after = next;
  }
}

/** POST /v1/sessions/:id/what-if: `policy` is the parsed body (YAML or JSON). */
export async function whatIfRoute(lobby: Party.FetchLobby, p: Principal, session: string, policy: unknown, query: URLSearchParams): Promise<Response> {
  const mode = query.get("mode") ?? "merge";
  if (mode !== "merge" && mode !== "replace") throw new BadRequestError('mode must be "merge" (over the recorded policy, the default) or "replace"', "mode");
  const log = await wholeLog(lobby, p, session);
  if (log instanceof Response) return log;
  const k = await deploymentKey(lobby.env as Record<string, unknown>, lobby);
  const keys: KeySource = k.key ? { keys: [k.key], from: "this deployment's key" } : { keys: [], error: k.why };
  return json(await replayReport(log, keys, { policy, mode }));
}
