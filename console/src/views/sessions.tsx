import { useEffect, useRef, useState } from "preact/hooks";
import type { SessionSummary } from "../../../schema/protocol";
import { SessionListAnswer } from "../../../schema/session-list";
import { ApiError, getJson, qs } from "../api";
import { clip } from "../format";
import { go, hrefOf, route } from "../route";
import { useNow, useObservable } from "../signal";
import { summaryListeners, tenantStatus } from "../tenant";
import { Ago, Card, Empty, Link, SpendBar, StateBadge, STATES, Usd, type StateName } from "../ui/bits";
import { isPreset, TimeRange } from "../ui/filters";
import { Pager, useCursors } from "../ui/pager";

// The tenant's sessions a page at a time from GET /v1/sessions (newest opened first, an
// order that updates never change), kept live by the tenant socket: rows on the page
// update in place, and a change that moves a session into or out of the filter reloads
// the page.

const SIZES = [25, 50, 100];

interface Filter {
  states: StateName[];
  agent: string;
  user: string;
  since: string;
  until: string;
  limit: number;
}

function filterOf(p: URLSearchParams): Filter {
  const states = (p.get("state") ?? "").split(",").filter((s): s is StateName => (STATES as readonly string[]).includes(s));
  const limit = Number(p.get("limit"));
  return { states, agent: p.get("agent") ?? "", user: p.get("user") ?? "", since: p.get("since") ?? "", until: p.get("until") ?? "", limit: SIZES.includes(limit) ? limit : SIZES[0] };
}

function paramsOf(f: Filter): URLSearchParams {
  const p = new URLSearchParams();
  if (f.states.length) p.set("state", f.states.join(","));
  if (f.agent) p.set("agent", f.agent);
  if (f.user) p.set("user", f.user);
  if (f.since) p.set("since", f.since);
  if (f.until) p.set("until", f.until);
  if (f.limit !== SIZES[0]) p.set("limit", String(f.limit));
  return p;
}

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1e3, m: 6e4, h: 36e5, d: 864e5 };
/** The same reading of since/until as the server's, for deciding whether a live update can matter. */
function instant(v: string, now: number): number | undefined {
  if (!v) return undefined;
  if (/^\d+$/.test(v)) return Number(v);
  const m = DURATION.exec(v);
  if (m) return now - Number(m[1]) * UNIT_MS[m[2]];
  const t = Date.parse(v);
  return Number.isFinite(t) ? t : undefined;
}

function matches(f: Filter, s: SessionSummary, now: number): boolean {
  const since = instant(f.since, now);
  const until = instant(f.until, now);
  return (!f.states.length || f.states.includes(s.state)) && (!f.agent || s.agent === f.agent) && (!f.user || s.user === f.user) && (since === undefined || s.openedAt >= since) && (until === undefined || s.openedAt < until);
}

