import { useEffect, useState } from "preact/hooks";
import { GovernorEvent } from "../../../schema/events";
import { ApiError, download, getJson, qs } from "../api";
import { banner } from "../banners";
import { config } from "../config";
import { describe, tone } from "../describe";
import { clock, decimalsFor, stamp } from "../format";
import { go, hrefOf } from "../route";
import { AuditEventsAnswer, type AuditEventItem } from "../schemas";
import { sizeOf } from "../ui/args";
import { Card, Empty, Rule, Usd } from "../ui/bits";
import { isPreset, Options, TimeRange } from "../ui/filters";
import { Pager, useCursors } from "../ui/pager";
import { WhatIf } from "./whatif";

// The audit store, searched: who did what, when, and what was decided, across every
// session of the tenant (GET /v1/audit/events, paged by the store's cursor), exported as
// CSV, and a what-if replay of one session under another policy. The filters live in the
// link (`#audit?user=…`), so a search can be shared.

const FIELDS = ["user", "agent", "session"] as const;
const TYPES = [
  ["", "any type"],
  ["action.checked", "tool actions"],
  ["request.reserved,request.settled,request.denied", "LLM calls"],
  ["approval.requested,approval.granted,approval.denied", "approvals"],
  ["alert.raised,anomaly.detected,violation.recorded", "alerts, anomalies, violations"],
  ["error.recorded", "tool errors"],
  ["session.opened,session.killed,session.closed", "sessions opened and ended"],
] as const;
const DECISIONS = [
  ["", "any decision"],
  ["allow", "allowed"],
  ["deny", "refused"],
  ["review", "sent to review"],
] as const;
const PAGE = 50;
/** What the search takes from the link; `whatif` belongs to the replay panel. */
const SEARCHED = [...FIELDS, "type", "decision", "since", "until"] as const;

type Filters = Record<(typeof SEARCHED)[number], string>;

function filtersOf(p: URLSearchParams): Filters {
  return Object.fromEntries(SEARCHED.map((k) => [k, p.get(k) ?? ""])) as Filters;
}

function paramsOf(f: Filters, keep: URLSearchParams): URLSearchParams {
  const p = new URLSearchParams();
  for (const k of SEARCHED) if (f[k]) p.set(k, f[k]);
  const w = keep.get("whatif");
  if (w) p.set("whatif", w);
  return p;
}

