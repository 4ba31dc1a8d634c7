import { assign, initialTransition, setup, transition, type SnapshotFrom } from "xstate";
import type { GovernorEvent } from "../schema/events";
import { Policy } from "../schema/policy";
import { initialContext, reduce, type SessionContext } from "./context";

// Pure: no invoke, spawn, delays or clock. Time arrives as each event's `ts`, so folding
// the same log always lands in the same state.

export type SessionState = "active" | "alerting" | "awaiting-approval" | "killed" | "closed";

const fold = { actions: "fold" } as const;
const toKilled = { target: "#session.killed", actions: "fold" } as const;
const toClosed = { target: "#session.closed", actions: "fold" } as const;
// An approval that resolves returns to awaiting-approval while others wait, else to
// where the session would be without it.
const resolveApproval = [
  { guard: "othersPending", actions: "fold" },
  { guard: "alerted", target: "#session.alerting", actions: "fold" },
  { target: "#session.active", actions: "fold" },
] as const;

export const sessionMachine = setup({
  types: {
    context: {} as SessionContext,
    events: {} as GovernorEvent,
  },
  actions: {
    fold: assign(({ context, event }) => reduce(context, event)),
  },
  guards: {
    othersPending: ({ context, event }) =>
      "approvalId" in event.data && Object.keys(context.approvals).some((id) => id !== (event.data as { approvalId: string }).approvalId),
    alerted: ({ context }) => context.alerted.length > 0,
    runawayKills: ({ event }) => event.type === "anomaly.detected" && event.data.onDetect === "kill",
  },
}).createMachine({
  id: "session",
  initial: "active",
  context: initialContext,
  // Every event updates the context, whatever the state: a settle that arrives after a
  // kill must still be counted, or replayed spend would differ from what was paid.
  on: { "*": fold },
  states: {
    active: {
      on: {
        "alert.raised": { target: "alerting", actions: "fold" },
        "anomaly.detected": { target: "alerting", actions: "fold" },
        "approval.requested": { target: "awaiting-approval", actions: "fold" },
        "session.killed": toKilled,
        "session.closed": toClosed,
      },
    },
    alerting: {
      on: {
        "approval.requested": { target: "awaiting-approval", actions: "fold" },
        "session.killed": toKilled,
        "session.closed": toClosed,
      },
    },
    "awaiting-approval": {
      on: {
        "approval.granted": resolveApproval,
        "approval.denied": resolveApproval,
        "session.killed": toKilled,
        "session.closed": toClosed,
      },
    },
    // Killed and closed have no way out: every call and action is refused from here on.
    killed: {},
    closed: {},
  },
});

export type SessionSnapshot = SnapshotFrom<typeof sessionMachine>;

export function initialSnapshot(): SessionSnapshot {
  return initialTransition(sessionMachine)[0];
}

export function step(snapshot: SessionSnapshot, event: GovernorEvent): SessionSnapshot {
  return transition(sessionMachine, snapshot, event)[0];
}

export function stateOf(snapshot: SessionSnapshot): SessionState {
  return snapshot.value as SessionState;
}

/** The state after folding `events` onto `from` (the initial state when absent). */
export function replay(events: Iterable<GovernorEvent>, from?: SessionSnapshot): SessionSnapshot {
  let s = from ?? initialSnapshot();
  for (const e of events) s = step(s, e);
  return s;
}

/** Rebuild a snapshot from what the actor persisted (state value + context). */
export function restore(value: SessionState, context: SessionContext): SessionSnapshot {
  const policy = context.policy ? Policy.parse(context.policy) : null;
  return sessionMachine.resolveState({ value, context: { ...context, policy } });
}
