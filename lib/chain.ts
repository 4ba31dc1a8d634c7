import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, utf8ToBytes } from "@noble/hashes/utils.js";
import canonicalize from "canonicalize";

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

export function canonicalJson(value: unknown): string {
  const s = canonicalize(value);
  if (s === undefined) throw new Error("value cannot be canonicalized");
  return s;
}

export function sha256Hex(text: string): string {
  return bytesToHex(sha256(utf8ToBytes(text)));
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
