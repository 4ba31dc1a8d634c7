// An MCP client that gives up on a call (its timeout, its user) sends
// notifications/cancelled in a request of its own. The endpoint keeps no session, so the
// calls in flight are found here, by session and JSON-RPC id, within this isolate. Only
// plain data is shared: workerd forbids one request from touching another's I/O (an
// AbortController included), so the cancelling request withdraws a pending approval
// through the session's actor, which wakes the waiting call, and marks the call so it
// is not sent upstream later. A call already upstream runs to its end; a cancel that
// lands on another isolate finds nothing, and the call ends when its own request does.

export interface InFlight {
  cancelled: boolean;
  /** Set while the call waits for an operator's decision. */
  approvalId?: string;
}

const inflight = new Map<string, Set<InFlight>>();

export function callKey(tenant: string, session: string, requestId: string | number): string {
  return `${tenant}:${session}:${typeof requestId}:${requestId}`;
}

export function track(key: string): { call: InFlight; done: () => void } {
  const call: InFlight = { cancelled: false };
  const set = inflight.get(key) ?? new Set();
  set.add(call);
  inflight.set(key, set);
  return {
    call,
    done: () => {
      set.delete(call);
      if (!set.size) inflight.delete(key);
    },
  };
}

/** Marks the calls under `key` cancelled; returns the approvals they wait on. */
export function cancel(key: string): string[] {
  const waiting: string[] = [];
  for (const call of inflight.get(key) ?? []) {
    call.cancelled = true;
    if (call.approvalId) waiting.push(call.approvalId);
  }
  return waiting;
}
