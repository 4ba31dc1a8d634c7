import type * as Party from "partykit/server";
import { commit, isCommitment, reveal, visiblePii, type Pii } from "../../lib/pii";
import type { SessionContext } from "../../machines/context";
import type { GovernorEvent } from "../../schema/events";
import type { NotifyTarget } from "../../schema/policy";
import type { SessionSummary } from "../../schema/protocol";

// The values behind the commitments of a session's log (lib/pii.ts), stored beside the
// events under `p:<seq>` (an `e:<seq>` record is never rewritten; an erasure rewrites or
// deletes only these). The folded state holds commitments, like the log: what it shows
// (summaries, notifications, cross-session quotas) is revealed here, from the values of
// the events the state still refers to: the session's opening (its user, task and
// notification URLs) and the approvals still pending (their arguments).

export const piiKey = (seq: number) => `p:${String(seq).padStart(12, "0")}`;

const OPENED_SEQ = 1;

export class Vault {
  /** seq -> the values of events the folded state refers to. */
  private held = new Map<number, Pii>();
  /** commitment -> value, built from `held`. */
  private known = new Map<string, unknown>();

  constructor(private readonly storage: Party.Storage) {}

  /** On wake-up: the values of the opening and of pending approvals, whose events the state names. */
  async load(ctx: SessionContext) {
    const seqs = [OPENED_SEQ, ...Object.values(ctx.approvals).flatMap((a) => (a.seq ? [a.seq] : []))];
    const stored = new Map<string, Pii>();
    for (let i = 0; i < seqs.length; i += STORAGE_BATCH) for (const [k, v] of await this.storage.get<Pii>(seqs.slice(i, i + STORAGE_BATCH).map(piiKey))) stored.set(k, v);
    this.held.clear();
    for (const seq of seqs) {
      const pii = stored.get(piiKey(seq));
      if (pii) this.held.set(seq, pii);
    }
    this.rebuild();
  }

  /** Adds the values of a batch to its storage write, each under its event's seq. */
  stage(puts: Record<string, unknown>, events: GovernorEvent[], pii: Array<Pii | undefined>) {
    events.forEach((e, i) => {
      if (pii[i]) puts[piiKey(e.seq)] = pii[i];
    });
  }

  /** After a batch is folded: keep what the state now refers to, drop what it no longer does. */
  track(events: GovernorEvent[], pii: Array<Pii | undefined>, ctx: SessionContext) {
    let changed = false;
    events.forEach((e, i) => {
      if (pii[i] && (e.type === "session.opened" || e.type === "approval.requested")) {
        this.held.set(e.seq, pii[i]!);
        changed = true;
      }
    });
    const pending = new Set(Object.values(ctx.approvals).map((a) => a.seq));
    for (const seq of this.held.keys()) {
      if (seq !== OPENED_SEQ && !pending.has(seq)) {
        this.held.delete(seq);
        changed = true;
      }
    }
    if (changed) this.rebuild();
  }

  /** An erasure deleted these values: the state shows them no more. */
  forget(seqs: Set<number>, remaining: Map<number, Pii | undefined>) {
    for (const seq of seqs) {
      if (!this.held.has(seq)) continue;
      const rest = remaining.get(seq);
      if (rest) this.held.set(seq, rest);
      else this.held.delete(seq);
    }
    this.rebuild();
  }

  private rebuild() {
    this.known.clear();
    // The state holds the commitment only: it is recomputed from value and salt.
    for (const pii of this.held.values()) for (const r of Object.values(pii)) this.known.set(commit(r.v, r.s), r.v);
  }

  /** A value of the state as the live actor shows it: a commitment's value, undefined once erased. */
  value<T>(x: T): T | undefined {
    return isCommitment(x) ? (this.known.get(x) as T | undefined) : x;
  }

  summary(s: SessionSummary): SessionSummary {
    const user = this.value(s.user);
    const task = this.value(s.task);
    const shown: SessionSummary = { ...s, user, task };
    if (user === undefined) delete shown.user;
    if (task === undefined) delete shown.task;
    if (s.pendingApprovals.some((a) => isCommitment(a.args))) shown.pendingApprovals = s.pendingApprovals.map((a) => (isCommitment(a.args) ? { ...a, args: this.value(a.args) } : a));
    return shown;
  }

  /** The notification targets with their URLs (what the notifier sends to). */
  targets(notify: NotifyTarget[]): NotifyTarget[] {
    return notify.map((t) => ("slack" in t ? { slack: String(this.value(t.slack) ?? t.slack) } : { webhook: String(this.value(t.webhook) ?? t.webhook) }));
  }

  /** A stored batch as those who act on its values see it: each event's data and the state's user and task revealed. */
  revealBatch<C extends { events: GovernorEvent[]; pii: Array<Pii | undefined>; after: { context: SessionContext } }>(c: C): C {
    const ctx = c.after.context;
    return {
      ...c,
      events: c.events.map((e, i) => revealed(e, visiblePii(c.pii[i], false))),
      after: { ...c.after, context: { ...ctx, user: this.value(ctx.user), task: this.value(ctx.task) } },
    };
  }

  /** Events of the log with their values beside them (the secrets only for `secrets` readers). */
  async join(events: GovernorEvent[], secrets: boolean): Promise<GovernorEvent[]> {
    if (!events.length) return events;
    const first = events[0].seq;
    const last = events[events.length - 1].seq;
    const stored = await this.storage.list<Pii>({ prefix: "p:", start: piiKey(first), end: piiKey(last + 1) });
    if (!stored.size) return events;
    return events.map((e) => withPii(e, visiblePii(stored.get(piiKey(e.seq)), secrets)));
  }
}

/** An event with its visible values beside it (as the log route and the tail give it). */
export function withPii(e: GovernorEvent, pii: Pii | undefined): GovernorEvent {
  return pii ? { ...e, pii } : e;
}

/** An event's data with its values in place (for those who act on them: notifier, spans). */
export function revealed(e: GovernorEvent, pii: Pii | undefined): GovernorEvent {
  return pii ? ({ ...e, data: reveal(e.data, pii) } as GovernorEvent) : e;
}

// Durable Object storage takes at most 128 keys per call. Calls made in one turn with no
// await between them are still written together, atomically.
const STORAGE_BATCH = 128;

export function putAll(storage: Party.Storage, entries: Record<string, unknown>): Promise<unknown> {
  const keys = Object.keys(entries);
  const calls: Array<Promise<unknown>> = [];
  for (let i = 0; i < keys.length; i += STORAGE_BATCH) calls.push(storage.put(Object.fromEntries(keys.slice(i, i + STORAGE_BATCH).map((k) => [k, entries[k]]))));
  return Promise.all(calls);
}

export function deleteAll(storage: Party.Storage, keys: string[]): Promise<unknown> {
  const calls: Array<Promise<unknown>> = [];
  for (let i = 0; i < keys.length; i += STORAGE_BATCH) calls.push(storage.delete(keys.slice(i, i + STORAGE_BATCH)));
  return Promise.all(calls);
}
