import { toNanos } from "../lib/money";
import type { SessionContext } from "../machines/context";
import { isCommitment, plainValue, type Pii } from "../lib/pii";
import type { Attribution, GovernorEvent } from "../schema/events";
import type { NewAuditEventRow } from "../schema/audit";

// From a verified event to its row: the columns an auditor filters and sums on. Spend is
// what the session's own fold added with this event, so the store's sums are the
// actors' numbers by construction, not a second reading of the billing rules.

/** Attribution as revealed, and the seq of the event that revealed it (what an erasure names). */
export type Asked = Attribution & { seq?: number };

/** What the store carries from one event of a session to the next. */
export interface FoldState {
  context: SessionContext;
  /**
   * Who asked, for what is still open: reservations (`r:<requestId>`; the settle that
   * charges the call carries no attribution of its own) and approvals (`a:<approvalId>`;
   * the grant that charges the action is the requester's too).
   */
  asked: Record<string, Asked>;
  /** The session's user and task as its opening revealed them (the context holds commitments). */
  session?: { user?: string; task?: string; seq: number };
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

/** A value of the context in the clear: a commitment is not one (a store from before commitments has plain ones). */
const clear = (v: string | undefined) => (isCommitment(v) ? undefined : v);

/**
 * `event` is the hashed part as logged, `pii` the personal values beside it (already
 * checked against their commitments): the columns are revealed from them.
 */
export function toRow(tenant: string, session: string, e: GovernorEvent, event: unknown, pii: Pii | undefined, before: FoldState, after: FoldState): NewAuditEventRow {
  // Once per stored event: no closures or spread copies here (they showed in the sync's profile).
  const d = (e.data ?? {}) as Loose;
  const own = (d.attribution && typeof d.attribution === "object" ? d.attribution : NONE) as Attribution;
  const ownUser = revealed(d, pii, "/attribution/user");
  const ownTask = revealed(d, pii, "/attribution/task");
  const requestId = str(d.requestId);
  const reservation = requestId ? before.context.reservations[requestId] : undefined;
  const approvalId = str(d.approvalId);
  const asked =
    e.type === "request.settled" && requestId ? before.asked[`r:${requestId}`] : approvalId && (e.type === "approval.granted" || e.type === "approval.denied") ? before.asked[`a:${approvalId}`] : undefined;
  const ctx = after.context;
  const estimate = num(d.estimateUsd);
  const redacted = e.type === "subject.redacted";
  return {
    tenant,
    session,
    seq: e.seq,
    ts: e.ts,
    type: e.type,
    eventId: e.id,
    // An erasure's own record belongs to nobody.
    user: redacted ? null : (ownUser ?? str(asked?.user) ?? revealed(d, pii, "/user") ?? sessionValue(after, "user") ?? null),
    agent: str(own.agent) ?? str(asked?.agent) ?? str(d.agent) ?? ctx.agent ?? null,
    task: redacted ? null : (ownTask ?? str(asked?.task) ?? revealed(d, pii, "/task") ?? sessionValue(after, "task") ?? null),
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
    event,
    pii: pii ?? null,
  };
}

const NONE = {};

/** The value at `pointer` in the clear: the data's own, or the one beside it for a commitment. */
const revealed = (d: Loose, pii: Pii | undefined, pointer: string) => str(plainValue(d, pii, pointer));

export const clearValue = (f: FoldState, key: "user" | "task") => sessionValue(f, key);

function sessionValue(f: FoldState, key: "user" | "task"): string | undefined {
  // A store written before commitments has no `session`: its context holds the values in the clear.
  return f.session ? f.session[key] : clear(f.context[key]);
}

/** Who asked, as the event reveals it: the values of its commitments, and its seq. */
function who(e: GovernorEvent, pii: Pii | undefined, action?: string): Asked {
  const d = e.data as Loose;
  const a = (d.attribution && typeof d.attribution === "object" ? d.attribution : {}) as Attribution;
  const user = str(plainValue(d, pii, "/attribution/user"));
  const task = str(plainValue(d, pii, "/attribution/task"));
  return { user, agent: a.agent, task, run: a.run, action: a.action ?? action, ...((user ?? task) !== undefined && { seq: e.seq }) };
}

/** The session's user and task as its opening reveals them. */
export function openedBy(e: GovernorEvent, pii: Pii | undefined): FoldState["session"] {
  const d = e.data as Loose;
  return { user: str(plainValue(d, pii, "/user")), task: str(plainValue(d, pii, "/task")), seq: e.seq };
}

function without(map: FoldState["asked"], key: string): FoldState["asked"] {
  if (!(key in map)) return map;
  const { [key]: _gone, ...rest } = map;
  return rest;
}

/** Who asked, after `e`: remembered while a reservation or approval is open, dropped after. */
export function trackAsked(asked: FoldState["asked"], e: GovernorEvent, after: SessionContext, pii?: Pii): FoldState["asked"] {
  switch (e.type) {
    case "request.reserved":
      return { ...asked, [`r:${e.data.requestId}`]: who(e, pii) };
    case "request.settled":
      return without(asked, `r:${e.data.requestId}`);
    case "approval.requested":
      return { ...asked, [`a:${e.data.approvalId}`]: who(e, pii, e.data.action) };
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

/**
 * An erasure of the values revealed by `seqs`: they leave the fold (the session's user
 * and task, who asked for what is open), and the values they held are returned, so the
 * columns that copied them can be blanked too.
 */
export function forgetInFold(f: FoldState, seqs: Set<number>): { users: string[]; tasks: string[] } {
  const users: string[] = [];
  const tasks: string[] = [];
  if (f.session && seqs.has(f.session.seq)) {
    if (f.session.user !== undefined) users.push(f.session.user);
    if (f.session.task !== undefined) tasks.push(f.session.task);
    f.session = { seq: f.session.seq };
  }
  for (const [k, a] of Object.entries(f.asked)) {
    if (a.seq === undefined || !seqs.has(a.seq)) continue;
    if (a.user !== undefined) users.push(a.user);
    if (a.task !== undefined) tasks.push(a.task);
    f.asked[k] = { agent: a.agent, run: a.run, action: a.action };
  }
  return { users, tasks };
}

/** The same, by value (the audit service's erasure knows the subject's id, not which events revealed it). */
export function forgetValuesInFold(f: FoldState, users: Set<string>, tasks: Set<string>): boolean {
  let changed = false;
  if (f.session && ((f.session.user !== undefined && users.has(f.session.user)) || (f.session.task !== undefined && tasks.has(f.session.task)))) {
    f.session = { seq: f.session.seq };
    changed = true;
  }
  for (const [k, a] of Object.entries(f.asked)) {
    if ((a.user !== undefined && users.has(a.user)) || (a.task !== undefined && tasks.has(a.task))) {
      f.asked[k] = { agent: a.agent, run: a.run, action: a.action };
      changed = true;
    }
  }
  return changed;
}
