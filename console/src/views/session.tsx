import { useEffect, useMemo, useState } from "preact/hooks";
import type { GovernorEvent } from "../../../schema/events";
import { cause, describe, tone } from "../describe";
import { HISTORY_CAP, SessionFeed, type Step } from "../feed";
import { clock, stamp, timeLeft } from "../format";
import { hrefOf } from "../route";
import { useNow, useObservable } from "../signal";
import { ApprovalCard } from "../ui/approval";
import { Ago, Card, Count, Empty, Link, Rule, SpendBar, Stat, StateBadge, STATES, Usd, type StateName } from "../ui/bits";
import { TimeChart } from "../ui/chart";
import { KillButton } from "../ui/kill";
import { mayDecide } from "../config";
import { ToolActivity } from "./tools";

const LOG_PAGE = 50;

export function SessionDetail({ id }: { id: string }) {
  const feed = useMemo(() => new SessionFeed(id), [id]);
  useEffect(() => () => feed.close(), [feed]);
  useObservable(feed.version);
  const now = useNow(1000);
  const s = feed.summary;
  const state = (s?.state ?? feed.path.at(-1)?.state) as StateName | undefined;
  const over = state === "killed" || state === "closed";

  return (
    <div class="detail" data-session-detail={id}>
      <div class="detail-head card">
        <div class="title-row">
          <a href={hrefOf({ view: "sessions", params: new URLSearchParams() })} class="back" aria-label="Back to sessions">
            ←
          </a>
          <h2 class="mono" id="detail-title">
            {id}
          </h2>
          <span id="detail-badge">{state && <StateBadge state={state} />}</span>
          <span class="head-actions">
            <Link status={feed.status} label="the session socket" />
            <a class="button" href={hrefOf({ view: "audit", params: new URLSearchParams({ whatif: id }) })} id="whatif-link" title="Decide this session again under another policy">
              What-if…
            </a>
            {mayDecide() && <KillButton session={id} disabled={!s || over} />}
          </span>
        </div>
        {s && (
          <p class="meta muted">
            {s.agent && (
              <>
                agent <strong>{s.agent}</strong> ·{" "}
              </>
            )}
            {s.user && (
              <>
                user <strong>{s.user}</strong> ·{" "}
              </>
            )}
            opened <span title={stamp(s.openedAt)}>{stamp(s.openedAt)}</span> · last activity <Ago ts={s.lastActivity} now={now} /> · {s.seq} events
            {s.task && <span class="task"> · {s.task}</span>}
          </p>
        )}
        {s?.killed && (
          <div class="killed-note">
            <strong>Killed</strong> by {s.killed.by} <Ago ts={s.killed.at} now={now} />: {s.killed.reason}
            {s.killed.rule && <span class="muted"> (rule <Rule path={s.killed.rule} />)</span>}
          </div>
        )}
        {feed.error && <p class="error-text">{feed.error}</p>}
      </div>

      {s && <Money s={s} />}

      <div class="grid-2-1">
        <Card title="Spend and reserved over time" name="session-chart" extra={<ChainNote feed={feed} />}>
          {feed.loading && !feed.points.length ? (
            <Empty>Reading the log…</Empty>
          ) : (
            <TimeChart
              name="session-spend"
              minSpan={60}
              anchor="start"
              data={[
                [...feed.points.map((p) => p.ts), ...(over ? [] : [Math.max(now, (feed.points.at(-1)?.ts ?? now) + 1000)])],
                [...feed.points.map((p) => p.spentUsd), ...(over ? [] : [feed.points.at(-1)?.spentUsd ?? 0])],
                [...feed.points.map((p) => p.reservedUsd), ...(over ? [] : [feed.points.at(-1)?.reservedUsd ?? 0])],
              ]}
              series={[
                { label: "spent", color: "#2563eb", fill: "rgba(37, 99, 235, 0.08)" },
                { label: "reserved", color: "#a855f7", dash: [5, 4] },
              ]}
            />
          )}
          {feed.truncated && <p class="small muted">The chart and the log below cover the first {HISTORY_CAP.toLocaleString()} events; export the log for the rest.</p>}
        </Card>
        <Card title="State machine" name="machine">
          <Machine path={feed.path} current={state} />
        </Card>
      </div>

      {s && s.pendingApprovals.length > 0 && (
        <Card title={<>Pending approvals <Count n={s.pendingApprovals.length} hot /></>} name="session-approvals">
          <div class="approvals">
            {s.pendingApprovals.map((a) => (
              <ApprovalCard key={a.approvalId} session={s} a={a} now={now} showSession={false} />
            ))}
          </div>
        </Card>
      )}

      <div class="grid-1-1">
        <Alerts events={feed.events} />
        <Card title={<>Reservations <Count n={s?.reservations.length ?? 0} /></>} name="reservations">
          {!s || s.reservations.length === 0 ? (
            <Empty>No call or action holds a reservation.</Empty>
          ) : (
            <div class="table-wrap">
              <table class="grid compact reservations">
                <thead>
                  <tr>
                    <th>Request</th>
                    <th>Kind</th>
                    <th>Model</th>
                    <th class="num">Estimate</th>
                    <th>Expires in</th>
                  </tr>
                </thead>
                <tbody>
                  {s.reservations.map((r) => (
                    <tr key={r.requestId}>
                      <td class="mono c-request" data-label="Request">
                        {r.requestId}
                      </td>
                      <td data-label="Kind">{r.kind}</td>
                      <td data-label="Model">{r.model ?? "–"}</td>
                      <td class="num" data-label="Estimate">
                        <Usd v={r.estimateUsd} />
                      </td>
                      <td class="nowrap" data-label="Expires in">
                        {timeLeft(r.expiresAt, now)}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </Card>
      </div>

      <ToolActivity events={feed.events} version={feed.version.value} />

      <EventLog events={feed.events} version={feed.version.value} />
    </div>
  );
}

function Money({ s }: { s: NonNullable<SessionFeed["summary"]> }) {
  const overrun = s.overrunUsd ?? 0;
  const overBudget = s.overBudgetUsd ?? 0;
  // Each figure exact (format.ts), so spent + reserved + remaining, as shown, is the budget.
  const c = s.counters;
  return (
    <div class="card money-card" data-card="money">
      <div class="tiles">
        <Stat label="Spent" name="spent" value={<Usd v={s.spentUsd} />}>
          <SpendBar s={s} />
        </Stat>
        <Stat label="Reserved" name="reserved" value={<Usd v={s.reservedUsd} />} hint="Calls in flight and actions awaiting approval, at their worst case" />
        <Stat label="Remaining" name="remaining" value={s.remainingUsd == null ? "no limit" : <Usd v={s.remainingUsd} />} />
        <Stat label="Budget" name="budget" value={s.budgetUsd == null ? "none" : <Usd v={s.budgetUsd} />} />
      </div>
      {(overrun > 0 || overBudget > 0) && (
        <p class="money-note" data-note="overrun">
          {overrun > 0 && (
            <span data-stat="overrun">
              <strong>
                <Usd v={overrun} />
              </strong>{" "}
              overrun: settled above what was reserved (the estimate was not an upper bound)
            </span>
          )}
          {overBudget > 0 && s.budgetUsd != null && (
            <span data-stat="over-budget">
              <strong>
                <Usd v={overBudget} />
              </strong>{" "}
              over budget: spent <Usd v={s.spentUsd} /> = budget <Usd v={s.budgetUsd} /> + <Usd v={overBudget} />
            </span>
          )}
        </p>
      )}
      <dl class="counters">
        {(
          [
            ["LLM calls", c.llmCalls],
            ["actions", c.actions],
            ["allowed", c.allowed],
            ["denied", c.denied],
            ["reviews", c.reviews],
            ["violations", c.violations],
            ["alerts", c.alerts],
            ["anomalies", c.anomalies],
            ["errors", c.errors],
          ] as const
        ).map(([k, v]) => (
          <div key={k}>
            <dt>{k}</dt>
            <dd>{v}</dd>
          </div>
        ))}
      </dl>
    </div>
  );
}

function ChainNote({ feed }: { feed: SessionFeed }) {
  if (!feed.chain.ok) return <span class="chain bad" title={feed.chain.reason}>chain broken at #{feed.chain.seq}</span>;
  if (!feed.chain.through) return null;
  return (
    <span class="chain ok" title="Every event's hash and link to the one before were checked in this browser">
      hash chain checked through #{feed.chain.through}
    </span>
  );
}

/** The five states, where this session has been, and the path it took with the reason for each step. */
function Machine({ path, current }: { path: Step[]; current?: StateName }) {
  const visits = new Map<string, number>();
  for (const p of path) visits.set(p.state, (visits.get(p.state) ?? 0) + 1);
  return (
    <div class="machine-wrap">
      <ol class="machine" aria-label="States">
        {STATES.map((st) => (
          <li key={st} class={`node state-${st}${visits.has(st) ? " visited" : ""}${current === st ? " current" : ""}`} aria-current={current === st ? "step" : undefined} data-node={st}>
            {st}
            {visits.has(st) && <span class="visits">×{visits.get(st)}</span>}
          </li>
        ))}
      </ol>
      <ol class="path" aria-label="Path taken">
        {path.map((p) => (
          <li key={p.seq} data-step={p.state}>
            <StateBadge state={p.state} />
            <span class="muted small">
              #{p.seq} · {clock(p.ts)}
            </span>
            <div class="small cause">{cause(p.cause)}</div>
          </li>
        ))}
      </ol>
    </div>
  );
}

const NOTABLE = new Set(["alert.raised", "anomaly.detected", "violation.recorded", "session.killed", "request.denied"]);

function Alerts({ events }: { events: GovernorEvent[] }) {
  const notable = events.filter((e) => NOTABLE.has(e.type) && (e.type !== "request.denied" || e.data.code !== "awaiting_approval"));
  const shown = notable.slice(-30).reverse();
  return (
    <Card title={<>Alerts, anomalies and refusals <Count n={notable.length} /></>} name="session-alerts">
      {shown.length === 0 ? (
        <Empty>No alert, anomaly, violation or refusal.</Empty>
      ) : (
        <ul class="list incidents">
          {shown.map((e) => (
            <li key={e.seq} data-alert-type={e.type}>
              <span class={`kind kind-${e.type.split(".")[0]}`}>{e.type}</span>
              <span class="muted small">
                #{e.seq} · {clock(e.ts)}
              </span>
              <div class="small">{describe(e)}</div>
            </li>
          ))}
        </ul>
      )}
    </Card>
  );
}

function EventLog({ events, version }: { events: GovernorEvent[]; version: number }) {
  const [type, setType] = useState("");
  const [page, setPage] = useState(0);
  const types = useMemo(() => [...new Set(events.map((e) => e.type))].sort(), [events.length, version]);
  const list = type ? events.filter((e) => e.type === type) : events;
  const pages = Math.max(1, Math.ceil(list.length / LOG_PAGE));
  const p = Math.min(page, pages - 1);
  // Newest first.
  const end = list.length - p * LOG_PAGE;
  const shown = list.slice(Math.max(0, end - LOG_PAGE), end).reverse();
  return (
    <Card
      title={<>Event log <Count n={events.length} /></>}
      name="event-log"
      extra={
        <select
          aria-label="Event type"
          value={type}
          onChange={(e) => {
            setType((e.target as HTMLSelectElement).value);
            setPage(0);
          }}
        >
          <option value="">all types</option>
          {types.map((t) => (
            <option key={t} value={t}>
              {t}
            </option>
          ))}
        </select>
      }
    >
      <div class="table-wrap">
        <table class="grid compact events" id="events">
          <thead>
            <tr>
              <th class="num">Seq</th>
              <th>Time</th>
              <th>Type</th>
              <th>What</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((e) => (
              <tr key={e.seq} data-type={e.type} data-seq={e.seq}>
                <td class="num mono">{e.seq}</td>
                <td class="nowrap" title={stamp(e.ts)}>
                  {clock(e.ts)}
                </td>
                <td>
                  <span class={`etype ${tone(e.type)}`}>{e.type}</span>
                </td>
                <td class="what">
                  <details>
                    <summary>{describe(e)}</summary>
                    <pre class="event-json">{JSON.stringify(e, null, 2)}</pre>
                  </details>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <nav class="pager" aria-label="Event pages">
        <span class="muted small" id="log-range">
          {list.length ? `${list.length - end + 1}–${list.length - Math.max(0, end - LOG_PAGE)} of ${list.length}, newest first` : "no events"}
        </span>
        <span class="spacer" />
        <button type="button" id="log-newer" disabled={p === 0} onClick={() => setPage(p - 1)}>
          ← Newer
        </button>
        <button type="button" id="log-older" disabled={p >= pages - 1} onClick={() => setPage(p + 1)}>
          Older →
        </button>
      </nav>
    </Card>
  );
}
