// Percentiles from sorted samples. Runs hold at most a few tens of thousands of
// samples, so sorting is cheap and exact; a histogram library would only add rounding.

export interface Summary {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

/** Nearest-rank percentile of ascending samples. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

export function summarize(samples: number[]): Summary {
  const s = [...samples].sort((a, b) => a - b);
  const sum = s.reduce((a, b) => a + b, 0);
  return {
    n: s.length,
    p50: percentile(s, 50),
    p90: percentile(s, 90),
    p99: percentile(s, 99),
    mean: s.length ? sum / s.length : NaN,
    min: s.length ? s[0] : NaN,
    max: s.length ? s[s.length - 1] : NaN,
  };
}

export const ms = (x: number, digits = 3) => (Number.isFinite(x) ? x.toFixed(digits) : "n/a");

/** Rounds every number in a nested object so the JSON results stay readable. */
export function rounded<T>(value: T, digits = 4): T {
  return JSON.parse(JSON.stringify(value, (_k, v) => (typeof v === "number" && !Number.isInteger(v) ? Number(v.toFixed(digits)) : v)));
}

/** A fixed-width text table; the first column left-aligned, the rest right-aligned. */
export function table(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  return [line(cells[0]), widths.map((w) => "-".repeat(w)).join("  "), ...cells.slice(1).map(line)].join("\n");
}

/** Rows of per-process CPU figures as a table, one column per process; null when there are none. */
export function cpuLines(rows: [string, Record<string, number> | null][]): string | null {
  const present = rows.filter((r): r is [string, Record<string, number>] => r[1] !== null);
  if (!present.length) return null;
  const names = [...new Set(present.flatMap(([, c]) => Object.keys(c)))].sort();
  return table(
    ["load", ...names, "total"],
    present.map(([label, c]) => [label, ...names.map((k) => (c[k] === undefined ? "-" : c[k].toFixed(3))), Object.values(c).reduce((a, b) => a + b, 0).toFixed(3)]),
  );
}
