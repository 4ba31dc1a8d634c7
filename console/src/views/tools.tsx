import { useMemo } from "preact/hooks";
import type { EventOf, GovernorEvent } from "../../../schema/events";
import { clock, decimalsFor } from "../format";
import { Card, Count, Empty, Rule, Usd } from "../ui/bits";

// A session's tools as its log tells it: each action with how it was asked for (HTTP, the
// session socket, or an MCP client through /v1/mcp), what was decided, what it cost and how
// often it failed; then the failures themselves and the loops they made.

interface ToolRow {
  action: string;
  sources: Set<string>;
  calls: number;
  allowed: number;
  denied: number;
  review: number;
  costUsd: number;
  errors: number;
  lastError?: string;
}

const ERRORS_SHOWN = 12;

function tally(events: GovernorEvent[]) {
  const rows = new Map<string, ToolRow>();
  const row = (action: string) => {
    let r = rows.get(action);
    if (!r) rows.set(action, (r = { action, sources: new Set(), calls: 0, allowed: 0, denied: 0, review: 0, costUsd: 0, errors: 0 }));
    return r;
  };
  const errors: Array<EventOf<"error.recorded">> = [];
  const loops: Array<EventOf<"anomaly.detected">> = [];
  for (const e of events) {
    if (e.type === "action.checked") {
      const r = row(e.data.action);
      r.calls++;
      r.sources.add(e.data.source ?? "http");
      r[e.data.decision === "allow" ? "allowed" : e.data.decision === "deny" ? "denied" : "review"]++;
      if (e.data.decision === "allow") r.costUsd += e.data.costUsd;
    } else if (e.type === "error.recorded") {
      errors.push(e);
      if (e.data.source === "tool") {
        const r = row(e.data.action ?? "(no action named)");
        r.errors++;
        r.lastError = e.data.code ?? e.data.message;
      }
    } else if (e.type === "anomaly.detected" && e.data.kind !== "runaway") loops.push(e);
  }
  return { rows: [...rows.values()].sort((a, b) => b.calls - a.calls || a.action.localeCompare(b.action)), errors, loops };
}

export function ToolActivity({ events, version }: { events: GovernorEvent[]; version: number }) {
  // Recounted when the log grows, not on every render.
  const { rows, errors, loops } = useMemo(() => tally(events), [events.length, version]);
  const d = decimalsFor(rows.map((r) => r.costUsd));
  return (
    <Card title={<>Tools, MCP calls and errors <Count n={rows.length} /></>} name="tools">
      {rows.length === 0 && errors.length === 0 ? (
        <Empty>No tool action or error recorded.</Empty>
      ) : (
        <>
          {rows.length > 0 && (
            <div class="table-wrap">
              <table class="grid compact tools-table" id="tools">
                <thead>
                  <tr>
                    <th>Action</th>
                    <th>Via</th>
                    <th class="num">Calls</th>
                    <th class="num">Allowed</th>
                    <th class="num">Refused</th>
                    <th class="num">Review</th>
                    <th class="num">Errors</th>
                    <th class="num">Cost</th>
                  </tr>
                </thead>
                <tbody>
                  {rows.map((r) => (
                    <tr key={r.action} data-tool={r.action}>
                      <td class="mono c-action" data-label="Action">
                        {r.action}
                      </td>
                      <td class="c-via" data-label="Via">
                        {[...r.sources].sort().map((s) => (
                          <span key={s} class={`source source-${s}`} data-source={s}>
                            {s}
                          </span>
                        ))}
                      </td>
                      <td class="num" data-label="Calls">
                        {r.calls}
                      </td>
                      <td class="num" data-label="Allowed">
                        {r.allowed}
                      </td>
                      <td class={`num${r.denied ? " bad-text" : ""}`} data-label="Refused">
                        {r.denied}
                      </td>
                      <td class="num" data-label="Review">
                        {r.review}
                      </td>
                      <td class={`num${r.errors ? " bad-text" : ""}`} data-label="Errors" title={r.lastError ? `last: ${r.lastError}` : undefined}>
                        {r.errors}
                      </td>
                      <td class="num" data-label="Cost">
                        <Usd v={r.costUsd} align={d} />
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
          {loops.length > 0 && (
            <ul class="list incidents loops">
              {loops.map((e) => (
                <li key={e.seq} data-loop={e.data.kind}>
                  <span class="kind kind-anomaly">{e.data.kind === "repeat_call" ? "repeated call" : "repeated error"}</span>
                  <span class="muted small">
                    #{e.seq} · {clock(e.ts)} · {e.data.onDetect}
                  </span>
                  <div class="small">
                    {e.data.rule && <Rule path={e.data.rule} />} {e.data.reason}
                    {e.data.count !== undefined && <span class="muted"> ({e.data.count} times{e.data.action ? `, ${e.data.action}` : ""})</span>}
                  </div>
                </li>
              ))}
            </ul>
          )}
          {errors.length > 0 && (
            <>
              <h3 class="sub-head">
                Errors <Count n={errors.length} />
              </h3>
              <ul class="list errors small" id="tool-errors">
                {errors
                  .slice(-ERRORS_SHOWN)
                  .reverse()
                  .map((e) => (
                    <li key={e.seq} data-error-seq={e.seq}>
                      <span class="muted">
                        #{e.seq} · {clock(e.ts)}
                      </span>{" "}
                      <span class="mono">{e.data.action ?? (e.data.source === "llm" ? "model call" : "tool")}</span>
                      {e.data.code && <code class="rule">{e.data.code}</code>}
                      {e.data.message ? <span> {e.data.message}</span> : <span class="muted" title={e.data.signature}> signature {e.data.signature.slice(0, 12)}…</span>}
                    </li>
                  ))}
              </ul>
            </>
          )}
        </>
      )}
    </Card>
  );
}
