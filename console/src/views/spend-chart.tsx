import { useState } from "preact/hooks";
import { clock, usd } from "../format";
import { CHART_RANGES, useSpendHistory, windowSeries, type ChartRange } from "../history";
import { spendSeries, tenantTotals } from "../tenant";
import { Card, Empty } from "../ui/bits";
import { TimeChart } from "../ui/chart";

const SERIES = [
  { label: "spent", color: "#2563eb", fill: "rgba(37, 99, 235, 0.08)" },
  { label: "spent + reserved", color: "#93c5fd", dash: [5, 4] },
];

/**
 * The tenant's spend over a window: the audit store's history, then live. Without the
 * audit store, the tenant's total as sampled live since the console was opened.
 */
export function SpendChart({ now }: { now: number }) {
  const [range, setRange] = useState<ChartRange>("1h");
  const totals = tenantTotals();
  const history = useSpendHistory(range, totals.loaded);
  const r = CHART_RANGES.find((x) => x.key === range)!;

  const picker = (
    <select aria-label="Chart range" name="chart-range" value={range} onChange={(e) => setRange((e.target as HTMLSelectElement).value as ChartRange)} disabled={history.kind === "unavailable"}>
      {CHART_RANGES.map((x) => (
        <option key={x.key} value={x.key}>
          {x.label}
        </option>
      ))}
    </select>
  );

  if (history.kind === "ok") {
    const { data, historyPoints, lastUsd } = windowSeries(history, now);
    return (
      <Card title="Spend over time" name="spend-chart" extra={<div class="controls">{picker}</div>}>
        <p class="chart-note small muted" data-history={historyPoints} data-history-first={history.points[0]?.ts}>
          <strong class="ink">{usd(lastUsd)}</strong> spent in the {r.label} · history from the audit store ({historyPoints} {r.by}
          {historyPoints === 1 ? "" : "s"} with activity), live since {clock(history.at)} ·
          dashed: with reservations
        </p>
        <TimeChart key="history" name="tenant-spend" data={data} window={[now - r.ms, Math.max(now, data[0][data[0].length - 1])]} series={SERIES} />
      </Card>
    );
  }

  if (!totals.loaded) {
    return (
      <Card title="Spend over time" name="spend-chart" extra={<div class="controls">{picker}</div>}>
        <Empty>No live figures yet: the chart starts when the tenant's live connection lists the sessions.</Empty>
      </Card>
    );
  }

  // The line runs to now: spend holds its last value until something changes it.
  const pts = spendSeries.length ? spendSeries : [{ ts: now, spentUsd: totals.spentUsd, committedUsd: totals.spentUsd + totals.reservedUsd }];
  const last = pts[pts.length - 1];
  const xs = [...pts.map((p) => p.ts), Math.max(now, last.ts + 1000)];
  const data: [number[], number[], number[]] = [xs, [...pts.map((p) => p.spentUsd), last.spentUsd], [...pts.map((p) => p.committedUsd), last.committedUsd]];
  return (
    <Card title="Spend over time" name="spend-chart" extra={<div class="controls">{picker}</div>}>
      <p class="chart-note small muted" data-history="none">
        tenant total, live since {clock(pts[0].ts)} · dashed: with reservations
        {history.kind === "unavailable" && <> · history needs the audit store, which is not available</>}
        {history.kind === "error" && <span class="error-text"> · history could not be read: {history.why}</span>}
        {history.kind === "loading" && <> · reading the history…</>}
      </p>
      <TimeChart key="live" name="tenant-spend" minSpan={60} anchor="start" data={data} series={SERIES} />
    </Card>
  );
}
