import { useEffect, useState } from "preact/hooks";
import type { SessionSummary } from "../../../schema/protocol";
import { SessionSummary as SummarySchema } from "../../../schema/protocol";
import { ApiError, getJson, postJson } from "../api";
import { ArgTable, ruleArgument, sizeOf } from "./args";
import { banner } from "../banners";
import { config, mayDecide } from "../config";
import { timeLeft } from "../format";
import { Rule, Usd } from "./bits";
import { hrefOf } from "../route";
import { ApprovalAnswer } from "../schemas";

type Pending = SessionSummary["pendingApprovals"][number];
const PendingSchema = SummarySchema.shape.pendingApprovals.element;

type Shown = { kind: "all"; args: Record<string, unknown>; bytes?: number } | { kind: "loading"; bytes: number } | { kind: "some"; args: Record<string, unknown> | null; why: string };

const asRecord = (v: unknown) => (v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : null);

/**
 * The arguments to show: all of them when the summary carries them (`argsFull`); when they
 * were too large for it, fetched whole from the approval's own route; else what the log kept.
 */
function useArgs(session: string, a: Pending): Shown {
  const [fetched, setFetched] = useState<{ id: string; shown: Shown } | null>(null);
  const large = !a.argsFull && a.argsBytes !== undefined;
  useEffect(() => {
    if (!large) return;
    const ctl = new AbortController();
    getJson(`/v1/sessions/${encodeURIComponent(session)}/approvals/${encodeURIComponent(a.approvalId)}`, PendingSchema, ctl.signal)
      .then((p) => setFetched({ id: a.approvalId, shown: p.argsFull && asRecord(p.args) ? { kind: "all", args: asRecord(p.args)!, bytes: p.argsBytes } : { kind: "some", args: asRecord(p.args), why: "not held whole" } }))
      .catch((e) => !ctl.signal.aborted && setFetched({ id: a.approvalId, shown: { kind: "some", args: asRecord(a.args), why: e instanceof ApiError ? e.toString() : String(e) } }));
    return () => ctl.abort();
  }, [session, a.approvalId, large]);
  if (a.argsFull && asRecord(a.args)) return { kind: "all", args: asRecord(a.args)!, bytes: a.argsBytes };
  if (large) return fetched?.id === a.approvalId ? fetched.shown : { kind: "loading", bytes: a.argsBytes! };
  return { kind: "some", args: asRecord(a.args), why: "the log keeps only the arguments the policy's rules read (keep_raw: true keeps all of them)" };
}

function Arguments({ session, a }: { session: string; a: Pending }) {
  const shown = useArgs(session, a);
  const checked = ruleArgument(a.rule, a.action);
  if (shown.kind === "loading") return <p class="small muted args-note">Loading all the arguments ({sizeOf(shown.bytes)})…</p>;
  const count = shown.args ? Object.keys(shown.args).length : 0;
  return (
    <div class="args-box" data-args={shown.kind}>
      <p class="small muted args-note">
        {shown.kind === "all" ? (
          <>
            All {count} argument{count === 1 ? "" : "s"} as the agent sent {count === 1 ? "it" : "them"}
            {shown.bytes !== undefined && <> · {sizeOf(shown.bytes)}</>}
          </>
        ) : (
          <>Only some arguments: {shown.why}.</>
        )}
      </p>
      {shown.args && count > 0 ? <ArgTable args={shown.args} checked={checked} /> : <p class="small muted">No arguments.</p>}
    </div>
  );
}

export function ApprovalCard({ session, a, now, showSession = true }: { session: SessionSummary; a: Pending; now: number; showSession?: boolean }) {
  const [note, setNote] = useState("");
  const [busy, setBusy] = useState<null | "approve" | "deny">(null);
  const [done, setDone] = useState<null | string>(null);
  const left = a.deadline - now;
  // Past its deadline the actor has denied it (fail-closed): nothing left to decide.
  const over = left <= 0;

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
    <article class={`approval${done || over ? " decided" : ""}`} data-approval={a.approvalId} data-session={session.session}>
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
        review asked by <Rule path={a.rule} />
      </p>
      <Arguments session={session.session} a={a} />
      {over ? null : mayDecide() ? (
        <div class="approval-actions">
          <input class="note" type="text" placeholder="Note (optional)" maxLength={1024} aria-label="Note" value={note} onInput={(e) => setNote((e.target as HTMLInputElement).value)} disabled={!!done} />
          <button type="button" class="primary" data-decide="approve" disabled={!!busy || !!done} onClick={() => decide("approve")}>
            {busy === "approve" && !done ? "Approving…" : done === "approved" ? "Approved" : "Approve"}
          </button>
          <button type="button" class="danger" data-decide="deny" disabled={!!busy || !!done} onClick={() => decide("deny")}>
            {busy === "deny" && !done ? "Denying…" : done === "denied" ? "Denied" : "Deny"}
          </button>
        </div>
      ) : (
        <p class="small muted read-only" data-read-only>
          Read-only: only an operator can approve or deny (signed in as “{config.name}”, {config.role === "auditor" ? "an auditor" : config.role}).
        </p>
      )}
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
