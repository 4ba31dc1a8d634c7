import type * as Party from "partykit/server";
import { ForbiddenError, GovernorError, NotFoundError } from "../lib/errors";
import { decideEnd } from "../machines/money";
import { killReason, type ActionBody, type ReportBody } from "../schema/api";
import type { ActionSource, Attribution } from "../schema/events";
import { listedActions } from "../machines/rules";
import { can, requirePermission, type Permission } from "./auth";
import { admitSocket, refuseDirectRequest } from "./admission";
import { errorResponse, json } from "./http";
import { decodeClientMessage } from "./messages";
import { INTERNAL, type Carrying, type SessionOp } from "./ops";
import { Notifier } from "./notify";
import { OtlpExporter } from "./otel";
import { Approvals } from "./session/approvals";
import { Checkpoints } from "./session/checkpoints";
import { Erasures } from "./session/erasure";
import { Journal } from "./session/journal";
import { withPii } from "./session/vault";
import { visiblePii } from "../lib/pii";
import { Reservations } from "./session/reservations";
import { Sockets, type ConnState } from "./session/sockets";
import { deadlinesOf, Timers } from "./session/timers";
import { stateOf, type SessionSnapshot } from "../machines/session";
import { Role, type SessionSummary } from "../schema/protocol";

const roleOf = (req: Party.Request): Role => (req.headers.get(INTERNAL.role) ?? "agent") as Role;

// One Durable Object per agent session. It alone decides for its session, so decisions
// are made synchronously against in-memory state (one turn: read, decide, append), and
// the write is awaited before anyone is answered: nothing acknowledged is ever lost.
//
// The parts live in party/session/: the log (journal.ts), sockets, approvals and actions,
// reservations of proxied calls, and timers (alarm and the tenant's index). This class
// wires them together and routes what arrives.

/** Policy secrets beside the log's events go to those who may configure (operators). */
function secretsFor(req: Party.Request): boolean {
  const role = Role.safeParse(req.headers.get(INTERNAL.role));
  return role.success && can({ tenant: "", role: role.data, name: "" }, "configure");
}

export default class SessionActor implements Party.Server {
  readonly options: Party.ServerOptions = { hibernate: true };

  private journal: Journal;
  private sockets: Sockets;
  private approvals: Approvals;
  private money: Reservations;
  private timers: Timers;
  private notifier: Notifier;
  private checkpoints: Checkpoints;
  private erasures: Erasures;

  constructor(readonly room: Party.Room) {
    this.journal = new Journal(room.storage);
    this.approvals = new Approvals(room, this.journal);
    this.sockets = new Sockets(room, this.journal, (s, role) => this.summaryFor(s, role));
    this.timers = new Timers(room, this.journal, (s) => this.summaryFor(s, "auditor"));
    this.money = new Reservations(room, this.journal, (added) => this.timers.schedule(added));
    this.timers.money = this.money;
    this.notifier = new Notifier(room.storage, () => this.consoleUrl());
    this.checkpoints = new Checkpoints(room, this.journal);
    // After an erasure the index must not keep the summary from before: pushed at once.
    this.erasures = new Erasures(room, this.journal, this.notifier, this.approvals.held, () => this.timers.flushIndex());
    this.sockets.afterBackfill = (conn) => this.checkpoints.sendLatest(conn);
    this.journal.extrasFor = (events, before, after) => this.approvals.finals(events, before, after);
    // Each follow-up of a stored batch runs on its own (the journal isolates failures).
    this.journal.onCommitted((c) => this.timers.schedule(deadlinesOf(c.events)));
    this.journal.onCommitted((c) => this.approvals.deliver(c.extras));
    this.journal.onCommitted((c) => this.money.committed(c));
    this.journal.onCommitted((c) => this.sockets.push(c));
    this.journal.onCommitted((c) => this.checkpoints.committed(c));
    const otel = OtlpExporter.fromEnv(room.env);
    // Spans name the user as the live actor shows it (the values, not their commitments).
    if (otel) this.journal.onCommitted((c) => otel.record(this.journal.vault.revealBatch(c)));
    this.journal.onCommitted((c) => this.timers.scheduleIndex(stateOf(c.before) !== stateOf(c.after) || c.events[0].type === "session.opened", deadlinesOf(c.events)));
    this.journal.onCommitted((c) => {
      const policy = c.after.context.policy;
      if (!policy?.notify.length) return;
      const targets = this.journal.vault.targets(policy.notify);
      const summary = this.journal.summary(c.after);
      c.events.forEach((e, i) => this.notifier.onEvent(withPii(e, visiblePii(c.pii[i], false)), targets, summary));
    });
  }