export function Sessions({ params }: { params: URLSearchParams }) {
  const filter = filterOf(params);
  const key = paramsOf(filter).toString();
  const pages = useCursors();
  const [page, setPage] = useState<SessionListAnswer | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const [reload, setReload] = useState(0);
  const [newer, setNewer] = useState(0);
  const status = useObservable(tenantStatus);
  const now = useNow(5000);
  const rows = useRef(new Map<string, SessionSummary>());
  const [, rerender] = useState(0);

  // A new filter starts again from the newest session.
  useEffect(() => {
    pages.reset();
    setNewer(0);
  }, [key]);

  const { cursor } = pages;
  useEffect(() => {
    const ctl = new AbortController();
    setLoading(true);
    const q = { limit: filter.limit, state: filter.states.join(","), agent: filter.agent, user: filter.user, since: filter.since, until: filter.until, cursor };
    getJson(`/v1/sessions${qs(q)}`, SessionListAnswer, ctl.signal)
      .then((answer) => {
        rows.current = new Map(answer.sessions.map((s) => [s.session, s]));
        setPage(answer);
        setError(null);
        setLoading(false);
      })
      .catch((e) => {
        if (ctl.signal.aborted) return;
        setError(e instanceof ApiError ? e.toString() : String(e));
        setLoading(false);
      });
    return () => ctl.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, cursor, reload]);

  // Live: rows update in place; membership changes reload this page (debounced).
  useEffect(() => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const again = () => {
      clearTimeout(timer);
      timer = setTimeout(() => setReload((n) => n + 1), 400);
    };
    const onSummary = (s: SessionSummary) => {
      const shown = rows.current.get(s.session);
      const fits = matches(filter, s, Date.now());
      if (shown) {
        if (s.seq < shown.seq) return;
        rows.current.set(s.session, s);
        rerender((n) => n + 1);
        if (!fits) again();
        return;
      }
      if (!fits || !page) return;
      const last = page.sessions[page.sessions.length - 1];
      const onFirstPage = pages.index === 0;
      const belongsHere = page.sessions.length < filter.limit || (last && (s.openedAt > last.openedAt || (s.openedAt === last.openedAt && s.session < last.session)));
      if (onFirstPage && belongsHere) again();
      else if (!onFirstPage && last && s.openedAt > page.sessions[0].openedAt) setNewer((n) => n + 1);
      else if (belongsHere) again();
    };
    summaryListeners.add(onSummary);
    return () => {
      summaryListeners.delete(onSummary);
      clearTimeout(timer);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, page, pages.index]);

  // Patched onto the filter as the route holds it now, not as this render saw it: two
  // changes in a row (a chip, then a typed name) can come before the render between them.
  const set = (patch: Partial<Filter>) => {
    const now = route.value;
    const base = now.view === "sessions" ? filterOf(now.params) : filter;
    go({ view: "sessions", params: paramsOf({ ...base, ...patch }) }, { replace: true });
  };
  const shown = page ? page.sessions.map((s) => rows.current.get(s.session) ?? s) : [];
  const first = pages.index * filter.limit;

  return (
    <Card
      title="Sessions"
      name="sessions"
      class="sessions-card"
      extra={
        <>
          <span class="muted small" id="sessions-total">
            {page ? `${page.total} match${page.total === 1 ? "" : "es"}` : ""}
          </span>
          <span class="spacer" />
          <Link status={status} label="live updates from the tenant socket" />
        </>
      }
    >
      <Filters filter={filter} set={set} />

      {newer > 0 && (
        <button type="button" class="newer" onClick={() => (pages.reset(), setNewer(0))}>
          {newer} newer session{newer === 1 ? "" : "s"} · back to the newest
        </button>
      )}
      {error && <p class="error-text">{error}</p>}

      {page && shown.length === 0 && !loading && <Empty>{key ? "No session matches these filters." : "No sessions yet. Open one with POST /v1/sessions."}</Empty>}
      {shown.length > 0 && (
        <div class="table-wrap">
          <table class={`grid sessions${loading ? " loading" : ""}`} id="sessions-table">
            <thead>
              <tr>
                <th>Session</th>
                <th>State</th>
                <th>Spend / budget</th>
                <th>Agent</th>
                <th>User</th>
                <th>Opened</th>
                <th>Last activity</th>
                <th class="num" title="Pending approvals">
                  Approvals
                </th>
              </tr>
            </thead>
            <tbody id="sessions-body">
              {shown.map((s) => (
                <Row key={s.session} s={s} now={now} />
              ))}
            </tbody>
          </table>
        </div>
      )}

      {page && (
        <Pager label="Pages" pages={pages} next={page.nextCursor} loading={loading} back={["page-newer", "← Newer"]} forward={["page-older", "Older →"]}>
          <span class="muted small" id="page-range">
            {shown.length ? `${first + 1}–${first + shown.length}` : "0"} of {page.total}
          </span>
          <label class="small">
            <span class="muted">per page</span>
            <select value={filter.limit} onChange={(e) => set({ limit: Number((e.target as HTMLSelectElement).value) })}>
              {SIZES.map((n) => (
                <option key={n} value={n}>
                  {n}
                </option>
              ))}
            </select>
          </label>
        </Pager>
      )}
    </Card>
  );
}

