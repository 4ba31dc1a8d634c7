import type * as Party from "partykit/server";
import { describeKey, generateSigningKey } from "../lib/checkpoint";
import { refuseDirectRequest } from "./admission";
import { json } from "./http";

// Where a local Governor keeps the checkpoint key it made for itself: one room of party
// "keys", whose Durable Object storage lives in the --persist folder with every session.
// Only the deployment's own parties reach it (its doors are shut to the outside); a
// deployment sets GOVERNOR_SIGNING_KEY instead and never asks here (party/signing.ts).

export const KEYS_ROOM = "signing";
const STORED = "signing-key";

export type KeysOp = { op: "private" };

export default class KeysRoom implements Party.Server {
  static onBeforeRequest = refuseDirectRequest;
  static onBeforeConnect = refuseDirectRequest;

  private made?: Promise<JsonWebKey>;

  constructor(readonly room: Party.Room) {}

  async onRequest(): Promise<Response> {
    return json({ jwk: await (this.made ??= this.keyOf()) });
  }

  /** The stored key, or a new one made, stored and announced: made once, kept with the state. */
  private async keyOf(): Promise<JsonWebKey> {
    const stored = await this.room.storage.get<JsonWebKey>(STORED);
    if (stored) return stored;
    const { key, jwk } = await generateSigningKey();
    await this.room.storage.put(STORED, jwk);
    const pub = await describeKey(key);
    console.log(`Governor: made a checkpoint signing key, kept with the state (kid ${pub.kid}); its public key: ${pub.x}`);
    return jwk;
  }
}
