import { useEffect, useState } from "preact/hooks";
import type { WhatIfDifference, WhatIfKill, WhatIfOutcome } from "../../../schema/whatif";
import { ApiError, postText } from "../api";
import { clock, stamp } from "../format";
import { go, hrefOf } from "../route";
import { WhatIfAnswer } from "../schemas";
import { sessions } from "../tenant";
import { Card, Count, Empty, Rule, Stat, StateBadge, Usd, type StateName } from "../ui/bits";

// What-if replay (POST /v1/sessions/:id/what-if): a recorded session decided again under a
// pasted policy, by the same engine the actor runs. Shows where the decisions differ, when
// it would have been killed, the spend that would have been saved, and what the log
// cannot settle.

const EXAMPLES = [
  ["kill runaways", "runaway:\n  on_detect: kill\n"],
  ["a $1 budget", "budget:\n  session_usd: 1\n  on_exceed: kill\n"],
  ["review every refund", "actions:\n  rules:\n    refund:\n      amount: { require_approval_above: 0 }\n"],
] as const;

/** JSON when it looks like JSON, YAML otherwise (YAML would read JSON too, but errors name JSON better). */
const contentType = (text: string) => (/^\s*[{[]/.test(text) ? "application/json" : "application/yaml");

export function WhatIf({ params }: { params: URLSearchParams }) {
  const [session, setSession] = useState(params.get("whatif") ?? "");
  const [policy, setPolicy] = useState("");
  const [mode, setMode] = useState<"merge" | "replace">("merge");
  const [busy, setBusy] = useState(false);
  const [answer, setAnswer] = useState<{ session: string; result: WhatIfAnswer } | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    const w = params.get("whatif");
    if (w) setSession(w);
  }, [params.get("whatif")]);

  async function run(e: Event) {
    e.preventDefault();
    const id = session.trim();
    if (!id || !policy.trim()) return;
    setBusy(true);
    setError(null);
    // The session goes in the link, so a reload or a shared link opens the same panel.
    const next = new URLSearchParams(params);
    next.set("whatif", id);
    go({ view: "audit", params: next }, { replace: true });
    try {
      const result = await postText(`/v1/sessions/${encodeURIComponent(id)}/what-if?mode=${mode}`, { body: policy, type: contentType(policy) }, WhatIfAnswer);
      setAnswer({ session: id, result });
    } catch (err) {
      setAnswer(null);
      setError(err instanceof ApiError ? `${err.toString()}${err.field ? ` (field ${err.field})` : ""}` : String(err));
    }
    setBusy(false);
  }

  return (
    <Card title="What-if replay" name="whatif" extra={<span class="muted small">a recorded session decided again under another policy</span>}>
      <form class="whatif-form" id="whatif-form" onSubmit={run}>
        <div class="fields">
          <label>
            session
            <input name="whatif-session" list="whatif-sessions" required autoComplete="off" spellcheck={false} value={session} placeholder="session id" onInput={(e) => setSession((e.target as HTMLInputElement).value)} />
            <datalist id="whatif-sessions">
              {[...sessions.values()]
                .sort((a, b) => b.lastActivity - a.lastActivity)
                .slice(0, 50)
                .map((s) => (
                  <option key={s.session} value={s.session} />
                ))}
            </datalist>
          </label>
          <label>
            the policy below
            <select name="whatif-mode" value={mode} onChange={(e) => setMode((e.target as HTMLSelectElement).value as "merge" | "replace")}>
              <option value="merge">overrides the recorded one, field by field</option>
              <option value="replace">replaces the recorded one</option>
            </select>
          </label>
        </div>
        <label class="policy-label">
          policy (YAML or JSON)
          <textarea name="whatif-policy" rows={7} required spellcheck={false} value={policy} placeholder={"runaway:\n  on_detect: kill"} onInput={(e) => setPolicy((e.target as HTMLTextAreaElement).value)} />
        </label>
        <div class="form-actions">
          <button type="submit" class="primary" id="whatif-run" disabled={busy}>
            {busy ? "Replaying…" : "Run what-if"}
          </button>
          <span class="muted small examples">
            try:{" "}
            {EXAMPLES.map(([label, text]) => (
              <button key={label} type="button" class="link" onClick={() => setPolicy(text)}>
                {label}
              </button>
            ))}
          </span>
        </div>
      </form>
      {error && (
        <p class="error-text" id="whatif-error">
          {error}
        </p>
      )}
      {answer && <Result session={answer.session} result={answer.result} />}
    </Card>
  );
}

