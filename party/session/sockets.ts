import type * as Party from "partykit/server";
import { step } from "../../machines/session";
import type { SessionSnapshot } from "../../machines/session";
import { visiblePii } from "../../lib/pii";
import type { Role, ServerMessage, SessionSummary } from "../../schema/protocol";
import { can } from "../auth";
import { INTERNAL } from "../ops";
import type { Committed, Journal } from "./journal";
import { withPii } from "./vault";

// Who watches the session: every socket gets a `state` after every event; those who may
// read the log (operators, auditors) can also ask for the events themselves.

export interface ConnState {
  tenant: string;
  role: Role;
  name: string;
  tail: boolean;
  /** May see the policy's secrets beside the events (operators). */
  secrets?: boolean;
}

export class Sockets {
  constructor(
    private readonly room: Party.Room,
    private readonly journal: Journal,
    /** The summary as a role may see it (held arguments for those who may read the log). */
    private readonly summaryFor: (s: SessionSnapshot, role: Role) => SessionSummary,
  ) {}

  send(conn: Party.Connection, m: ServerMessage) {
    conn.send(JSON.stringify(m));
  }

  /**
   * Each event's own state, in order: a subscriber sees every transition, not just the
   * last. Tail subscribers get each event with its values beside it; the policy's secrets
   * among them only those who may configure (operators).
   */
  push({ events, pii, before, after }: Committed) {
    const conns = [...this.room.getConnections<ConnState>()];
    if (!conns.length) return;
    const readers = conns.some((c) => c.state && c.state.role !== "agent");
    const agents = conns.some((c) => !c.state || c.state.role === "agent");
    let s = before;
    for (const [i, e] of events.entries()) {
      s = events.length === 1 ? after : step(s, e);
      const plain = agents ? JSON.stringify({ type: "state", seq: e.seq, summary: this.summaryFor(s, "agent") } satisfies ServerMessage) : "";
      const full = readers ? JSON.stringify({ type: "state", seq: e.seq, summary: this.summaryFor(s, "auditor") } satisfies ServerMessage) : "";
      const tail = (secrets: boolean) => JSON.stringify({ type: "event", event: withPii(e, visiblePii(pii[i], secrets)) } satisfies ServerMessage);
      const ev = { all: tail(true), some: pii[i] ? tail(false) : undefined };
      for (const c of conns) {
        if (c.state?.tail) c.send(c.state.secrets ? ev.all : (ev.some ?? ev.all));
        c.send(!c.state || c.state.role === "agent" ? plain : full);
      }
    }
  }

  async connect(conn: Party.Connection<ConnState>, ctx: Party.ConnectionContext) {
    const h = ctx.request.headers;
    const url = new URL(ctx.request.url);
    const tenant = h.get(INTERNAL.tenant) ?? "";
    if (!this.room.id.startsWith(`${tenant}:`)) {
      conn.close(4003, "forbidden");
      return;
    }
    const role = (h.get(INTERNAL.role) ?? "auditor") as Role;
    // The tail is the log itself: only those who may export it get it.
    const wantsTail = url.searchParams.get("tail") === "1" || url.searchParams.has("after");
    if (wantsTail && !can({ tenant, role, name: "" }, "export")) {
      this.send(conn, { type: "error", code: "forbidden", message: `role "${role}" may not read the event tail` });
    }
    conn.setState({ tenant, role, name: h.get(INTERNAL.name) ?? "", tail: wantsTail && can({ tenant, role, name: "" }, "export"), secrets: can({ tenant, role, name: "" }, "configure") });
    if (!this.journal.context.opened) {
      this.send(conn, { type: "error", code: "not_found", message: "no such session: open it with POST /v1/sessions first" });
    }
    this.send(conn, { type: "state", seq: this.journal.head.seq, summary: this.summaryFor(this.journal.snapshot, role) });
    const after = Number(url.searchParams.get("after"));
    if (conn.state?.tail && url.searchParams.has("after") && Number.isInteger(after) && after >= 0) await this.backfill(conn, after);
  }

  /** Called after a backfill, with the socket that got it (the latest signed head follows the events). */
  afterBackfill: (conn: Party.Connection) => void = () => {};

  async backfill(conn: Party.Connection<ConnState>, after: number) {
    for await (const e of this.journal.events(after, conn.state?.secrets ?? false)) this.send(conn, { type: "event", event: e });
    this.afterBackfill(conn);
  }
}
