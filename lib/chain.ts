import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, utf8ToBytes } from "@noble/hashes/utils.js";

// The hash is synchronous on purpose: the actor decides and appends in one turn, so no
// other request can interleave between reading the head and writing the next event.
export const GENESIS = "0".repeat(64);

export interface Hashable {
  seq: number;
  id: string;
  ts: number;
  type: string;
  data: unknown;
  prev: string;
}

/**
 * RFC 8785 (JCS) canonical JSON, total: for well-formed JSON data it is exactly what the
 * `canonicalize` package gives (the hashes of every existing log depend on that), and where
 * that package throws it still answers, so a stored oddity can never stop a read, replay
 * or kill. A lone surrogate is written as its \uXXXX escape (as JSON.stringify does), a
 * non-finite number, function or cycle as null.
 */
export function canonicalJson(value: unknown): string {
  try {
    return fast(value, 0);
  } catch {
    // SLOW, or anything a value built in memory can throw (a getter, a revoked proxy):
    // canon() handles both and never throws.
  }
  try {
    return canon(value, new Set());
  } catch {
    // Only a stack overflow gets here: every edge bounds nesting at 64 levels, so only a
    // value built in memory could be deep enough.
    return "null";
  }
}

// The common case first: plain data as JSON.parse or the actor makes it (no toJSON, no
// cycle, not deep). It writes exactly what canon() writes for such data, without canon's
// set of the objects on the path; anything else (a toJSON, nesting past FAST_DEPTH, which
// is where a cycle ends up) starts again with canon(). Every event hash and commitment
// goes through here, so it is on the sync's hot path (and the actor's).
const SLOW = Symbol("slow");
const FAST_DEPTH = 100;

// Events use few distinct keys: their quoted form is kept rather than made again each time.
// Only short ones: argument names are a client's, and 4096 long ones kept for the life of
// the isolate would be memory anyone could fill (an event's own keys are all short).
const QUOTED = new Map<string, string>();
const QUOTED_MAX_KEY = 64;

function quotedKey(key: string): string {
  let q = QUOTED.get(key);
  if (q === undefined) {
    q = JSON.stringify(key) + ":";
    if (key.length <= QUOTED_MAX_KEY && QUOTED.size < 4096) QUOTED.set(key, q);
  }
  return q;
}

/** Every value but an object (null included) as canonical JSON writes it. */
function scalar(value: unknown): string {
  switch (typeof value) {
    case "string":
      return JSON.stringify(value);
    case "number":
      return Number.isFinite(value) ? JSON.stringify(value) : "null";
    case "boolean":
      return value ? "true" : "false";
    case "bigint":
      return value.toString();
    default:
      return "null";
  }
}

function fast(value: unknown, depth: number): string {
  if (typeof value !== "object") return scalar(value);
  if (value === null) return "null";
  if (depth > FAST_DEPTH || typeof (value as { toJSON?: unknown }).toJSON === "function") throw SLOW;
  if (Array.isArray(value)) {
    let out = "[";
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      if (i) out += ",";
      // A hole is written as nothing, as canon's map() and join() write it.
      if (v === undefined && !(i in value)) continue;
      out += v === undefined || typeof v === "symbol" || typeof v === "function" ? "null" : fast(v, depth + 1);
    }
    return out + "]";
  }
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).sort();
  let out = "{";
  let first = true;
  for (let i = 0; i < keys.length; i++) {
    const v = obj[keys[i]];
    if (v === undefined || typeof v === "symbol" || typeof v === "function") continue;
    out += (first ? "" : ",") + quotedKey(keys[i]) + fast(v, depth + 1);
    first = false;
  }
  return out + "}";
}

function canon(value: unknown, seen: Set<object>): string {
  if (typeof value !== "object") return scalar(value);
  if (value === null || seen.has(value)) return "null";
  seen.add(value);
  try {
    const withToJson = value as { toJSON?: unknown };
    if (typeof withToJson.toJSON === "function") {
      let inner: unknown;
      try {
        inner = (withToJson.toJSON as () => unknown)();
      } catch {
        inner = null;
      }
      return canon(inner, seen);
    }
    if (Array.isArray(value)) return `[${value.map((v) => (v === undefined || typeof v === "symbol" || typeof v === "function" ? "null" : canon(v, seen))).join(",")}]`;
    const obj = value as Record<string, unknown>;
    const parts: string[] = [];
    for (const key of Object.keys(obj).sort()) {
      const v = obj[key];
      if (v === undefined || typeof v === "symbol" || typeof v === "function") continue;
      parts.push(`${JSON.stringify(key)}:${canon(v, seen)}`);
    }
    return `{${parts.join(",")}}`;
  } finally {
    seen.delete(value);
  }
}

/** node:crypto's createHash, as far as it is used here. */
export type NativeCreateHash = (algorithm: "sha256") => { update(text: string, encoding: "utf8"): { digest(encoding: "hex"): string } };

// The platform's native SHA-256 where there is one (about 5 us less per event than the
// JavaScript one): Node's is found through process.getBuiltinModule (Node 20.16+); workerd
// has node:crypto under nodejs_compat but no `process`, so the server hands it over
// (party/hashing.ts). Browsers (the console) keep @noble. Both give the same digests.
const nodeCrypto = (globalThis as { process?: { getBuiltinModule?: (id: string) => { createHash?: NativeCreateHash; hash?: OneShotHash } | undefined } }).process?.getBuiltinModule?.("node:crypto");
let native: NativeCreateHash | undefined = nodeCrypto?.createHash;
// Node's one-shot crypto.hash (20.12+) skips the Hash object: about 0.6 us less per digest,
// which the audit sync pays once or twice per event. Same digest (the text as UTF-8).
type OneShotHash = (algorithm: "sha256", text: string, encoding: "hex") => string;
let oneShot: OneShotHash | undefined = nodeCrypto?.hash;

export function useNativeSha256(createHash: NativeCreateHash | undefined): void {
  native = createHash;
  oneShot = undefined;
}

export function sha256Hex(text: string): string {
  if (oneShot) return oneShot("sha256", text, "hex");
  return native ? native("sha256").update(text, "utf8").digest("hex") : bytesToHex(sha256(utf8ToBytes(text)));
}

export function eventHash(e: Hashable): string {
  return sha256Hex(canonicalJson({ seq: e.seq, id: e.id, ts: e.ts, type: e.type, data: e.data, prev: e.prev }));
}

export type ChainBreak = { seq: number; reason: string };

/** Checks links and hashes in order; returns the first broken sequence number. */
export function verifyChain(events: Array<Hashable & { hash: string }>, from = { seq: 0, hash: GENESIS }): ChainBreak | undefined {
  let prevSeq = from.seq;
  let prevHash = from.hash;
  for (const e of events) {
    if (e.seq !== prevSeq + 1) return { seq: e.seq, reason: `expected sequence ${prevSeq + 1}, found ${e.seq}` };
    if (e.prev !== prevHash) return { seq: e.seq, reason: "prev does not match the previous event's hash" };
    if (eventHash(e) !== e.hash) return { seq: e.seq, reason: "hash does not match the event's content" };
    prevSeq = e.seq;
    prevHash = e.hash;
  }
  return undefined;
}
