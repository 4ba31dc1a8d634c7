import { sha256 } from "@noble/hashes/sha2.js";
import { utf8ToBytes } from "@noble/hashes/utils.js";
import { z } from "zod";
import { canonicalJson } from "./chain";

// Signed checkpoints: the session actor signs its head `{tenant, session, seq, hash, ts}`
// (RFC 8785 canonical JSON, Ed25519) with the deployment's key. A verifier holding the
// public key then knows the log up to `seq` is the one Governor wrote, and that nothing
// after the signed head was cut off: the hash chain alone cannot tell a dropped or
// rewritten-and-rehashed tail from the real one.
//
// WebCrypto's Ed25519 does the work in workerd (2024-07 runtime) and in Node 20 alike.
//
// Key formats:
// - GOVERNOR_SIGNING_KEY: an Ed25519 private key as PKCS#8 PEM (`openssl genpkey -algorithm
//   ed25519`) or as a private JWK (`{"kty":"OKP","crv":"Ed25519","d":"…","x":"…"}`, what
//   `governor keygen` prints).
// - Public keys (GET /v1/checkpoints/key, `governor replay --key`): the raw 32 bytes as
//   base64url (the JWK's `x`), a public JWK, an SPKI PEM, or the key route's JSON answer.
// - Key id (`kid`): the RFC 7638 JWK thumbprint (SHA-256, base64url) of the public key.

export const CheckpointBody = z.strictObject({
  tenant: z.string().min(1).max(256),
  session: z.string().min(1).max(256),
  seq: z.number().int().positive(),
  hash: z.string().regex(/^[0-9a-f]{64}$/),
  ts: z.number().int().nonnegative(),
});

/** One NDJSON line of an export, or one socket message's body: no `type` or `seq` at the top, so never taken for an event. */
export const SignedCheckpoint = z.strictObject({
  checkpoint: CheckpointBody,
  alg: z.literal("Ed25519"),
  kid: z.string().min(1).max(128),
  sig: z.string().regex(/^[A-Za-z0-9_-]{86}$/, "an Ed25519 signature: 64 bytes, base64url"),
});

export type CheckpointBody = z.infer<typeof CheckpointBody>;
export type SignedCheckpoint = z.infer<typeof SignedCheckpoint>;

/** A line that is a checkpoint, not an event (it may still be a malformed one). */
export function isCheckpointLine(raw: unknown): boolean {
  return typeof raw === "object" && raw !== null && !Array.isArray(raw) && "checkpoint" in raw && !("type" in raw);
}

const ED25519 = { name: "Ed25519" } as const;

