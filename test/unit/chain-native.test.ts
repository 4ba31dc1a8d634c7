import { createHash } from "node:crypto";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, utf8ToBytes } from "@noble/hashes/utils.js";
import { afterEach, describe, expect, it } from "vitest";
import { canonicalJson, eventHash, GENESIS, sha256Hex, useNativeSha256 } from "../../lib/chain";

// The server hashes with the platform's native SHA-256 (node:crypto), browsers and older
// runtimes with @noble's: a log chained by one must verify with the other, byte for byte.

const texts = [
  "",
  "plain ascii",
  "Grüße, ünïcode, € and 漢字",
  "emoji 🎈 and a ZWJ family 👩‍👩‍👧",
  "lone surrogates \ud800 and \udfff in the middle",
  "\ud83d",
  "x".repeat(200_000),
  JSON.stringify({ deep: [1, { a: "b\u0000c" }] }),
];
const noble = (t: string) => bytesToHex(sha256(utf8ToBytes(t)));

afterEach(() => useNativeSha256(createHash));

describe("native and JavaScript SHA-256 agree", () => {
  // First: afterEach hands createHash over, which sets Node's one-shot crypto.hash aside.
  it("with Node's one-shot hash, the default under Node", () => {
    for (const t of texts) expect(sha256Hex(t), JSON.stringify(t.slice(0, 40))).toBe(noble(t));
  });

  it("on every kind of text, lone surrogates included", () => {
    useNativeSha256(createHash);
    for (const t of texts) expect(sha256Hex(t), JSON.stringify(t.slice(0, 40))).toBe(noble(t));
    useNativeSha256(undefined);
    for (const t of texts) expect(sha256Hex(t)).toBe(noble(t));
  });

  it("on event hashes, so a chain made by either verifies with the other", () => {
    const events = texts.map((t, i) => ({ seq: i + 1, id: `e${i}`, ts: 1_700_000_000_000 + i, type: "violation.recorded", data: { kind: "pii", detail: t }, prev: GENESIS }));
    useNativeSha256(createHash);
    const native = events.map(eventHash);
    useNativeSha256(undefined);
    expect(events.map(eventHash)).toEqual(native);
    // The canonical form escapes a lone surrogate, so what is hashed is well-formed either way.
    expect(canonicalJson({ s: "\ud800" })).toBe('{"s":"\\ud800"}');
  });
});
