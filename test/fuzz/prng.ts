import { toWellFormed } from "../../lib/text";

// A small seeded PRNG (mulberry32) and the generators the fuzz tests draw from. Every run
// prints its seed; GOVERNOR_FUZZ_SEED=<n> replays exactly the same inputs.

export function seedFromEnv(): number {
  const env = process.env.GOVERNOR_FUZZ_SEED;
  if (env !== undefined && env !== "") {
    const n = Number(env);
    if (!Number.isInteger(n)) throw new Error(`GOVERNOR_FUZZ_SEED must be an integer, got ${env}`);
    return n >>> 0;
  }
  return (Date.now() ^ (process.pid << 8)) >>> 0;
}

export class Rng {
  private s: number;
  constructor(readonly seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  bool(p = 0.5): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)];
  }
}

const NASTY_STRINGS = [
  "",
  " ",
  "\u0000",
  "\ud800",
  "\udfff",
  "a\ud83d",
  "\ud83d\ude00",
  "\ufeff",
  "\u202e",
  "%",
  "%E0%A4%A",
  "../..",
  "__proto__",
  "constructor",
  "null",
  "1e309",
  "-0",
  "\r\n",
  "<script>",
  "'; drop table x; --",
  "rm -rf /",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
];
const NASTY_NUMBERS = [0, -0, -1, 1, 0.1, 1e-300, 1e300, 1.7976931348623157e308, Number.MAX_SAFE_INTEGER, 2 ** 53 + 1, -1e300, 99_999.999_999_999, 100_000, 100_000.01, 1_000_000];

export function str(r: Rng, max = 40): string {
  if (r.bool(0.35)) return r.pick(NASTY_STRINGS);
  const n = r.int(0, max);
  let out = "";
  for (let i = 0; i < n; i++) {
    const k = r.int(0, 9);
    if (k < 6) out += String.fromCharCode(r.int(0x20, 0x7e));
    else if (k < 8) out += String.fromCharCode(r.int(0x80, 0xd7ff));
    else if (k < 9) out += String.fromCharCode(r.int(0xd800, 0xdfff)); // lone or paired by chance
    else out += String.fromCodePoint(r.int(0x10000, 0x10ffff));
  }
  return out;
}

export function num(r: Rng): number {
  if (r.bool(0.5)) return r.pick(NASTY_NUMBERS);
  return r.bool() ? r.int(-1000, 1000) : (r.next() - 0.5) * 10 ** r.int(-5, 12);
}

/** Any JSON value (depth-limited); `wellFormed` keeps every string free of lone surrogates. */
export function json(r: Rng, depth = 3, wellFormed = false): unknown {
  const s = () => (wellFormed ? toWellFormed(str(r)) : str(r));
  const k = r.int(0, depth > 0 ? 6 : 3);
  switch (k) {
    case 0:
      return null;
    case 1:
      return r.bool();
    case 2:
      return num(r);
    case 3:
      return s();
    case 4:
    case 5: {
      const n = r.int(0, 4);
      return Array.from({ length: n }, () => json(r, depth - 1, wellFormed));
    }
    default: {
      const o: Record<string, unknown> = {};
      for (let i = r.int(0, 4); i > 0; i--) o[s()] = json(r, depth - 1, wellFormed);
      return o;
    }
  }
}

