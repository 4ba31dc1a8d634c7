import { useState } from "preact/hooks";
import type { SessionSummary } from "../../../schema/protocol";
import { SessionSummary as SummarySchema } from "../../../schema/protocol";
import { ApiError, postJson } from "../api";
import { banner } from "../banners";
import { timeLeft } from "../format";
import { Usd } from "./bits";
import { hrefOf } from "../route";
import { ApprovalAnswer } from "../schemas";

type Pending = SessionSummary["pendingApprovals"][number];

/** One argument's value: plain values as they are, structures as indented JSON. */
function ArgValue({ value }: { value: unknown }) {
  if (value !== null && typeof value === "object") return <pre class="arg-json">{JSON.stringify(value, null, 2)}</pre>;
  if (typeof value === "string") return <span class="arg-str">{value}</span>;
  return <span class="arg-num">{JSON.stringify(value)}</span>;
}

export function ApprovalCard({ session, a, now, showSession = true }: { session: SessionSummary; a: Pending; now: number; showSession?: boolean }) {
  const [note, setNote] = useState("");
  const [busy, setBusy] = useState<null | "approve" | "deny">(null);
  const [done, setDone] = useState<null | string>(null);
  const left = a.deadline - now;
  const args = a.args && typeof a.args === "object" && !Array.isArray(a.args) ? Object.entries(a.args as Record<string, unknown>) : null;

  async function decide(decision: "approve" | "deny") {
    setBusy(decision);
    try {
      const r = await postJson(`/v1/sessions/${encodeURIComponent(session.session)}/approvals/${encodeURIComponent(a.approvalId)}`, { decision, ...(note.trim() && { note: note.trim() }) }, ApprovalAnswer);
      setDone(r.decision === "allow" ? "approved" : "denied");
      banner(`${a.action} in ${session.session}: ${r.decision === "allow" ? "approved" : "denied"}`, "info");
    } catch (e) {
      banner(e instanceof ApiError ? e.toString() : String(e));
      setBusy(null);
    }
  }

  return (
    <article class={`approval${done ? " decided" : ""}`} data-approval={a.approvalId} data-session={session.session}>
      <header class="approval-head">
        <strong class="mono action">{a.action}</strong>
        {a.costUsd > 0 && (
          <span class="cost">
            <Usd v={a.costUsd} />
          </span>
        )}
        <span class={`left${left < 60_000 ? " urgent" : ""}`} title={new Date(a.deadline).toLocaleString()}>
          {left > 0 ? <>{timeLeft(a.deadline, now)} left</> : "timed out: denied by the actor"}
        </span>
      </header>
      {showSession && (
        <p class="small muted who">
          <a href={hrefOf({ view: "session", id: session.session })} class="mono">
            {session.session}
          </a>
          {session.agent && <> · agent {session.agent}</>}
          {session.user && <> · user {session.user}</>}
        </p>
      )}
      <p class="why">{a.reason}</p>
      <p class="small muted">
        review asked by <code class="rule">{a.rule}</code>
      </p>
      {args && args.length ? (
        <table class="args" aria-label="Arguments" title="As the session holds them: the fields its rules check, or every argument with keep_raw: true">
          <tbody>
            {args.map(([k, v]) => (
              <tr key={k} data-arg={k}>
                <th scope="row" class="mono">
                  {k}
                </th>
                <td>
                  <ArgValue value={v} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : (
        <p class="small muted">The log keeps these arguments only as a hash (a policy with keep_raw: true keeps them whole).</p>
      )}
      <div class="approval-actions">
        <input class="note" type="text" placeholder="Note (optional)" maxLength={1024} aria-label="Note" value={note} onInput={(e) => setNote((e.target as HTMLInputElement).value)} disabled={!!done} />
        <button type="button" class="primary" data-decide="approve" disabled={!!busy || !!done} onClick={() => decide("approve")}>
          {busy === "approve" && !done ? "Approving…" : done === "approved" ? "Approved" : "Approve"}
        </button>
        <button type="button" class="danger" data-decide="deny" disabled={!!busy || !!done} onClick={() => decide("deny")}>
          {busy === "deny" && !done ? "Denying…" : done === "denied" ? "Denied" : "Deny"}
        </button>
      </div>
    </article>
  );
}

export async function killSession(id: string, reason: string): Promise<SessionSummary | null> {
  try {
    return await postJson(`/v1/sessions/${encodeURIComponent(id)}/kill`, reason ? { reason } : {}, SummarySchema);
  } catch (e) {
    banner(e instanceof ApiError ? e.toString() : String(e));
    return null;
  }
}