  /** Sockets authenticate with ?token= and may only open rooms of their own tenant. */
  static onBeforeConnect(req: Party.Request, lobby: Party.Lobby) {
    return admitSocket(req, lobby, (p, roomId) => {
      if (!roomId.startsWith(`${p.tenant}:`)) throw new ForbiddenError("this token may not open another tenant's session");
    });
  }

  static onBeforeRequest = refuseDirectRequest;

  async onStart() {
    await this.journal.load();
    await this.approvals.load();
    await this.checkpoints.load();
    // What storage says about the alarm may never fire after a restart: set it from the state.
    this.timers.rearm();
    this.money.prefetch();
    await this.notifier.resume();
  }

  /**
   * A summary as `role` may see it: those who may read the log (operators, auditors; the
   * tenant's index is theirs too) get the held arguments of pending approvals whole.
   * Notifications and agents get the log's fields only.
   */
  private summaryFor(snap: SessionSnapshot, role: Role): SessionSummary {
    // The folded state holds commitments: shown with the values beside the log (until erased).
    const plain = this.journal.summary(snap);
    if (!can({ tenant: "", role, name: "" }, "export")) return plain;
    return this.approvals.held.decorate(plain, snap.context.policy?.keep_raw ?? false);
  }

  private consoleUrl(): string | undefined {
    const base = this.room.env.GOVERNOR_PUBLIC_URL as string | undefined;
    const c = this.journal.context;
    return base ? `${base.replace(/\/$/, "")}/?tenant=${encodeURIComponent(c.tenant)}#session=${encodeURIComponent(c.session)}` : undefined;
  }

  async onConnect(conn: Party.Connection<ConnState>, ctx: Party.ConnectionContext) {
    await this.sockets.connect(conn, ctx);
  }

  async onMessage(raw: string | ArrayBuffer | ArrayBufferView, conn: Party.Connection<ConnState>) {
    let id: string | undefined;
    try {
      const decoded = decodeClientMessage(raw);
      id = decoded.id;
      if (!decoded.msg) throw decoded.error;
      const msg = decoded.msg;
      const state = conn.state!;
      const need = (p: Permission) => requirePermission({ tenant: state.tenant, role: state.role, name: state.name }, p);
      this.requireOpen();
      switch (msg.type) {
        case "check": {
          need("check");
          const { type: _t, ...body } = msg;
          const answer = await this.action(body, {}, 0, "socket");
          // A review is not final: the decision follows on this socket when an operator makes it.
          this.send(conn, { type: "decision", ...answer, id: msg.id, final: answer.decision !== "review" });
          return;
        }
        case "report":
          need("report");
          await this.report(msg.report);
          return;
        case "approve":
        case "deny":
          need("decide");
          await this.approval(msg.approvalId, msg.type === "approve" ? "approve" : "deny", state.name, msg.note);
          return;
        case "kill":
          need("decide");
          {
            const { reason, replaced } = killReason(msg.reason);
            await this.end("kill", reason, state.name, replaced);
          }
          return;
        case "subscribe":
          need("export");
          conn.setState({ ...state, tail: msg.tail });
          if (msg.after !== undefined) await this.backfill(conn, msg.after);
          return;
      }
    } catch (e) {
      const err = e instanceof GovernorError ? e : new GovernorError("internal_error", 500, "internal error");
      if (!(e instanceof GovernorError)) console.error(e);
      this.send(conn, { type: "error", code: err.code, message: err.message, field: err.field, id });
    }
  }

  // ---------------------------------------------------------------- HTTP (from the gateway)

  async onRequest(req: Party.Request): Promise<Response> {
    try {
      const tenant = req.headers.get(INTERNAL.tenant);
      if (!tenant || !this.room.id.startsWith(`${tenant}:`)) throw new ForbiddenError("this token may not reach another tenant's session");
      const by = req.headers.get(INTERNAL.name) ?? "unknown";
      const op = (await req.json()) as Carrying;
      // Settles of finished calls riding along (party/proxy/settles.ts): applied first, in
      // this turn, so whatever the op decides or shows counts the calls' real costs.
      const carried = op.op !== "settles" && op.settles?.length && this.journal.context.opened ? this.money.settleAll(op.settles) : undefined;
      const res = await this.handle(op, by, req);
      await carried;
      return res;
    } catch (e) {
      return errorResponse(e);
    }
  }