export function Audit({ params }: { params: URLSearchParams }) {
  const applied = filtersOf(params);
  const key = SEARCHED.map((k) => applied[k]).join("\u0000");
  const [draft, setDraft] = useState<Filters>(applied);
  const pages = useCursors();
  const [page, setPage] = useState<AuditEventsAnswer | null>(null);
  const [error, setError] = useState<{ text: string; unavailable: boolean } | null>(null);
  const [loading, setLoading] = useState(false);
  const [exporting, setExporting] = useState(false);
  const [customMode, setCustom] = useState(false);
  const custom = customMode || !isPreset(draft.since, draft.until);

  useEffect(() => {
    setDraft(applied);
    setCustom(false);
    pages.reset();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);

  const { cursor } = pages;
  useEffect(() => {
    const ctl = new AbortController();
    setLoading(true);
    getJson(`/v1/audit/events${qs({ ...applied, limit: PAGE, cursor })}`, AuditEventsAnswer, ctl.signal)
      .then((answer) => {
        setPage(answer);
        setError(null);
        setLoading(false);
      })
      .catch((e) => {
        if (ctl.signal.aborted) return;
        setError({ text: e instanceof ApiError ? e.toString() : String(e), unavailable: e instanceof ApiError && [404, 501, 502, 503].includes(e.status) });
        setLoading(false);
      });
    return () => ctl.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, cursor]);

  const apply = (f: Filters) => go({ view: "audit", params: paramsOf(f, params) });
  const set = (k: keyof Filters, v: string) => setDraft({ ...draft, [k]: v });

  async function exportCsv() {
    setExporting(true);
    try {
      const saved = await download(`/v1/audit/export${qs({ ...applied, format: "csv" })}`, `governor-audit-${config.tenant}.csv`);
      banner(`Saved ${saved.name} (${sizeOf(saved.bytes)})`, "info");
    } catch (e) {
      banner(e instanceof ApiError ? e.toString() : String(e));
    }
    setExporting(false);
  }

  const first = pages.index * PAGE + 1;
  const events = page?.events ?? [];
  return (
    <div class="audit">
      <Card title="Search the audit store" name="audit-search" extra={<span class="muted small">every session's log, verified and stored; oldest first</span>}>
        <form
          class="filters audit-filters"
          id="audit-form"
          onSubmit={(e) => {
            e.preventDefault();
            apply(draft);
          }}
        >
          <div class="fields">
            {FIELDS.map((k) => (
              <label key={k}>
                {k}
                <input name={k} value={draft[k]} autoComplete="off" spellcheck={false} placeholder={`any ${k}`} onInput={(e) => set(k, (e.target as HTMLInputElement).value.trim())} />
              </label>
            ))}
            <label>
              type
              <select name="type" value={draft.type} onChange={(e) => set("type", (e.target as HTMLSelectElement).value)}>
                <Options list={TYPES} />
                {draft.type && !TYPES.some(([v]) => v === draft.type) && <option value={draft.type}>{draft.type}</option>}
              </select>
            </label>
            <label>
              decision
              <select name="decision" value={draft.decision} onChange={(e) => set("decision", (e.target as HTMLSelectElement).value)}>
                <Options list={DECISIONS} />
              </select>
            </label>
            <TimeRange
              labels={["time", "from", "until"]}
              since={draft.since}
              until={draft.until}
              custom={custom}
              onPick={(v) => {
                setCustom(v === "custom");
                if (v !== "custom") setDraft({ ...draft, since: v, until: "" });
              }}
              onSince={(v) => set("since", v)}
              onUntil={(v) => set("until", v)}
            />
          </div>
          <div class="form-actions">
            <button type="submit" class="primary" id="audit-search">
              Search
            </button>
            <button type="button" class="ghost clear" onClick={() => apply({ user: "", agent: "", session: "", type: "", decision: "", since: "", until: "" })}>
              Clear
            </button>
            <span class="spacer" />
            <button type="button" id="audit-export" onClick={exportCsv} disabled={exporting || !!error?.unavailable} title="Every event matching these filters, as CSV">
              {exporting ? "Exporting…" : "Export CSV"}
            </button>
          </div>
        </form>

        {error?.unavailable ? (
          <div class="unavailable" data-audit="unavailable">
            <strong>Audit store not available.</strong>
            <p class="small muted">The search reads the audit store, which this server does not reach right now ({error.text}). Each session's own log is still on its page.</p>
          </div>
        ) : error ? (
          <p class="error-text">{error.text}</p>
        ) : null}
        {!error && page && (events.length === 0 ? <Empty>No event matches.</Empty> : <Results events={events} loading={loading} />)}
        {!error && (
          <Pager label="Audit pages" pages={pages} next={page?.nextCursor} loading={loading} back={["audit-prev", "← Earlier"]} forward={["audit-next", "Later →"]}>
            <span class="muted small" id="audit-range">
              {page ? (events.length ? `events ${first}–${first + events.length - 1}${page.nextCursor ? "" : " (the last)"}` : "no events") : "searching…"}
            </span>
          </Pager>
        )}
      </Card>
      <WhatIf params={params} />
    </div>
  );
}

function Results({ events, loading }: { events: AuditEventItem[]; loading: boolean }) {
  const d = decimalsFor(events.map((e) => e.costUsd));
  return (
    <div class="table-wrap">
      <table class={`grid compact audit-events${loading ? " loading" : ""}`} id="audit-results">
        <thead>
          <tr>
            <th>Time</th>
            <th>Session</th>
            <th>Type</th>
            <th>Who</th>
            <th>What</th>
            <th>Decision</th>
            <th class="num">Cost</th>
          </tr>
        </thead>
        <tbody>
          {events.map((e) => (
            <Row key={`${e.session}#${e.seq}`} e={e} d={d} />
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** The time of day, with the date when it is not today. */
function when(ts: number): string {
  const d = new Date(ts);
  const today = new Date().toDateString() === d.toDateString();
  return today ? clock(ts) : `${d.toLocaleDateString([], { month: "short", day: "numeric", year: d.getFullYear() === new Date().getFullYear() ? undefined : "numeric" })} ${clock(ts)}`;
}

function Row({ e, d }: { e: AuditEventItem; d: number }) {
  const parsed = GovernorEvent.safeParse(e.event);
  const what = parsed.success ? describe(parsed.data) : [e.action, e.model].filter(Boolean).join(" · ") || e.type;
  return (
    <tr data-event={`${e.session}#${e.seq}`} data-type={e.type} data-user={e.user ?? ""}>
      <td class="nowrap c-time" data-label="Time" title={stamp(e.ts)}>
        {when(e.ts)}
      </td>
      <td class="mono c-session" data-label="Session">
        <a href={hrefOf({ view: "session", id: e.session })}>{e.session}</a> <span class="muted">#{e.seq}</span>
      </td>
      <td class="c-type" data-label="Type">
        <span class={`etype ${tone(e.type)}`}>{e.type}</span>
      </td>
      <td class="c-who" data-label="Who">
        {e.user && <span class="who-user">{e.user}</span>}
        {e.agent && <span class="muted who-agent">{e.agent}</span>}
        {!e.user && !e.agent && <span class="muted">–</span>}
      </td>
      <td class="what c-what" data-label="What">
        <details>
          <summary>{what}</summary>
          <pre class="event-json">{JSON.stringify(e.event, null, 2)}</pre>
        </details>
      </td>
      <td class="c-decision" data-label="Decision">
        {e.decision ? <span class={`decision d-${e.decision}`}>{e.decision}</span> : <span class="muted">–</span>}
        {e.rule && (
          <div class="small">
            <Rule path={e.rule} />
          </div>
        )}
      </td>
      <td class="num c-cost" data-label="Cost">
        {e.costUsd ? <Usd v={e.costUsd} align={d} /> : <span class="muted">–</span>}
      </td>
    </tr>
  );
}
