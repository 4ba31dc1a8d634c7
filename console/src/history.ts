import { useEffect, useState } from "preact/hooks";
import { ApiError, getJson, qs } from "./api";
import { AuditSpendAnswer } from "./schemas";
import { spendSeries, tenantTotals } from "./tenant";

// The tenant's spend over a time window: what the audit store holds (spend per minute or
// hour, from `GET /v1/audit/spend?by=minute|hour`), then what the tenant socket reports
// live on top of it. The history is read again every minute, so what the live part
// estimated is replaced by what the store recorded.

export const CHART_RANGES = [
  { key: "1h", label: "last hour", by: "minute", ms: 3_600_000 },
  { key: "24h", label: "last 24 hours", by: "minute", ms: 86_400_000 },
  { key: "7d", label: "last 7 days", by: "hour", ms: 7 * 86_400_000 },
  { key: "30d", label: "last 30 days", by: "hour", ms: 30 * 86_400_000 },
] as const;
export type ChartRange = (typeof CHART_RANGES)[number]["key"];

const NANOS = 1e9;
const REREAD_MS = 60_000;

interface Loaded {
  kind: "ok";
  from: number;
  /** When the store answered, and the tenant's live total then: live changes after it add to the history. */
  at: number;
  baselineNanos: number;
  /** Reservations open then, for the dashed line's first point. */
  reservedNanos: number;
  /** Cumulative spend at each bucket's start. */
  points: Array<{ ts: number; spentUsd: number }>;
  totalNanos: number;
}

export type History = { kind: "loading" } | { kind: "unavailable"; why: string } | { kind: "error"; why: string } | Loaded;

/** History for a window ending now; `ready` once the tenant socket has given its first totals. */
export function useSpendHistory(range: ChartRange, ready: boolean): History {
  const [state, setState] = useState<History>({ kind: "loading" });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const t = setInterval(() => setTick((n) => n + 1), REREAD_MS);
    return () => clearInterval(t);
  }, []);
  useEffect(() => {
    if (!ready) return;
    const r = CHART_RANGES.find((x) => x.key === range)!;
    const ctl = new AbortController();
    const from = Date.now() - r.ms;
    getJson(`/v1/audit/spend${qs({ by: r.by, since: from })}`, AuditSpendAnswer, ctl.signal)
      .then((answer) => {
        let total = 0;
        const points: Loaded["points"] = [];
        for (const row of [...answer.rows].sort((a, b) => String(a.key).localeCompare(String(b.key)))) {
          const ts = Date.parse(row.key ?? "");
          if (!Number.isFinite(ts)) continue;
          total += Math.round(row.spentUsd * NANOS);
          // A bucket that began before the window holds only what fell inside it.
          points.push({ ts: Math.max(ts, from), spentUsd: total / NANOS });
        }
        const live = tenantTotals();
        setState({ kind: "ok", from, at: Date.now(), baselineNanos: Math.round(live.spentUsd * NANOS), reservedNanos: Math.round(live.reservedUsd * NANOS), points, totalNanos: total });
      })
      .catch((e) => {
        if (ctl.signal.aborted) return;
        if (e instanceof ApiError && [404, 501, 502, 503].includes(e.status)) setState({ kind: "unavailable", why: e.toString() });
        else setState({ kind: "error", why: String(e) });
      });
    return () => ctl.abort();
  }, [range, ready, tick]);
  return state;
}

export type ChartData = [number[], Array<number | null>, Array<number | null>];

/**
 * The history's steps, then every live sample since the store answered (shifted onto the
 * history's total), then a last point at `now`: spent (solid) and spent + reserved
 * (dashed; live only, the store keeps no reservations).
 */
export function windowSeries(h: Loaded, now: number): { data: ChartData; historyPoints: number; lastUsd: number } {
  const xs: number[] = [h.from];
  const spent: Array<number | null> = [0];
  const committed: Array<number | null> = [null];
  for (const p of h.points) {
    xs.push(p.ts);
    spent.push(p.spentUsd);
    committed.push(null);
  }
  const shift = (usd: number) => (h.totalNanos + Math.round(usd * NANOS) - h.baselineNanos) / NANOS;
  xs.push(h.at);
  spent.push(h.totalNanos / NANOS);
  committed.push((h.totalNanos + h.reservedNanos) / NANOS);
  for (const p of spendSeries) {
    if (p.ts <= h.at) continue;
    xs.push(p.ts);
    spent.push(shift(p.spentUsd));
    committed.push(shift(p.committedUsd));
  }
  const t = tenantTotals();
  const lastUsd = shift(t.spentUsd);
  xs.push(Math.max(now, xs[xs.length - 1] + 1000));
  spent.push(lastUsd);
  committed.push(shift(t.spentUsd + t.reservedUsd));
  return { data: [xs, spent, committed], historyPoints: h.points.length, lastUsd };
}
