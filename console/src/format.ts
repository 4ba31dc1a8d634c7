// How the console writes money and time.

const NANOS = 1_000_000_000;

/**
 * The decimals an amount needs to be shown exactly (to the nano-dollar the actor counts
 * in), and never fewer than cents: $5 needs 2, $0.0001116 needs 7. Of several amounts, the
 * most any of them needs (the width a column aligns its decimal points to).
 */
export function decimalsFor(values: ReadonlyArray<number | null | undefined>, min = 2): number {
  let d = min;
  for (const v of values) {
    if (v == null || !Number.isFinite(v)) continue;
    let n = Math.round(Math.abs(v) * NANOS);
    let need = 9;
    while (need > d && n % 10 === 0) {
      n /= 10;
      need--;
    }
    d = Math.max(d, need);
  }
  return d;
}

const formats = new Map<number, Intl.NumberFormat>();
function numberFormat(decimals: number): Intl.NumberFormat {
  let f = formats.get(decimals);
  if (!f) {
    f = new Intl.NumberFormat("en-US", { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
    formats.set(decimals, f);
  }
  return f;
}

/**
 * `$1,234.50`, `$0.0001116`: cents, and past them only the digits the amount has, so no
 * zero is padding and each figure is exact. Exact figures add up: spent + reserved +
 * remaining, as shown, is the budget as shown.
 */
export function usd(v: number | null | undefined): string {
  if (v == null) return "–";
  const s = numberFormat(decimalsFor([v])).format(Math.abs(v));
  return `${v < 0 ? "−" : ""}$${s}`;
}

/**
 * Axis labels: one precision for every tick, just enough to tell ticks `step` apart
 * ($0, $0.05, $0.10; $0.00005, $0.00010), thousands as `k` from $10k on.
 */
export function usdTicks(ticks: number[], step: number): string[] {
  const big = ticks.some((t) => Math.abs(t) >= 10_000);
  const unit = big ? 1000 : 1;
  // The decimals the step itself has (0.25 → 2, 2.5k → 1), so no two ticks read the same.
  const places = step > 0 ? decimalsFor([step / unit], 0) : 2;
  const decimals = !big && places > 0 ? Math.max(2, places) : places;
  return ticks.map((t) => (t === 0 ? "$0" : `${t < 0 ? "−" : ""}$${numberFormat(decimals).format(Math.abs(t) / unit)}${big ? "k" : ""}`));
}

export function ago(ts: number, now = Date.now()): string {
  const s = Math.round((now - ts) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return new Date(ts).toLocaleDateString();
}

export function timeLeft(deadline: number, now = Date.now()): string {
  const s = Math.max(0, Math.round((deadline - now) / 1000));
  if (s >= 3600) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return s >= 60 ? `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

export const clock = (ts: number) => new Date(ts).toLocaleTimeString([], { hourCycle: "h23" });
export const stamp = (ts: number) => new Date(ts).toLocaleString([], { hourCycle: "h23" });

export function clip(s: string, n = 160): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}