export function toBase64Url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function fromBase64Url(text: string): Uint8Array<ArrayBuffer> {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** RFC 7638 thumbprint of an Ed25519 public key given as its JWK `x`. */
export function keyId(x: string): string {
  return toBase64Url(sha256(utf8ToBytes(`{"crv":"Ed25519","kty":"OKP","x":"${x}"}`)));
}

export interface PublicKey {
  kid: string;
  /** The raw key, base64url (a JWK's `x`). */
  x: string;
  key: CryptoKey;
}

export interface SigningKey extends PublicKey {
  privateKey: CryptoKey;
}

export class KeyFormatError extends Error {}

function pemBody(text: string, label: string): Uint8Array<ArrayBuffer> | undefined {
  const m = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`).exec(text);
  if (!m) return undefined;
  // Standard base64 decodes the same way: only '-' and '_' are rewritten.
  return fromBase64Url(m[1].replace(/\s+/g, ""));
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = btoa(String.fromCharCode(...new Uint8Array(der)));
  return `-----BEGIN ${label}-----\n${b64.match(/.{1,64}/g)!.join("\n")}\n-----END ${label}-----\n`;
}

async function publicFromX(x: string): Promise<PublicKey> {
  if (!/^[A-Za-z0-9_-]{43}$/.test(x)) throw new KeyFormatError("an Ed25519 public key is 32 bytes (43 characters of base64url)");
  const key = await crypto.subtle.importKey("jwk", { kty: "OKP", crv: "Ed25519", x }, ED25519, true, ["verify"]);
  return { kid: keyId(x), x, key };
}

function jsonOf(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** A private key as PKCS#8 PEM or JWK: GOVERNOR_SIGNING_KEY, or a generated key as stored. */
export async function importSigningKey(text: string): Promise<SigningKey> {
  const trimmed = text.trim();
  let privateKey: CryptoKey;
  const der = pemBody(trimmed, "PRIVATE KEY");
  try {
    if (der) privateKey = await crypto.subtle.importKey("pkcs8", der, ED25519, true, ["sign"]);
    else {
      const jwk = jsonOf(trimmed) as JsonWebKey | undefined;
      if (!jwk || jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.d !== "string") throw new KeyFormatError("expected an Ed25519 private key: PKCS#8 PEM (-----BEGIN PRIVATE KEY-----) or a JWK with kty OKP, crv Ed25519 and d");
      privateKey = await crypto.subtle.importKey("jwk", { kty: "OKP", crv: "Ed25519", d: jwk.d, x: jwk.x }, ED25519, true, ["sign"]);
    }
  } catch (e) {
    if (e instanceof KeyFormatError) throw e;
    throw new KeyFormatError(`not a usable Ed25519 private key: ${(e as Error).message}`);
  }
  const x = ((await crypto.subtle.exportKey("jwk", privateKey)) as JsonWebKey).x;
  if (!x) throw new KeyFormatError("the private key did not yield its public half");
  return { ...(await publicFromX(x)), privateKey };
}

/** A fresh key, with the private JWK to keep it by. */
export async function generateSigningKey(): Promise<{ key: SigningKey; jwk: JsonWebKey }> {
  const pair = (await crypto.subtle.generateKey(ED25519, true, ["sign", "verify"])) as CryptoKeyPair;
  const jwk = (await crypto.subtle.exportKey("jwk", pair.privateKey)) as JsonWebKey;
  const stored = { kty: "OKP", crv: "Ed25519", d: jwk.d, x: jwk.x };
  return { key: await importSigningKey(JSON.stringify(stored)), jwk: stored };
}

/** Any of the public key forms above; a private key gives its public half. */
export async function importPublicKey(text: string): Promise<PublicKey> {
  const trimmed = text.trim();
  const spki = pemBody(trimmed, "PUBLIC KEY");
  if (spki) {
    let key: CryptoKey;
    try {
      key = await crypto.subtle.importKey("spki", spki, ED25519, true, ["verify"]);
    } catch (e) {
      throw new KeyFormatError(`not an Ed25519 public key: ${(e as Error).message}`);
    }
    const x = ((await crypto.subtle.exportKey("jwk", key)) as JsonWebKey).x!;
    return { kid: keyId(x), x, key };
  }
  if (pemBody(trimmed, "PRIVATE KEY")) return importSigningKey(trimmed);
  const json = jsonOf(trimmed) as { x?: unknown; jwk?: { x?: unknown }; d?: unknown } | undefined;
  if (json && typeof json === "object") {
    const x = typeof json.x === "string" ? json.x : typeof json.jwk?.x === "string" ? json.jwk.x : undefined;
    if (!x) throw new KeyFormatError("a JSON key needs the public key as `x` (a JWK, or the answer of GET /v1/checkpoints/key)");
    return publicFromX(x);
  }
  return publicFromX(trimmed);
}

/** The public half as served: JWK, SPKI PEM, raw, and its key id. */
export async function describeKey(k: PublicKey) {
  return {
    alg: "Ed25519" as const,
    kid: k.kid,
    x: k.x,
    jwk: { kty: "OKP", crv: "Ed25519", x: k.x, kid: k.kid, alg: "EdDSA", use: "sig" },
    pem: pem("PUBLIC KEY", await crypto.subtle.exportKey("spki", k.key)),
  };
}

export async function signCheckpoint(key: SigningKey, body: CheckpointBody): Promise<SignedCheckpoint> {
  const checkpoint = { tenant: body.tenant, session: body.session, seq: body.seq, hash: body.hash, ts: body.ts };
  const sig = await crypto.subtle.sign(ED25519, key.privateKey, new TextEncoder().encode(canonicalJson(checkpoint)));
  return { checkpoint, alg: "Ed25519", kid: key.kid, sig: toBase64Url(new Uint8Array(sig)) };
}

export async function verifyCheckpoint(c: SignedCheckpoint, key: PublicKey): Promise<boolean> {
  try {
    return await crypto.subtle.verify(ED25519, key.key, fromBase64Url(c.sig), new TextEncoder().encode(canonicalJson(c.checkpoint)));
  } catch {
    return false;
  }
}
