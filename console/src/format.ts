// How the console writes money and time.

const NANOS = 1_000_000_000;

/**
 * Decimals that show every amount exactly (down to the nano-dollar the actor counts in),
 * at least cents. Amounts shown side by side share them, so spent + reserved + remaining
 * visibly add up to the budget.
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

/** `$1,234.50`; with no `decimals`, as many as this amount needs. */
export function usd(v: number | null | undefined, decimals?: number): string {
  if (v == null) return "–";
  const d = decimals ?? decimalsFor([v]);
  const s = numberFormat(d).format(Math.abs(v));
  return `${v < 0 ? "−" : ""}$${s}`;
}

/** A short amount for axes and tiles where the exact figure sits next to it. */
export function usdShort(v: number): string {
  if (v === 0) return "$0";
  if (Math.abs(v) >= 1000) return `$${(v / 1000).toFixed(1)}k`;
  if (Math.abs(v) >= 1) return `$${v.toFixed(2)}`;
  if (Math.abs(v) >= 0.01) return `$${v.toFixed(3)}`;
  return `$${v.toPrecision(2)}`;
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

export const clock = (ts: number) => new Date(ts).toLocaleTimeString([], { hour12: false });
export const stamp = (ts: number) => new Date(ts).toLocaleString([], { hour12: false });

export function clip(s: string, n = 160): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}
