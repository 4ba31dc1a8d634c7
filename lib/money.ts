// Money is summed as integer nano-dollars: float sums drift (0.1 * 10 != 1), and a
// budget must hold to the last cent under any number of small charges.
const NANOS = 1_000_000_000;

export function toNanos(usd: number): number {
  return Math.round(usd * NANOS);
}

export function toUsd(nanos: number): number {
  return nanos / NANOS;
}
