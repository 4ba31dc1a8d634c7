import type { SessionSummary } from "../schema/protocol";
import { encodeCursor, type PagePosition, type SessionListQuery, type SessionListAnswer } from "../schema/session-list";

// The tenant's sessions in page order: openedAt descending, then session id ascending.
// A session's openedAt never changes, so updates replace a summary in place and never
// move it: a client paging while sessions change sees every session exactly once.

/** Negative when `a` comes first. */
function compare(a: PagePosition, b: PagePosition): number {
  if (a.openedAt !== b.openedAt) return b.openedAt - a.openedAt;
  return a.session < b.session ? -1 : a.session > b.session ? 1 : 0;
}

export class SessionIndex {
  private readonly byId = new Map<string, SessionSummary>();
  private readonly order: PagePosition[] = [];

  static from(summaries: Iterable<SessionSummary>): SessionIndex {
    const index = new SessionIndex();
    for (const s of summaries) index.byId.set(s.session, s);
    for (const s of index.byId.values()) index.order.push({ openedAt: s.openedAt, session: s.session });
    index.order.sort(compare);
    return index;
  }

  get size(): number {
    return this.byId.size;
  }

  values(): IterableIterator<SessionSummary> {
    return this.byId.values();
  }

  upsert(s: SessionSummary): void {
    const known = this.byId.get(s.session);
    this.byId.set(s.session, s);
    const key = { openedAt: s.openedAt, session: s.session };
    if (known) {
      if (known.openedAt === s.openedAt) return;
      // Not expected (openedAt is the session's first event), but keep the order true if it happens.
      this.order.splice(this.firstAtOrAfter({ openedAt: known.openedAt, session: known.session }), 1);
    }
    this.order.splice(this.firstAtOrAfter(key), 0, key);
  }

  /** Index of the first key that does not come before `p`. */
  private firstAtOrAfter(p: PagePosition): number {
    let lo = 0;
    let hi = this.order.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compare(this.order[mid], p) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  page(q: SessionListQuery): SessionListAnswer {
    const matches = (s: SessionSummary) =>
      (!q.states || q.states.includes(s.state)) &&
      (q.agent === undefined || s.agent === q.agent) &&
      (q.user === undefined || s.user === q.user) &&
      (q.since === undefined || s.openedAt >= q.since) &&
      (q.until === undefined || s.openedAt < q.until);
    let start = 0;
    if (q.after) {
      start = this.firstAtOrAfter(q.after);
      if (start < this.order.length && compare(this.order[start], q.after) === 0) start++;
    }
    const sessions: SessionSummary[] = [];
    let total = 0;
    let more = false;
    for (let i = 0; i < this.order.length; i++) {
      // Opened before `since`: so is everything after it in this order.
      if (q.since !== undefined && this.order[i].openedAt < q.since) break;
      const s = this.byId.get(this.order[i].session)!;
      if (!matches(s)) continue;
      total++;
      if (i < start) continue;
      if (sessions.length < q.limit) sessions.push(s);
      else more = true;
    }
    const last = sessions.at(-1);
    return { sessions, nextCursor: more && last ? encodeCursor({ openedAt: last.openedAt, session: last.session }) : null, total };
  }
}
