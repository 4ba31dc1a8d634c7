import type * as Party from "partykit/server";
import { importSigningKey, type SigningKey } from "../lib/checkpoint";
import { isLocalDev } from "./auth";
import { KEYS_ROOM } from "./keys";

// The deployment's checkpoint key: GOVERNOR_SIGNING_KEY when set (a deployment must set
// it); under `partykit dev` without it, the key the keys room made and keeps. Cached per
// isolate: a session signs without asking anyone after the first time.

export type KeySource = "env" | "generated";
export type DeploymentKey = { key: SigningKey; source: KeySource } | { key: null; why: string };

let cached: { raw: string | undefined; value: Promise<DeploymentKey> } | undefined;

type Parties = { parties: Party.Context["parties"] };

export function deploymentKey(env: Record<string, unknown>, lobby: Parties): Promise<DeploymentKey> {
  const raw = typeof env.GOVERNOR_SIGNING_KEY === "string" && env.GOVERNOR_SIGNING_KEY.trim() ? env.GOVERNOR_SIGNING_KEY : undefined;
  if (cached && cached.raw === raw) return cached.value;
  const value = load(raw, lobby);
  cached = { raw, value };
  // A failure to reach the keys room is tried again next time; a bad variable is not.
  value.then((k) => {
    if (k.key === null && raw === undefined && isLocalDev() && cached?.value === value) cached = undefined;
  });
  return value;
}

async function load(raw: string | undefined, lobby: Parties): Promise<DeploymentKey> {
  if (raw !== undefined) {
    try {
      return { key: await importSigningKey(raw), source: "env" };
    } catch (e) {
      console.error(`GOVERNOR_SIGNING_KEY is not usable, so no checkpoints are signed: ${(e as Error).message}`);
      return { key: null, why: `GOVERNOR_SIGNING_KEY is not usable: ${(e as Error).message}` };
    }
  }
  if (!isLocalDev()) return { key: null, why: "GOVERNOR_SIGNING_KEY is not set: this deployment signs no checkpoints (make one with `governor keygen`)" };
  try {
    const res = await lobby.parties.keys.get(KEYS_ROOM).fetch({ method: "POST", body: JSON.stringify({ op: "private" }) });
    const { jwk } = (await res.json()) as { jwk: JsonWebKey };
    return { key: await importSigningKey(JSON.stringify(jwk)), source: "generated" };
  } catch (e) {
    console.error("the local checkpoint key could not be read", e);
    return { key: null, why: `the local checkpoint key could not be read: ${(e as Error).message}` };
  }
}