/** State chips, agent and user, opening time: all kept in the link. */
function Filters({ filter, set }: { filter: Filter; set: (patch: Partial<Filter>) => void }) {
  const [showCustom, setShowCustom] = useState(!isPreset(filter.since, filter.until));
  const any = paramsOf({ ...filter, limit: SIZES[0] }).toString() !== "";
  return (
    <form class="filters" onSubmit={(e) => e.preventDefault()} aria-label="Filter sessions">
      <fieldset class="chips" aria-label="State">
        {STATES.map((st) => {
          const on = filter.states.includes(st);
          return (
            <button key={st} type="button" class={`chip state-${st}${on ? " on" : ""}`} aria-pressed={on} data-filter-state={st} onClick={() => set({ states: on ? filter.states.filter((x) => x !== st) : [...filter.states, st] })}>
              {st}
            </button>
          );
        })}
      </fieldset>
      <div class="fields">
        <TextFilter label="Agent" name="agent" value={filter.agent} onCommit={(agent) => set({ agent })} />
        <TextFilter label="User" name="user" value={filter.user} onCommit={(user) => set({ user })} />
        <TimeRange
          labels={["Opened", "From", "Until"]}
          since={filter.since}
          until={filter.until}
          custom={showCustom}
          onPick={(v) => {
            setShowCustom(v === "custom");
            if (v !== "custom") set({ since: v, until: "" });
          }}
          onSince={(since) => set({ since })}
          onUntil={(until) => set({ until })}
        />
        {any && (
          <button type="button" class="ghost clear" onClick={() => (setShowCustom(false), set({ states: [], agent: "", user: "", since: "", until: "" }))}>
            Clear filters
          </button>
        )}
      </div>
    </form>
  );
}

function TextFilter({ label, name, value, onCommit }: { label: string; name: string; value: string; onCommit: (v: string) => void }) {
  const [text, setText] = useState(value);
  useEffect(() => setText(value), [value]);
  // Read the field itself: a commit can come before the render that follows the last keystroke.
  const commit = (el: HTMLInputElement) => {
    const v = el.value.trim();
    if (v !== value) onCommit(v);
  };
  return (
    <label>
      {label}
      <input
        type="search"
        name={name}
        value={text}
        placeholder="exact name"
        autoComplete="off"
        onInput={(e) => setText((e.target as HTMLInputElement).value)}
        onBlur={(e) => commit(e.currentTarget as HTMLInputElement)}
        onKeyDown={(e) => e.key === "Enter" && (e.preventDefault(), commit(e.currentTarget as HTMLInputElement))}
      />
    </label>
  );
}

function Row({ s, now }: { s: SessionSummary; now: number }) {
  const open = () => go({ view: "session", id: s.session });
  return (
    <tr data-session={s.session} data-state={s.state} onClick={(e) => !(e.target as HTMLElement).closest("a") && open()}>
      <td data-label="Session" class="c-id">
        <a href={hrefOf({ view: "session", id: s.session })} class="mono strong">
          {s.session}
        </a>
        {s.task && <div class="muted small">{clip(s.task, 80)}</div>}
      </td>
      <td data-label="State" class="c-state">
        <StateBadge state={s.state} />
      </td>
      <td data-label="Spend" class="c-spend">
        <div class="money">
          <Usd v={s.spentUsd} />
          <span class="muted"> / {s.budgetUsd == null ? "no budget" : <Usd v={s.budgetUsd} />}</span>
        </div>
        <SpendBar s={s} />
      </td>
      <td data-label="Agent" class="c-agent">
        {s.agent ?? <span class="muted">–</span>}
      </td>
      <td data-label="User" class="c-user">
        {s.user ?? <span class="muted">–</span>}
      </td>
      <td data-label="Opened" class="c-opened">
        <Ago ts={s.openedAt} now={now} />
      </td>
      <td data-label="Last activity" class="c-last">
        <Ago ts={s.lastActivity} now={now} />
      </td>
      <td data-label="Pending approvals" class={`num c-approvals${s.pendingApprovals.length ? "" : " none"}`}>
        {s.pendingApprovals.length ? <span class="count hot">{s.pendingApprovals.length}</span> : <span class="muted">0</span>}
      </td>
    </tr>
  );
}
