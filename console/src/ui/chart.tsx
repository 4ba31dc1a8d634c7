import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { clock, stamp, usd, usdTicks } from "../format";

// A time series chart (uPlot): created once, then fed new data; it follows its box's width.

export interface SeriesSpec {
  label: string;
  color: string;
  fill?: string;
  dash?: number[];
}

interface Props {
  /** [times in ms, ...one array per series]; null where a series has no value. */
  data: [number[], ...Array<Array<number | null>>];
  series: SeriesSpec[];
  height?: number;
  /** Names the chart for tests and assistive tech. */
  name: string;
  /** The narrowest time window shown, in seconds, and which end of the data it holds on to. */
  minSpan?: number;
  anchor?: "start" | "end";
  /** A fixed time window in ms (a chart of "the last 24 hours"); else the data's own span. */
  window?: [number, number];
}

const stepped = uPlot.paths.stepped!({ align: 1 });
/** Half the widest time label ("00:00:00", or a date), so the last one is never cut off. */
const RIGHT_PAD = 34;

const lastOf = (xs: ArrayLike<number | null | undefined>) => {
  for (let i = xs.length - 1; i >= 0; i--) if (xs[i] != null) return xs[i] as number;
  return null;
};

const hm = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const hms = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
const md = new Intl.DateTimeFormat([], { month: "short", day: "numeric" });

/**
 * Time axis labels in the console's 24-hour clock: seconds only when ticks are seconds
 * apart; the date under a tick where the day changes, and under the first one when it is
 * not today.
 */
function timeTicks(splits: number[], incr: number): string[] {
  const today = new Date().toDateString();
  let day = "";
  return splits.map((s, i) => {
    const d = new Date(s * 1000);
    if (incr >= 86_400) return md.format(d);
    const time = (incr < 60 ? hms : hm).format(d);
    const thisDay = d.toDateString();
    const changed = i === 0 ? thisDay !== today : thisDay !== day;
    day = thisDay;
    return changed ? `${time}\n${md.format(d)}` : time;
  });
}
/** Dots while there are only a few points, so a young series is visible at all. */
const few = (u: uPlot, _series: number, i0: number, i1: number) => i1 - i0 < 40 && u.data[0].length < 40;

export function TimeChart({ data, series, height = 220, name, minSpan = 300, anchor = "end", window }: Props) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const fixed = useRef(window);
  fixed.current = window;
  const seconds = (d: Props["data"]): uPlot.AlignedData => [d[0].map((t) => t / 1000), ...d.slice(1)] as uPlot.AlignedData;

  useEffect(() => {
    const el = box.current!;
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height,
      // Room on the right for half of the last time label, which is centred on its tick.
      padding: [10, RIGHT_PAD, 0, 0],
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: {
        // A few points close together would otherwise stretch over years.
        x: {
          time: true,
          range: (_u, min, max) =>
            fixed.current ? [fixed.current[0] / 1000, fixed.current[1] / 1000] : max - min >= minSpan ? [min, max] : anchor === "end" ? [max - minSpan, max + 1] : [min - 1, min + minSpan],
        },
        y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] },
      },
      axes: [
        { stroke: "#6b7280", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#e3e6eb" }, space: 64, values: (_u, splits, _axis, _space, incr) => timeTicks(splits, incr) },
        {
          stroke: "#6b7280",
          grid: { stroke: "#eef0f3" },
          ticks: { stroke: "#e3e6eb" },
          space: 36,
          size: (_u, vals) => (vals?.length ? Math.max(...vals.map((v) => v.length)) * 7 + 18 : 50),
          values: (_u, splits, _axis, _space, incr) => usdTicks(splits, incr),
        },
      ],
      series: [
        // Away from the chart, the legend shows where the lines end: now.
        { value: (_u, v) => (v == null ? "now" : fixed.current && fixed.current[1] - fixed.current[0] > 86_400_000 ? stamp(v * 1000) : clock(v * 1000)) },
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          fill: s.fill,
          dash: s.dash,
          width: 2,
          paths: stepped,
          points: { show: few, size: 6 },
          value: (u: uPlot, v: number | null, sidx: number, idx: number | null) => {
            if (idx == null) v = lastOf(u.data[sidx] as Array<number | null | undefined>);
            return v == null ? "–" : usd(v);
          },
        })),
      ],
    };
    plot.current = new uPlot(opts, seconds(data), el);
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: Math.max(200, el.clientWidth), height }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
    // The series are fixed for a chart's life; data flows through the effect below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [height]);

  useEffect(() => {
    plot.current?.setData(seconds(data));
  }, [data]);

  const last = data[1].length ? (data[1][data[1].length - 1] ?? 0) : 0;
  return <div class="chart" ref={box} role="img" aria-label={name} data-chart={name} data-points={data[0].length} data-last={last} />;
}
