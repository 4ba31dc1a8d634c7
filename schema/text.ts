import { z } from "zod";
import { MAX_DEPTH } from "../lib/limits";
import { findBadText, isWellFormed } from "../lib/text";

// Text at the edge: every string a request brings in is well-formed UTF-16 and within its
// size, or the request is refused naming the field. Stored data is parsed by the lenient
// schemas in events.ts, so what an older version stored still reads and replays.

const NOT_WELL_FORMED = "holds a lone UTF-16 surrogate: not well-formed text";

/** A string of at most `max` UTF-16 units (and at least `min`), well-formed. */
export function text(max: number, min = 0) {
  const base = z.string().max(max);
  return (min > 0 ? base.min(min) : base).refine(isWellFormed, NOT_WELL_FORMED);
}

function depthOf(value: unknown): number {
  let deepest = 0;
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== "object") continue;
    deepest = Math.max(deepest, d + 1);
    if (deepest > MAX_DEPTH) return deepest;
    for (const child of Object.values(v)) stack.push([child, d + 1]);
  }
  return deepest;
}

/** A superRefine step: every string and key of a JSON value well-formed, its depth bounded. */
export function jsonText(maxString = Infinity) {
  return (value: unknown, ctx: z.RefinementCtx) => {
    if (depthOf(value) > MAX_DEPTH) {
      ctx.addIssue({ code: "custom", message: `is nested more than ${MAX_DEPTH} levels deep` });
      return;
    }
    const bad = findBadText(value, maxString);
    if (bad) ctx.addIssue({ code: "custom", message: bad.message, path: bad.path });
  };
}

/** Any JSON value whose strings and keys are all well-formed (and each at most `maxString`). */
export function wellFormedJson(maxString = Infinity) {
  return z.unknown().superRefine(jsonText(maxString));
}
