// Pieces the filter forms share (sessions, audit): a select's options from [value, label]
// pairs, and a time range that is a preset or two local date-times.

export const TIME_RANGES = [
  ["", "any time"],
  ["1h", "last hour"],
  ["24h", "last 24 hours"],
  ["7d", "last 7 days"],
  ["30d", "last 30 days"],
] as const;

/** Whether `since` (with no `until`) is one of the presets rather than a chosen instant. */
export const isPreset = (since: string, until: string) => until === "" && TIME_RANGES.some(([v]) => v === since);

/** `<input type=datetime-local>` speaks local time without a zone; the API takes ISO (or epoch ms). */
function toLocalInput(v: string): string {
  const t = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
  if (!v || !Number.isFinite(t)) return "";
  return new Date(t - new Date(t).getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
}
const fromLocalInput = (v: string) => (v ? new Date(v).toISOString() : "");

export function Options({ list }: { list: ReadonlyArray<readonly [string, string]> }) {
  return (
    <>
      {list.map(([v, label]) => (
        <option key={v} value={v}>
          {label}
        </option>
      ))}
    </>
  );
}

/**
 * A preset range, or "between…" and two date-time inputs (`custom`). `onPick` gets the
 * preset's value or "custom"; `labels` are the view's words for the select and the inputs.
 */
export function TimeRange({
  labels,
  since,
  until,
  custom,
  onPick,
  onSince,
  onUntil,
}: {
  labels: readonly [string, string, string];
  since: string;
  until: string;
  custom: boolean;
  onPick: (v: string) => void;
  onSince: (iso: string) => void;
  onUntil: (iso: string) => void;
}) {
  const [range, from, to] = labels;
  return (
    <>
      <label>
        {range}
        <select name="range" value={custom ? "custom" : since} onChange={(e) => onPick((e.target as HTMLSelectElement).value)}>
          <Options list={TIME_RANGES} />
          <option value="custom">between…</option>
        </select>
      </label>
      {custom && (
        <>
          <label>
            {from}
            <input type="datetime-local" name="since" value={toLocalInput(since)} onChange={(e) => onSince(fromLocalInput((e.target as HTMLInputElement).value))} />
          </label>
          <label>
            {to}
            <input type="datetime-local" name="until" value={toLocalInput(until)} onChange={(e) => onUntil(fromLocalInput((e.target as HTMLInputElement).value))} />
          </label>
        </>
      )}
    </>
  );
}
