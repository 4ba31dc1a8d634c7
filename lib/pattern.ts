import { RE2JS } from "re2js";
import { MAX_PATTERN_LENGTH, MAX_PATTERN_PROGRAM } from "./limits";

// Policy patterns run on RE2 (re2js, a pure-JS port), never on the backtracking RegExp of
// the runtime: a pattern an agent's argument can make slow would stall every tenant in
// the isolate. RE2 matches in time linear in the input for a given pattern; the pattern's
// size is the other factor, so it is bounded too, and the caller meters size x input.

export type Compiled = { ok: true; re: RE2JS; program: number } | { ok: false; error: string };

const cache = new Map<string, Compiled>();
const CACHE_SIZE = 512;

/** Compiles once per isolate; a pattern RE2 refuses is remembered as refused. */
export function compilePattern(pattern: string): Compiled {
  const hit = cache.get(pattern);
  if (hit) {
    // Most recently used last, so the oldest is the one dropped.
    cache.delete(pattern);
    cache.set(pattern, hit);
    return hit;
  }
  const compiled = compile(pattern);
  cache.set(pattern, compiled);
  if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value as string);
  return compiled;
}

function compile(pattern: string): Compiled {
  if (pattern.length > MAX_PATTERN_LENGTH) return { ok: false, error: `is longer than ${MAX_PATTERN_LENGTH} characters` };
  let re: RE2JS;
  try {
    re = RE2JS.compile(pattern);
  } catch (e) {
    // RE2 syntax: no lookaround, no backreferences; repetition counts up to 1000.
    return { ok: false, error: `is not an RE2 pattern: ${(e as Error).message.replace(/^error parsing regexp: /, "")}` };
  }
  const program = re.programSize();
  if (program > MAX_PATTERN_PROGRAM) return { ok: false, error: `compiles to ${program} RE2 instructions (limit ${MAX_PATTERN_PROGRAM}): use smaller repetition counts` };
  return { ok: true, re, program };
}

/** Unanchored, like RegExp.prototype.test: anchor with ^ and $ to match the whole value. */
export function testPattern(c: Extract<Compiled, { ok: true }>, input: string): boolean {
  return c.re.test(input);
}
