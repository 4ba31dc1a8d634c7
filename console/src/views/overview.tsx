import { useEffect, useState } from "preact/hooks";
import type { SessionSummary } from "../../../schema/protocol";
import { ApiError, getJson, qs } from "../api";
import { clip, decimalsFor, timeLeft } from "../format";
import { useIncidents } from "../incidents";
import { hrefOf } from "../route";
import { AuditSpendAnswer, SPEND_BY, type SpendBy } from "../schemas";
import { useNow, useObservable } from "../signal";
import { sessions, tenantStatus, tenantTotals, tenantVersion } from "../tenant";
import { Ago, Card, Count, Empty, Rule, Stat, StateBadge, STATES, Usd } from "../ui/bits";
import { Options, TIME_RANGES } from "../ui/filters";
import { SpendChart } from "./spend-chart";

export function Overview() {
  const version = useObservable(tenantVersion);
  const now = useNow(5000);
  const all = [...sessions.values()];
  const totals = tenantTotals();
  const pending = all.flatMap((s) => s.pendingApprovals.map((a) => ({ s, a }))).sort((x, y) => x.a.deadline - y.a.deadline);
  const byState = Object.fromEntries(STATES.map((st) => [st, 0])) as Record<(typeof STATES)[number], number>;
  for (const s of all) byState[s.state]++;
  const live = byState.active + byState.alerting + byState["awaiting-approval"];
  const status = useObservable(tenantStatus);
  // Those past their deadline are the actor's to deny (fail-closed): not waiting on anyone.
  const open = pending.filter(({ a }) => a.deadline > now).length;
  // Until the tenant socket has listed the sessions, there are no figures: not zeros.
  const known = totals.loaded;
  const unknown = <span class="muted">–</span>;

  return (
    <div class="overview">
      {!known && (
        <p class={`notice${status.state === "refused" ? " bad" : ""}`} data-notice="live">
          {status.state === "refused" ? <>No live figures: {status.why}. Sessions, approvals and the audit store still answer on their own pages.</> : "Waiting for the tenant's live figures…"}
        </p>
      )}
      <div class="tiles">
        <Stat label="Spent" name="spent" value={known ? <Usd v={totals.spentUsd} /> : unknown} hint="All sessions of this tenant, settled" />
        <Stat label="Reserved now" name="reserved" value={known ? <Usd v={totals.reservedUsd} /> : unknown} hint="Worst case of calls in flight and actions awaiting approval" />
        <Stat label="Live sessions" name="live" value={known ? live : unknown}>
          {known && <span class="muted small">{all.length} in all</span>}
        </Stat>
        <Stat label="Awaiting approval" name="pending" value={known ? <span class={open ? "hot-text" : ""}>{open}</span> : unknown} />
      </div>

      <div class="grid-2-1">
        <SpendChart now={now} />
        <Card title="Sessions by state" name="by-state" extra={<a href={hrefOf({ view: "sessions", params: new URLSearchParams() })}>All sessions →</a>}>
          {known ? <StateBars byState={byState} total={all.length} /> : <Empty>No live figures yet.</Empty>}
        </Card>
      </div>

      <div class="grid-1-1">
        <Card title={<>Open approvals <Count n={open} hot /></>} name="open-approvals" extra={pending.length > 0 && <a href="#approvals">Decide →</a>}>
          {pending.length === 0 ? (
            <Empty>Nothing is waiting for a decision.</Empty>
          ) : (
            <ul class="list">
              {pending.slice(0, 6).map(({ s, a }) => (
                <li key={a.approvalId}>
                  <a href="#approvals" class="mono strong">
                    {a.action}
                  </a>
                  <span class="muted small">
                    {" "}
                    in {s.session}
                    {s.agent ? ` · ${s.agent}` : ""}
                  </span>
                  <span class={`pill${a.deadline - now < 60_000 ? " urgent" : ""}`} title="time left to decide">
                    {a.deadline > now ? timeLeft(a.deadline, now) : "timed out"}
                  </span>
                  <div class="small">{clip(a.reason, 140)}</div>
                </li>
              ))}
            </ul>
          )}
        </Card>
        <Incidents all={all} version={version} now={now} />
      </div>

      <Rollups />
    </div>
  );
}

function StateBars({ byState, total }: { byState: Record<string, number>; total: number }) {
  return (
    <div class="state-bars">
      <div class="stack" aria-hidden="true">
        {STATES.map((st) => (byState[st] ? <span key={st} class={`seg state-${st}`} style={{ flexGrow: byState[st] }} /> : null))}
      </div>
      <ul class="legend">
        {STATES.map((st) => (
          <li key={st} data-count-state={st}>
            <a href={hrefOf({ view: "sessions", params: new URLSearchParams({ state: st }) })}>
              <StateBadge state={st} />
            </a>
            <span class="num">{byState[st]}</span>
            <span class="muted small num">{total ? `${Math.round((byState[st] / total) * 100)}%` : ""}</span>
          </li>
        ))}
      </ul>
    </div>
  );
}