function Result({ session, result }: { session: string; result: WhatIfAnswer }) {
  if (!result.ok) {
    return (
      <div class="whatif-result bad" data-whatif="unverified">
        <strong>The log of {session} did not verify</strong> ({result.problem}
        {result.seq !== undefined && <> at event #{result.seq}</>}): {result.reason}. Nothing was replayed.
      </div>
    );
  }
  const w = result.whatIf;
  return (
    <div class="whatif-result" data-whatif="done">
      <p class="small muted">
        <a href={hrefOf({ view: "session", id: session })} class="mono">
          {session}
        </a>
        : {result.events} events verified
        {result.checkpoint ? <> up to the checkpoint signed at #{result.checkpoint.seq}</> : null} · {w.requests} requests decided again: <strong class="ink">{w.differences.length} differently</strong>,{" "}
        {w.unknown.length} unknown
      </p>
      <div class="tiles whatif-tiles">
        <Stat label="Recorded" name="recorded" value={<Usd v={w.recorded.spentUsd} />}>
          <span>
            <StateBadge state={w.recorded.state as StateName} />
          </span>
        </Stat>
        <Stat label="Under this policy" name="what-if" value={<Usd v={w.whatIf.spentUsd} />}>
          <span>
            <StateBadge state={w.whatIf.state as StateName} />
            {w.whatIf.unsettledUsd > 0 && (
              <span class="small muted">
                {" "}
                + up to <Usd v={w.whatIf.unsettledUsd} /> never run
              </span>
            )}
          </span>
        </Stat>
        <Stat label="Saved" name="saved" value={<span class={w.savedUsd > 0 ? "good-text" : ""}>{<Usd v={w.savedUsd} />}</span>} hint="recorded spend minus the what-if's" />
      </div>
      <Kill label="Would have been killed" kill={w.whatIf.killed} name="whatif-kill" none="Would not have been killed." />
      {w.recorded.killed && <Kill label="Was killed" kill={w.recorded.killed} name="recorded-kill" />}
      <h3 class="sub-head">
        Where the decisions differ <Count n={w.differences.length} />
      </h3>
      {w.differences.length === 0 ? <Empty>Every request would have been decided as it was.</Empty> : <Differences rows={w.differences} />}
      {w.unknown.length > 0 && (
        <>
          <h3 class="sub-head">
            What the log cannot settle <Count n={w.unknown.length} />
          </h3>
          <ul class="list small unknowns" id="whatif-unknown">
            {w.unknown.map((u) => (
              <li key={`${u.seq}:${u.requestId}`}>
                <span class="mono">
                  #{u.seq} {u.subject}
                </span>
                : {u.why} <span class="muted">(assumed {outcomeText(u.assumed)})</span>
              </li>
            ))}
          </ul>
        </>
      )}
      {[...w.notes, ...result.warnings].length > 0 && (
        <ul class="notes small muted">
          {[...w.notes, ...result.warnings].map((n) => (
            <li key={n}>{n}</li>
          ))}
        </ul>
      )}
    </div>
  );
}

function Kill({ label, kill, name, none }: { label: string; kill: WhatIfKill | null; name: string; none?: string }) {
  if (!kill)
    return none ? (
      <p class="kill-line" data-kill={name}>
        {none}
      </p>
    ) : null;
  return (
    <p class={`kill-line${name === "whatif-kill" ? " hot" : ""}`} data-kill={name}>
      <strong>{label}</strong> at event #{kill.seq} ({clock(kill.ts)}){kill.subject && <> on {kill.subject}</>}
      {kill.requestId && <span class="muted mono"> {kill.requestId}</span>} by {kill.by}
      {kill.rule && (
        <>
          , rule <Rule path={kill.rule} />
        </>
      )}
      : {kill.reason}
    </p>
  );
}

function outcomeText(o: WhatIfOutcome): string {
  return [o.decision, o.code].filter(Boolean).join(" ");
}

function Outcome({ o }: { o: WhatIfOutcome }) {
  return (
    <span class="outcome">
      <span class={`decision d-${o.decision}`}>{o.decision}</span>
      {o.code && <span class="muted small"> {o.code}</span>}
      {o.costUsd != null && o.costUsd > 0 && (
        <span class="small">
          {" "}
          <Usd v={o.costUsd} />
        </span>
      )}
      {o.costUsd === null && <span class="small muted"> cost unknown{o.reservedUsd !== undefined && <> (≤ <Usd v={o.reservedUsd} />)</>}</span>}
    </span>
  );
}

function Differences({ rows }: { rows: WhatIfDifference[] }) {
  return (
    <div class="table-wrap">
      <table class="grid compact whatif-diffs" id="whatif-diffs">
        <thead>
          <tr>
            <th class="num">Seq</th>
            <th>Time</th>
            <th>Request</th>
            <th>Happened</th>
            <th>Would have</th>
            <th>Rule</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={`${r.seq}:${r.requestId}`} data-diff={r.seq}>
              <td class="num mono c-seq" data-label="Seq">
                #{r.seq}
              </td>
              <td class="nowrap c-time" data-label="Time" title={stamp(r.ts)}>
                {clock(r.ts)}
              </td>
              <td class="c-subject" data-label="Request">
                <span class="mono">{r.subject}</span>
                <div class="small muted mono">{r.requestId}</div>
              </td>
              <td class="c-happened" data-label="Happened">
                <Outcome o={r.happened} />
              </td>
              <td class="c-would" data-label="Would have">
                <Outcome o={r.wouldHave} />
              </td>
              <td class="c-rule" data-label="Rule">
                {r.wouldHave.rule ? <Rule path={r.wouldHave.rule} /> : <span class="muted">–</span>}
                {r.wouldHave.reason && <div class="small muted">{r.wouldHave.reason}</div>}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
