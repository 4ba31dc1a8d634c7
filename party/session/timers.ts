import type * as Party from "partykit/server";
import { decideTimers, nextDeadline } from "../../machines/money";
import type { SessionSnapshot } from "../../machines/session";
import type { SessionSummary } from "../../schema/protocol";
import { callTenant } from "../calls";
import type { GovernorEvent } from "../../schema/events";
import type { Journal } from "./journal";
import type { Reservations } from "./reservations";

// The actor's clock: one storage alarm for the earliest thing due (a reservation's expiry,
// an approval's deadline, a call in flight going quiet), and the tenant's index, which
// trails the session by at most one update in flight.
//
// After a restart of `partykit dev` the runtime does not fire alarms of objects it has not
// started again (workerd's local alarm store does not wake them), so the alarm is re-armed
// from the folded state whenever the actor starts, and the gateway wakes the sessions with
// timers on its first request after a start (party/wake.ts).

const INDEX_DELAY_MS = 200;

/** The deadlines a stored batch adds: its reservations' expiries and its approvals' deadlines. */
export function deadlinesOf(events: GovernorEvent[]): number[] {
  const out: number[] = [];
  for (const e of events) {
    if (e.type === "request.reserved") out.push(e.data.expiresAt);
    else if (e.type === "approval.requested") out.push(e.data.deadline);
  }
  return out;
}

export class Timers {
  private alarmAt: number | null = null;
  private indexDirty = false;
  private indexing = false;
  private indexTimer: ReturnType<typeof setTimeout> | undefined;
  private indexRetryMs = INDEX_DELAY_MS;
  /** Whether the index last heard that this session has something due (what wakes it after a restart). */
  private indexedDue = false;
  money!: Reservations;

  constructor(
    private readonly room: Party.Room,
    private readonly journal: Journal,
    /** The summary the tenant's index keeps (its readers are operators and auditors). */
    private readonly summaryOf: (s: SessionSnapshot) => SessionSummary,
  ) {}

  /** On start: whatever alarm storage remembers may never fire; set it again from the state. */
  rearm() {
    this.alarmAt = null;
    this.schedule();
  }

  /**
   * Sets the alarm for the earliest thing due. `added`: the deadlines just added (a batch's
   * reservations and approvals, a call's report). While an alarm is pending in the future
   * it covers everything that was already there, so only those need looking at: not every
   * open reservation on every event. An alarm that fires early finds nothing due and is
   * set again from everything (alarm()).
   */
  schedule(added?: number[]) {
    if (added && this.alarmAt !== null && this.alarmAt > Date.now()) {
      let next = Infinity;
      for (const t of added) next = Math.min(next, t);
      if (next < this.alarmAt) {
        this.alarmAt = next;
        void this.room.storage.setAlarm(next);
      }
      return;
    }
    let next = nextDeadline(this.journal.context);
    const stale = this.money.nextStale();
    if (stale !== undefined) next = Math.min(next ?? Infinity, stale);
    if (next === undefined || next === this.alarmAt) return;
    if (this.alarmAt !== null && this.alarmAt <= next && this.alarmAt > Date.now()) return;
    this.alarmAt = next;
    void this.room.storage.setAlarm(next);
  }

  async alarm() {
    this.alarmAt = null;
    if (!this.journal.context.opened) await this.journal.load();
    const now = Date.now();
    const drafts = decideTimers(this.journal.view, now, this.money.abandoned(now), this.money.reporting(now));
    if (drafts.length) await this.journal.commit(drafts).write;
    this.schedule();
  }

  /**
   * Spend-only changes are batched for INDEX_DELAY_MS so a busy session does not write the
   * index per call; a change of state goes at once. Always from a fresh turn: PartyKit
   * forbids reaching other parties from inside onAlarm.
   */
  scheduleIndex(urgent: boolean, added?: number[]) {
    // The index is how a restart finds sessions with something due: that goes at once.
    if (!this.indexedDue && (added ? added.length > 0 : nextDeadline(this.journal.context) !== undefined)) urgent = true;
    this.indexDirty = true;
    if (this.indexing) return;
    // A pending batch keeps its time (under steady traffic it must still go out).
    if (this.indexTimer !== undefined && !urgent) return;
    clearTimeout(this.indexTimer);
    this.indexTimer = setTimeout(
      () => {
        this.indexTimer = undefined;
        void this.pushIndex();
      },
      urgent ? 0 : INDEX_DELAY_MS,
    );
  }

  /** Pushes the summary now and resolves once the index holds it (an erasure must not leave the old one there). */
  async flushIndex(): Promise<void> {
    clearTimeout(this.indexTimer);
    this.indexTimer = undefined;
    this.indexDirty = true;
    // One push at a time: the one under way may carry the summary from before.
    while (this.indexing) await new Promise((r) => setTimeout(r, 5));
    await this.pushIndex();
  }

  private async pushIndex() {
    if (this.indexing) return;
    this.indexing = true;
    try {
      while (this.indexDirty) {
        this.indexDirty = false;
        const summary = this.summaryOf(this.journal.snapshot);
        const res = await callTenant(this.room.context, summary.tenant, { op: "upsert", summary });
        if (!res.ok) throw new Error(`tenant answered ${res.status}`);
        this.indexedDue = summary.reservations.length > 0 || summary.pendingApprovals.length > 0;
      }
      this.indexRetryMs = INDEX_DELAY_MS;
    } catch (e) {
      // Try again later with the latest summary, so a missed update is not missed for good.
      console.error("tenant index update failed; retrying", e);
      this.indexDirty = true;
      this.indexRetryMs = Math.min(this.indexRetryMs * 2, 30_000);
      setTimeout(() => this.scheduleIndex(true), this.indexRetryMs);
    } finally {
      this.indexing = false;
    }
  }
}
