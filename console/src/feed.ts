import { eventHash, GENESIS } from "../../lib/chain";
import { reveal } from "../../lib/pii";
import { committedNanos } from "../../machines/decide";
import { initialSnapshot, step, stateOf, type SessionSnapshot, type SessionState } from "../../machines/session";
import { GovernorEvent } from "../../schema/events";
import type { SessionSummary } from "../../schema/protocol";
import { ApiError, getLines } from "./api";
import { config } from "./config";
import { checkSocket } from "./identity";
import { live, type Live, type LinkStatus } from "./live";
import { Observable } from "./signal";

// One session as its log tells it: the log is read in pages over HTTP, checked link by
// link, and folded with the very machine the actor runs, so the chart's spend and the
// path through the states are the actor's own numbers. The session socket then
// continues the log live from the last event read.

const PAGE = 5000;
/** Past this many events the console stops reading history (the chart says so). */
export const HISTORY_CAP = 50_000;

export interface Point {
  ts: number;
  spentUsd: number;
  reservedUsd: number;
}

export interface Step {
  state: SessionState;
  seq: number;
  ts: number;
  cause: GovernorEvent;
}

export type Chain = { ok: true; through: number } | { ok: false; seq: number; reason: string };

export class SessionFeed {
  readonly version = new Observable(0);
  events: GovernorEvent[] = [];
  points: Point[] = [];
  path: Step[] = [];
  summary: SessionSummary | null = null;
  status: LinkStatus = { state: "connecting" };
  error: string | null = null;
  loading = true;
  truncated = false;
  chain: Chain = { ok: true, through: 0 };
  private snapshot: SessionSnapshot = initialSnapshot();
  private head = { seq: 0, hash: GENESIS };
  private early = new Map<number, { raw: unknown; event: GovernorEvent }>();
  private socket: Live | null = null;
  private closed = false;
  private gapTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly ctl = new AbortController();

  constructor(readonly id: string) {
    void this.start();
  }

  close(): void {
    this.closed = true;
    this.ctl.abort();
    clearTimeout(this.gapTimer);
    this.socket?.close();
  }

  private changed() {
    this.version.set(this.version.value + 1);
  }

  private async start() {
    try {
      await this.readFrom(0);
    } catch (e) {
      if (this.closed) return;
      this.error = e instanceof ApiError ? e.toString() : String(e);
    }
    this.loading = false;
    this.changed();
    if (this.closed) return;
    const room = `/parties/session/${encodeURIComponent(config.tenant)}:${encodeURIComponent(this.id)}`;
    this.socket = live({
      // Resume after the last event folded, so a reconnect misses nothing. Past the cap
      // the history is not followed: live state only.
      path: () => (this.truncated ? room : `${room}?tail=1&after=${this.head.seq}`),
      onStatus: (s) => {
        this.status = s;
        this.changed();
      },
      onInvalid: (why) => {
        this.error = `The session socket sent ${why}`;
        this.changed();
      },
      name: "The session's live connection",
      check: () => checkSocket("The session's live connection"),
      onRefused: (why) => {
        this.error = why;
        this.changed();
      },
      onMessage: (m, raw) => {
        if (m.type === "state") {
          if (!this.summary || m.summary.seq >= this.summary.seq) this.summary = m.summary;
        } else if (m.type === "event") {
          this.offer((raw as { event: unknown }).event, m.event);
        } else if (m.type === "error") {
          this.error = `${m.code}: ${m.message}`;
        }
        this.changed();
      },
    });
  }

  /** HTTP pages from `after` on, until the head or the cap. */
  private async readFrom(after: number) {
    for (;;) {
      if (this.head.seq >= HISTORY_CAP) {
        this.truncated = true;
        return;
      }
      const { lines, headers } = await getLines(`/v1/sessions/${encodeURIComponent(this.id)}/log?after=${after}&limit=${PAGE}`, this.ctl.signal);
      for (const raw of lines) {
        const parsed = GovernorEvent.safeParse(raw);
        if (!parsed.success) throw new Error(`event after #${this.head.seq} does not fit the event schema (${parsed.error.issues[0]?.path.join(".")}: ${parsed.error.issues[0]?.message})`);
        this.offer(raw, parsed.data);
      }
      this.changed();
      const next = headers.get("x-governor-next-after");
      if (!next || !lines.length) return;
      after = Number(next);
    }
  }

  /** Events fold in sequence order; one that arrives early waits for the ones before it. */
  private offer(raw: unknown, event: GovernorEvent) {
    if (event.seq <= this.head.seq) return;
    this.early.set(event.seq, { raw, event });
    for (let e = this.early.get(this.head.seq + 1); e; e = this.early.get(this.head.seq + 1)) {
      this.early.delete(e.event.seq);
      this.fold(e.raw, e.event);
    }
    clearTimeout(this.gapTimer);
    // A gap that does not close by itself is read over HTTP.
    if (this.early.size && !this.closed) this.gapTimer = setTimeout(() => void this.readFrom(this.head.seq).catch(() => {}), 1500);
  }

  private fold(raw: unknown, e: GovernorEvent) {
    if (this.chain.ok) {
      const r = raw as GovernorEvent;
      if (r.prev !== this.head.hash) this.chain = { ok: false, seq: e.seq, reason: "prev does not match the previous event's hash" };
      else if (eventHash(r) !== r.hash) this.chain = { ok: false, seq: e.seq, reason: "hash does not match the event's content" };
      else this.chain = { ok: true, through: e.seq };
    }
    const before = stateOf(this.snapshot);
    this.snapshot = step(this.snapshot, e);
    this.head = { seq: e.seq, hash: e.hash };
    // Shown with the personal values in place of their commitments (lib/pii.ts), while they exist.
    this.events.push(e.pii ? ({ ...e, data: reveal(e.data, e.pii) } as GovernorEvent) : e);
    const after = stateOf(this.snapshot);
    if (e.type === "session.opened" || after !== before) this.path.push({ state: after, seq: e.seq, ts: e.ts, cause: e });
    const c = this.snapshot.context;
    const point = { ts: e.ts, spentUsd: c.spentNanos / 1e9, reservedUsd: (committedNanos(c) - c.spentNanos) / 1e9 };
    const last = this.points.at(-1);
    if (last && last.ts === point.ts) this.points[this.points.length - 1] = point;
    else this.points.push(point);
  }
}
