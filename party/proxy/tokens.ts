import { Tiktoken } from "js-tiktoken/lite";
import o200kBase from "js-tiktoken/ranks/o200k_base";
import cl100kBase from "js-tiktoken/ranks/cl100k_base";
import { Buffer } from "node:buffer";
import type { Provider } from "../../schema/pricing";

// Tokenizers, and how they are loaded without stalling a call.
//
// js-tiktoken's constructor decodes a whole rank table in one go (~0.3 s of CPU for cl100k,
// ~0.65 s for o200k), and a Workers isolate runs one thing at a time: decoded on a call's
// path, that call (and every other one in the isolate) waits. So a table is decoded in
// slices of a few milliseconds, each yielding to whatever else is waiting, starting when the
// isolate first proxies a call (`warmTokenizers`). The proxy only needs a tokenizer when a
// budget is tight (see estimate.ts); until then it decides with a bound from the UTF-8 size.
//
// The sliced loader fills the same `rankMap` that js-tiktoken's own constructor fills (its
// `encode` reads nothing else), so the counts are the library's: test/unit/estimate.test.ts
// checks them against encoders built by the library itself.

export type EncodingName = "o200k_base" | "cl100k_base";
type Ranks = { pat_str: string; special_tokens: Record<string, number>; bpe_ranks: string };
const RANKS: Record<EncodingName, Ranks> = { o200k_base: o200kBase, cl100k_base: cl100kBase };

// gpt-4 (not 4o/4.1/4.5), gpt-3.5 and the embedding models predate o200k; anything newer or
// unrecognised from OpenAI is assumed to use it. Anthropic publishes no tokenizer for Claude 3+:
// cl100k stands in, and estimate.ts applies a margin to its counts.
const CL100K_OPENAI = /^(?:ft:)?(?:gpt-4(?![o.])|gpt-3\.5|gpt-35|text-embedding|davinci|babbage)/;

export function encodingFor(provider: Provider, model: string): EncodingName {
  return provider === "openai" && !CL100K_OPENAI.test(model) ? "o200k_base" : "cl100k_base";
}

const SLICE_TOKENS = 2_000; // ~1-2 ms of work per slice
const ready = new Map<EncodingName, Tiktoken>();
const loading = new Map<EncodingName, Promise<Tiktoken>>();

const yieldTurn = () => new Promise<void>((r) => setTimeout(r, 0));

/** Fills `rankMap` from the compact rank string, `perSlice` tokens at a time. */
function* fill(rankMap: Map<string, number>, ranks: string, perSlice: number): Generator<void> {
  let done = 0;
  for (const line of ranks.split("\n")) {
    if (!line) continue;
    // "<prefix> <first rank> <token> <token> ..." with each token base64-encoded.
    let at = line.indexOf(" ");
    const next = line.indexOf(" ", at + 1);
    let rank = Number.parseInt(line.slice(at + 1, next < 0 ? undefined : next), 10);
    at = next;
    while (at >= 0) {
      const end = line.indexOf(" ", at + 1);
      const token = line.slice(at + 1, end < 0 ? undefined : end);
      if (token) rankMap.set(Buffer.from(token, "base64").join(","), rank++);
      at = end;
      if (++done % perSlice === 0) yield;
    }
  }
}

function shell(name: EncodingName): Tiktoken {
  const r = RANKS[name];
  return new Tiktoken({ pat_str: r.pat_str, special_tokens: r.special_tokens, bpe_ranks: "" });
}

function rankMapOf(enc: Tiktoken): Map<string, number> {
  const map = (enc as unknown as { rankMap?: unknown }).rankMap;
  if (!(map instanceof Map)) throw new Error("js-tiktoken changed its internals: rankMap is gone (see party/proxy/tokens.ts)");
  return map as Map<string, number>;
}

/** Starts (or joins) the background load of an encoding; resolves when it can encode. */
export function loadEncoding(name: EncodingName): Promise<Tiktoken> {
  const have = ready.get(name);
  if (have) return Promise.resolve(have);
  let p = loading.get(name);
  if (!p) {
    p = (async () => {
      const enc = shell(name);
      const steps = fill(rankMapOf(enc), RANKS[name].bpe_ranks, SLICE_TOKENS);
      for (;;) {
        if (ready.has(name)) return ready.get(name)!; // loaded synchronously meanwhile
        if (steps.next().done) break;
        await yieldTurn();
      }
      ready.set(name, enc);
      return enc;
    })();
    loading.set(name, p);
  }
  return p;
}

/** Warms both tables off the critical path: call without awaiting (or inside waitUntil). */
export function warmTokenizers(): Promise<unknown> {
  return loadEncoding("o200k_base").then(() => loadEncoding("cl100k_base"));
}

export function isReady(name: EncodingName): boolean {
  return ready.has(name);
}

/** The encoder now, decoding it in one go if need be: for tests and tools, never for a call's path. */
export function encoderNow(name: EncodingName): Tiktoken {
  let enc = ready.get(name);
  if (!enc) {
    enc = shell(name);
    const steps = fill(rankMapOf(enc), RANKS[name].bpe_ranks, Number.MAX_SAFE_INTEGER);
    while (!steps.next().done);
    ready.set(name, enc);
  }
  return enc;
}

// js-tiktoken's BPE is quadratic in the length of one pre-token: 16K chars of "aaaa…" takes
// ~18s. Cutting whitespace-free runs into RUN-char pieces bounds that; it only ever prevents
// merges, so counts can rise slightly, never drop. Past EXACT_BUDGET chars in one text the
// rest is bounded by its UTF-8 size instead of spending more CPU (still an upper bound: every
// token of a byte-level BPE covers at least one byte).
const RUN = 32;
const LONG_RUN = new RegExp(`\\S{${RUN + 1}}`, "u");
const RUN_PIECE = new RegExp(`\\S{${RUN}}`, "gu");
const EXACT_BUDGET = 262_144;
const utf8 = new TextEncoder();

export function utf8Bytes(s: string): number {
  // Exact without allocating: ASCII 1, BMP up to 3, a surrogate pair (2 units) 4.
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff) i++, (n += 2);
    else n += 2;
  }
  return n;
}

/** Tokens of one text, as the encoder counts them (no special tokens: "<|endoftext|>" is text). */
export function countWith(enc: Tiktoken, s: unknown): number {
  if (typeof s !== "string" || s.length === 0) return 0;
  if (s.length > EXACT_BUDGET) return countWith(enc, s.slice(0, EXACT_BUDGET)) + utf8Bytes(s.slice(EXACT_BUDGET));
  const encode = (t: string) => (t ? enc.encode(t, [], []).length : 0);
  if (!LONG_RUN.test(s)) return encode(s);
  let n = 0;
  let from = 0;
  for (const m of s.matchAll(RUN_PIECE)) {
    const cut = m.index + m[0].length;
    n += encode(s.slice(from, cut));
    from = cut;
  }
  return n + encode(s.slice(from));
}

/**
 * Output text counted for a settle: exact once the encoder is loaded, else the UTF-8 size
 * (an upper bound). Never loads a table itself.
 */
export function countTextTokens(provider: Provider, model: string, text: string): number {
  const enc = ready.get(encodingFor(provider, model));
  return enc ? countWith(enc, text) : utf8.encode(text).length;
}
