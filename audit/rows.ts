import { toNanos } from "../lib/money";
import type { SessionContext } from "../machines/context";
import type { Attribution, GovernorEvent } from "../schema/events";
import type { NewAuditEventRow } from "../schema/audit";

// From a verified event to its row: the columns an auditor filters and sums on. Spend is
// what the session's own fold added with this event, so the store's sums are the
// actors' numbers by construction, not a second reading of the billing rules.

/** What the store carries from one event of a session to the next. */
export interface FoldState {
  context: SessionContext;
  /**
   * Who asked, for what is still open: reservations (`r:<requestId>`; the settle that
   * charges the call carries no attribution of its own) and approvals (`a:<approvalId>`;
   * the grant that charges the action is the requester's too).
   */
  asked: Record<string, Attribution>;
}

type Loose = Record<string, unknown>;

const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) ? v : undefined);

function decisionOf(e: GovernorEvent, d: Loose): string | undefined {
  switch (e.type) {
    case "request.reserved":
    case "approval.granted":
      return "allow";
    case "request.denied":
    case "approval.denied":
      return "deny";
    case "approval.requested":
      return "review";
    default:
      return str(d.decision);
  }
}

export function toRow(tenant: string, session: string, e: GovernorEvent, raw: unknown, before: FoldState, after: FoldState): NewAuditEventRow {
  const d = (e.data ?? {}) as Loose;
  const own = (d.attribution && typeof d.attribution === "object" ? d.attribution : {}) as Attribution;
  const requestId = str(d.requestId);
  const reservation = requestId ? before.context.reservations[requestId] : undefined;
  const approvalId = str(d.approvalId);
  const asked =
    e.type === "request.settled" && requestId ? before.asked[`r:${requestId}`] : approvalId && (e.type === "approval.granted" || e.type === "approval.denied") ? before.asked[`a:${approvalId}`] : undefined;
  const ctx = after.context;
  const estimate = num(d.estimateUsd);
  return {
    tenant,
    session,
    seq: e.seq,
    ts: e.ts,
    type: e.type,
    eventId: e.id,
    user: str(own.user) ?? str(asked?.user) ?? str(d.user) ?? ctx.user ?? null,
    agent: str(own.agent) ?? str(asked?.agent) ?? str(d.agent) ?? ctx.agent ?? null,
    task: str(own.task) ?? str(asked?.task) ?? str(d.task) ?? ctx.task ?? null,
    run: str(own.run) ?? reservation?.run ?? str(asked?.run) ?? null,
    action: str(own.action) ?? str(d.action) ?? reservation?.action ?? str(asked?.action) ?? null,
    model: str(d.model) ?? reservation?.model ?? null,
    decision: decisionOf(e, d) ?? null,
    code: str(d.code) ?? null,
    rule: str(d.rule) ?? null,
    costNanos: ctx.spentNanos - before.context.spentNanos,
    estimateNanos: estimate === undefined ? null : toNanos(estimate),
    hash: e.hash,
    prev: e.prev,
    event: raw,
  };
}

const who = (a: Attribution | undefined, action?: string): Attribution => ({ user: a?.user, agent: a?.agent, task: a?.task, run: a?.run, action: a?.action ?? action });

function without(map: FoldState["asked"], key: string): FoldState["asked"] {
  if (!(key in map)) return map;
  const { [key]: _gone, ...rest } = map;
  return rest;
}

/** Who asked, after `e`: remembered while a reservation or approval is open, dropped after. */
export function trackAsked(asked: FoldState["asked"], e: GovernorEvent, after: SessionContext): FoldState["asked"] {
  const d = e.data as Loose;
  switch (e.type) {
    case "request.reserved":
      return { ...asked, [`r:${e.data.requestId}`]: who(d.attribution as Attribution | undefined) };
    case "request.settled":
      return without(asked, `r:${e.data.requestId}`);
    case "approval.requested":
      return { ...asked, [`a:${e.data.approvalId}`]: who(d.attribution as Attribution | undefined, e.data.action) };
    case "approval.granted":
    case "approval.denied":
      return without(asked, `a:${e.data.approvalId}`);
    case "session.killed":
    case "session.closed":
      // Pending approvals end with the session (the fold drops them too); reservations
      // stay open for their late settles.
      return Object.fromEntries(Object.entries(asked).filter(([k]) => !k.startsWith("a:") || after.approvals[k.slice(2)]));
    default:
      return asked;
  }
}