function Incidents({ all, version, now }: { all: SessionSummary[]; version: number; now: number }) {
  const { incidents, error } = useIncidents(all, version);
  return (
    <Card title="Recent alerts and kills" name="incidents">
      {error && <p class="error-text small">Could not read the logs: {error}</p>}
      {incidents.length === 0 ? (
        <Empty>No alerts, anomalies or kills.</Empty>
      ) : (
        <ul class="list incidents">
          {incidents.map((i) => (
            <li key={`${i.session}:${i.kind}:${i.seq ?? i.ts}`} data-incident={i.kind}>
              <span class={`kind kind-${i.kind}`}>{i.kind}</span>
              <a href={hrefOf({ view: "session", id: i.session })} class="mono">
                {i.session}
              </a>
              <span class="muted small">
                {" "}
                <Ago ts={i.ts} now={now} />
              </span>
              <div class="small">
                {i.rule && <Rule path={i.rule} />} {i.reason}
                {i.by && <span class="muted"> (by {i.by})</span>}
              </div>
            </li>
          ))}
        </ul>
      )}
    </Card>
  );
}

/** A row's part of the total; a part too small to show as 0.1% is not shown as none. */
function share(v: number, sum: number): string {
  if (!sum) return "";
  const pct = (v / sum) * 100;
  return v > 0 && pct < 0.05 ? "<0.1%" : `${pct.toFixed(1)}%`;
}

type RollupState = { kind: "loading" } | { kind: "unavailable"; why: string } | { kind: "error"; why: string } | { kind: "ok"; answer: AuditSpendAnswer };

/** The rollups offer the day, week and month windows of the filters' presets. */
const RANGES = TIME_RANGES.filter(([v]) => v === "24h" || v === "7d" || v === "30d");

/** Spend by agent, user, model or day: the audit store's rollups (GET /v1/audit/spend). */
function Rollups() {
  const [by, setBy] = useState<SpendBy>("agent");
  const [since, setSince] = useState<string>("7d");
  const [state, setState] = useState<RollupState>({ kind: "loading" });
  const [tick, setTick] = useState(0);

  useEffect(() => {
    const t = setInterval(() => setTick((n) => n + 1), 60_000);
    return () => clearInterval(t);
  }, []);

  useEffect(() => {
    const ctl = new AbortController();
    getJson(`/v1/audit/spend${qs({ by, since })}`, AuditSpendAnswer, ctl.signal)
      .then((answer) => setState({ kind: "ok", answer }))
      .catch((e) => {
        if (ctl.signal.aborted) return;
        if (e instanceof ApiError && [404, 501, 502, 503].includes(e.status)) setState({ kind: "unavailable", why: e.toString() });
        else setState({ kind: "error", why: String(e) });
      });
    return () => ctl.abort();
  }, [by, since, tick]);

  const rows = state.kind === "ok" ? [...state.answer.rows].sort((a, b) => (by === "day" ? String(b.key).localeCompare(String(a.key)) : b.spentUsd - a.spentUsd)) : [];
  const max = Math.max(0, ...rows.map((r) => r.spentUsd));
  const sum = rows.reduce((n, r) => n + r.spentUsd, 0);
  const d = decimalsFor(rows.map((r) => r.spentUsd));
  return (
    <Card
      title="Spend by"
      name="rollups"
      class="rollups"
      extra={
        <div class="controls">
          <div class="seg-control" role="tablist" aria-label="Group spend by">
            {SPEND_BY.map((b) => (
              <button key={b} type="button" role="tab" aria-selected={b === by} class={b === by ? "on" : ""} onClick={() => setBy(b)}>
                {b}
              </button>
            ))}
          </div>
          <select aria-label="Time range" value={since} onChange={(e) => setSince((e.target as HTMLSelectElement).value)}>
            <Options list={RANGES} />
          </select>
        </div>
      }
    >
      {state.kind === "loading" && <Empty>Loading…</Empty>}
      {state.kind === "unavailable" && (
        <div class="unavailable" data-audit="unavailable">
          <strong>Audit store not available.</strong>
          <p class="small muted">
            Rollups by agent, user, model and day come from the audit store, which this server does not reach right now ({state.why}). Live figures above come from the sessions themselves and are
            unaffected.
          </p>
        </div>
      )}
      {state.kind === "error" && <p class="error-text">{state.why}</p>}
      {state.kind === "ok" &&
        (rows.length === 0 ? (
          <Empty>No spend recorded in this range.</Empty>
        ) : (
          <div class="table-wrap">
            <table class="grid rollup-table" data-audit="rows">
              <thead>
                <tr>
                  <th>{by}</th>
                  <th class="num">spent</th>
                  <th class="num">calls</th>
                  <th class="share-col">share</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((r) => (
                  <tr key={String(r.key)}>
                    <td class="mono c-key">{r.key ?? <span class="muted">{by === "model" ? "(no model: tools, reported costs)" : "(none)"}</span>}</td>
                    <td class="num">
                      <Usd v={r.spentUsd} align={d} />
                    </td>
                    <td class="num">{r.calls}</td>
                    <td class="share-col">
                      <div class="bar">
                        <span class="fill" style={{ width: `${max ? (r.spentUsd / max) * 100 : 0}%` }} />
                      </div>
                      <span class="muted small">{share(r.spentUsd, sum)}</span>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ))}
    </Card>
  );
}