  private async handle(op: SessionOp, by: string, req: Party.Request): Promise<Response> {
    if (op.op === "open") return await this.open(op);
    // Woken after a restart: onStart has re-armed the alarm, nothing else to do.
    if (op.op === "wake") return json({ ok: true, opened: this.journal.context.opened });
    this.requireOpen();
    switch (op.op) {
      case "get":
        return json(this.summaryFor(this.journal.snapshot, roleOf(req)));
      case "held-args":
        return json(await this.heldArgs(op.approvalId));
      case "log":
        return await this.journal.log(op.after, op.limit, secretsFor(req), (head) => this.checkpoints.trailer(head.seq, head.hash));
      case "action":
        return json(await this.action(op.body, op.attribution, op.waitMs, op.source ?? "http"));
      case "report":
        return json(await this.report(op.body), 201);
      case "approval":
        return json(await this.approval(op.approvalId, op.decision, by, op.note));
      case "kill":
      case "close":
        return json(await this.end(op.op, op.reason, by, op.replaced));
      case "reserve":
        return await this.money.reserve(op.input);
      case "settle":
        return json(await this.money.settle(op));
      case "settles":
        return json(await this.money.settleAll(op.settles));
      case "progress":
        return await this.money.report(op);
      case "deliveries":
        return json({ deliveries: await this.notifier.list() });
      case "listed":
        return json({ listed: listedActions(this.journal.context.policy, op.actions) });
      case "erase":
        return json(await this.erasures.erase(op, by));
    }
  }

  async onAlarm() {
    await this.timers.alarm();
  }

  // ---------------------------------------------------------------- what sockets and HTTP share

  private requireOpen() {
    if (!this.journal.context.opened) throw new NotFoundError("no such session: open it with POST /v1/sessions first");
  }

  private send(conn: Party.Connection, m: Parameters<Sockets["send"]>[1]) {
    this.sockets.send(conn, m);
  }

  private backfill(conn: Party.Connection<ConnState>, after: number) {
    return this.sockets.backfill(conn, after);
  }

  private action(body: ActionBody, attribution: Attribution, waitMs: number, source: ActionSource) {
    return this.approvals.action(body, attribution, waitMs, source);
  }

  private report(body: ReportBody) {
    return this.approvals.report(body);
  }

  private approval(approvalId: string, decision: "approve" | "deny", by: string, note?: string) {
    return this.approvals.decide(approvalId, decision, by, note);
  }

  /** One pending approval with every argument as sent, however large (the summary names large ones by size). */
  private async heldArgs(approvalId: string) {
    const pending = this.summaryFor(this.journal.snapshot, "auditor").pendingApprovals.find((a) => a.approvalId === approvalId);
    if (!pending) throw new NotFoundError(`no pending approval "${approvalId}" in this session`);
    const args = await this.approvals.held.whole(approvalId);
    return args ? { ...pending, args, argsFull: true, argsBytes: this.approvals.held.get(approvalId)!.bytes } : pending;
  }

  /** Kill or close. Calls in flight hear of it through their held progress reports (reservations.ts). */
  private async end(how: "kill" | "close", reason: string, by: string, replaced?: string) {
    const d = decideEnd(this.journal.view, { how, by, reason, replaced, id: crypto.randomUUID() });
    await this.journal.commit(d.drafts).write;
    return this.journal.summary();
  }

  private async open(op: Extract<SessionOp, { op: "open" }>): Promise<Response> {
    // Asked before the check below, so two opens racing cannot both pass it.
    const signingKid = this.journal.context.opened ? undefined : await this.checkpoints.signingKid();
    if (this.journal.context.opened) return json(this.journal.summary(), 200);
    const [tenant] = this.room.id.split(":");
    const { write } = this.journal.commit([
      { type: "session.opened", id: `open:${op.id}`, data: { tenant, session: op.id, policy: op.policy, agent: op.agent, user: op.user, task: op.task, ...(signingKid && { signingKid }) } },
    ]);
    await write;
    this.money.prefetch();
    return json(this.journal.summary(), 201);
  }
}
