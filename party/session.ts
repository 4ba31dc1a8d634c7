import type * as Party from "partykit/server";
import { GENESIS, sha256Hex, canonicalJson } from "../lib/chain";
import { appendDrafts } from "../machines/log";
import { ForbiddenError, GovernorError, NotFoundError } from "../lib/errors";
import { toUsd } from "../lib/money";
import {
  decideAction,
  decideApproval,
  decideEnd,
  decideReport,
  decideReserve,
  decideSettle,
  decideTimers,
  nextDeadline,
  remainingUsd,
  STATUS,
  type Abandoned,
  type ReserveInput,
  type Verdict,
  type View,
} from "../machines/decide";
import { initialSnapshot, restore, stateOf, step, type SessionSnapshot, type SessionState } from "../machines/session";
import type { SessionContext } from "../machines/context";
import type { RateHit } from "../machines/rules";
import { summarize } from "../machines/summary";
import type { EventDraft, GovernorEvent } from "../schema/events";
import type { DecisionMessage, Role, ServerMessage } from "../schema/protocol";
import { killReason, type ActionBody, type ReportBody } from "../schema/api";
import type { Attribution, Usage } from "../schema/events";
import { can, requirePermission, type Permission } from "./auth";
import { admitSocket, refuseDirectRequest } from "./admission";
import { errorResponse, json } from "./http";
import { decodeClientMessage } from "./messages";
import { callTenant } from "./calls";
import { INTERNAL, type ReserveAnswer, type ReserveRequest, type SessionOp } from "./ops";
import { Notifier } from "./notify";

// One Durable Object per agent session. It alone decides for its session, so decisions
// are made synchronously against in-memory state (one turn: read, decide, append), and
// the write is awaited before anyone is answered: nothing acknowledged is ever lost.

const SNAPSHOT_EVERY = 256;
// Durable Object values hold at most 128 KiB; an event stays well under it.
const MAX_EVENT_BYTES = 100_000;
const SNAPSHOT_KEY = "snapshot";
const IDEM_CACHE = 4096;
const MAX_WAIT_MS = 120_000;
const INDEX_DELAY_MS = 200;
// Heartbeats come every second while a stream runs; this long without one means the
// gateway lost the request (the client went away and the runtime dropped it).
const STREAM_IDLE_MS = 5_000;

const eventKey = (seq: number) => `e:${String(seq).padStart(12, "0")}`;

interface ConnState {
  tenant: string;
  role: Role;
  name: string;
  tail: boolean;
}

interface Persisted {
  seq: number;
  hash: string;
  value: SessionState;
  context: SessionContext;
}

type Held = { input: ReserveRequest; resolve: (r: Response) => void; timer: ReturnType<typeof setTimeout> };

export default class SessionActor implements Party.Server {
  readonly options: Party.ServerOptions = { hibernate: true };

  private snapshot: SessionSnapshot = initialSnapshot();
  private head = { seq: 0, hash: GENESIS };
  private idem = new Map<string, unknown>();
  private inflight = new Map<string, Promise<unknown>>();
  private approvalWaiters = new Map<string, Set<(m: DecisionMessage) => void>>();
  private held: Held[] = [];
  private streams = new Map<string, { costUsd: number; usage: Usage; staleAt: number }>();
  private alarmAt: number | null = null;
  private indexDirty = false;
  private indexing = false;
  private indexTimer: ReturnType<typeof setTimeout> | undefined;
  private indexRetryMs = INDEX_DELAY_MS;
  private notifier: Notifier;

  constructor(readonly room: Party.Room) {
    this.notifier = new Notifier(room.storage, () => this.consoleUrl());
  }

  /** Sockets authenticate with ?token= and may only open rooms of their own tenant. */
  static onBeforeConnect(req: Party.Request, lobby: Party.Lobby) {
    return admitSocket(req, lobby, (p, roomId) => {
      if (!roomId.startsWith(`${p.tenant}:`)) throw new ForbiddenError("this token may not open another tenant's session");
    });
  }

  static onBeforeRequest = refuseDirectRequest;

  async onStart() {
    await this.load();
    await this.notifier.resume();
  }

  private async load() {
    const saved = await this.room.storage.get<Persisted>(SNAPSHOT_KEY);
    let snap = saved ? restore(saved.value, saved.context) : initialSnapshot();
    let head = saved ? { seq: saved.seq, hash: saved.hash } : { seq: 0, hash: GENESIS };
    const tail = await this.room.storage.list<GovernorEvent>({ prefix: "e:", start: eventKey(head.seq + 1) });
    for (const e of tail.values()) {
      snap = step(snap, e);
      head = { seq: e.seq, hash: e.hash };
    }
    this.snapshot = snap;
    this.head = head;
    this.alarmAt = await this.room.storage.getAlarm();
  }

  private get view(): View {
    return { state: stateOf(this.snapshot), context: this.snapshot.context };
  }

  private consoleUrl(): string | undefined {
    const base = this.room.env.GOVERNOR_PUBLIC_URL as string | undefined;
    const c = this.snapshot.context;
    return base ? `${base.replace(/\/$/, "")}/?tenant=${encodeURIComponent(c.tenant)}#session=${encodeURIComponent(c.session)}` : undefined;
  }

  // ---------------------------------------------------------------- append

  /**
   * Validates, chains and folds every draft on the side; only when all are good does the
   * actor take them, so a bad draft leaves neither memory nor storage half-written.
   */
  private commit(drafts: EventDraft[], idem?: { key: string; answer: (v: View) => unknown; fresh?: boolean }): { events: GovernorEvent[]; write: Promise<void>; answer?: unknown } {
    const before = this.snapshot;
    const { events, snapshot: snap, head } = appendDrafts(this.snapshot, this.head, drafts, Date.now());
    const puts: Record<string, unknown> = {};
    for (const e of events) {
      const size = JSON.stringify(e).length;
      if (size > MAX_EVENT_BYTES) throw new GovernorError("payload_too_large", 413, `the ${e.type} event would be ${size} bytes (limit ${MAX_EVENT_BYTES}): send smaller arguments or leave keep_raw off`);
      puts[eventKey(e.seq)] = e;
    }
    const finals = this.finalDecisions(events, before, snap);
    for (const [approvalId, { type: _t, final: _f, ...stored }] of finals) {
      puts[`i:approval-final:${approvalId}`] = stored;
      this.remember(`approval-final:${approvalId}`, stored);
    }
    this.snapshot = snap;
    this.head = head;
    let answer: unknown;
    if (idem) {
      answer = idem.answer(this.view);
      // A key we generated cannot come back in a retry: nothing to remember it by.
      if (!idem.fresh) {
        puts[`i:${idem.key}`] = answer;
        this.remember(idem.key, answer);
      }
    }
    const stored = Object.keys(puts).length ? this.room.storage.put(puts) : Promise.resolve();
    // Subscribers, webhooks and waiters hear of events only once they are stored.
    const write = stored.then(
      () => {
        if (!events.length) return;
        this.afterCommit(events, before, snap, finals);
        // The snapshot (of the batch's end) goes in its own write, after the events it
        // covers: if it is too large to store, the session still works, waking a bit slower.
        if (events.some((e) => e.seq % SNAPSHOT_EVERY === 0)) {
          const snapshot: Persisted = { seq: head.seq, hash: head.hash, value: stateOf(snap), context: snap.context };
          this.room.storage.put(SNAPSHOT_KEY, snapshot).catch((e) => console.error("snapshot not stored; the next wake-up folds more events", e));
        }
      },
      (e) => this.writeFailed(e),
    );
    return { events, write, answer };
  }

  /** Memory ran ahead of a write that failed: start again from what storage holds. */
  private async writeFailed(e: unknown): Promise<never> {
    console.error("storage write failed; reloading the session", e);
    this.idem.clear();
    await this.load();
    throw new GovernorError("internal_error", 503, "the event could not be stored; nothing was recorded, try again");
  }

  private remember(key: string, answer: unknown) {
    this.idem.set(key, answer);
    if (this.idem.size > IDEM_CACHE) this.idem.delete(this.idem.keys().next().value as string);
  }

  private async recall(key: string): Promise<unknown> {
    if (this.idem.has(key)) return this.idem.get(key);
    const stored = await this.room.storage.get(`i:${key}`);
    if (stored !== undefined) this.remember(key, stored);
    return stored;
  }

  /**
   * Runs `decide` once per idempotency key: a retry, or a duplicate racing the first,
   * gets the first answer instead of being charged again.
   */
  private async once<T>(key: string, decide: () => Promise<T>, fresh = false): Promise<T> {
    const running = this.inflight.get(key);
    if (running) return running as Promise<T>;
    const p = (async () => {
      // An id we generated ourselves cannot have been seen before: skip the storage read.
      const prior = fresh ? undefined : await this.recall(key);
      if (prior !== undefined) return prior as T;
      return decide();
    })();
    this.inflight.set(key, p);
    try {
      return await p;
    } finally {
      this.inflight.delete(key);
    }
  }

  /** Each follow-up runs on its own: one failing (a closed socket, say) must not stop the rest. */
  private afterCommit(events: GovernorEvent[], before: SessionSnapshot, after: SessionSnapshot, finals: Map<string, DecisionMessage>) {
    const policy = after.context.policy;
    const steps: Array<() => void> = [
      () => this.scheduleAlarm(),
      () => this.deliverDecisions(finals),
      () => {
        if (this.held.length && stateOf(this.snapshot) !== "awaiting-approval") this.releaseHeld();
      },
      () => this.push(events, before, after),
      () => this.scheduleIndex(stateOf(before) !== stateOf(after) || events[0].type === "session.opened"),
      () => {
        if (policy?.notify.length) for (const e of events) this.notifier.onEvent(e, policy.notify, summarize(after));
      },
    ];
    for (const step of steps) {
      try {
        step();
      } catch (e) {
        console.error("after-commit step failed", e);
      }
    }
  }

  // ---------------------------------------------------------------- subscribers

  private push(events: GovernorEvent[], before: SessionSnapshot, after: SessionSnapshot) {
    const conns = [...this.room.getConnections<ConnState>()];
    if (!conns.length) return;
    // Each event's own state, in order: a subscriber sees every transition, not just the last.
    const states: ServerMessage[] = [];
    let s = before;
    for (const e of events) {
      s = events.length === 1 ? after : step(s, e);
      states.push({ type: "state", seq: e.seq, summary: summarize(s) });
    }
    for (let i = 0; i < events.length; i++) {
      const ev = JSON.stringify({ type: "event", event: events[i] } satisfies ServerMessage);
      const st = JSON.stringify(states[i]);
      for (const c of conns) {
        if (c.state?.tail) c.send(ev);
        c.send(st);
      }
    }
  }

  async onConnect(conn: Party.Connection<ConnState>, ctx: Party.ConnectionContext) {
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
    conn.setState({ tenant, role, name: h.get(INTERNAL.name) ?? "", tail: wantsTail && can({ tenant, role, name: "" }, "export") });
    if (!this.snapshot.context.opened) {
      this.send(conn, { type: "error", code: "not_found", message: "no such session: open it with POST /v1/sessions first" });
    }
    this.send(conn, { type: "state", seq: this.head.seq, summary: summarize(this.snapshot) });
    const after = Number(url.searchParams.get("after"));
    if (conn.state?.tail && url.searchParams.has("after") && Number.isInteger(after) && after >= 0) await this.backfill(conn, after);
  }

  private async backfill(conn: Party.Connection, after: number) {
    let from = after;
    for (;;) {
      const page = await this.room.storage.list<GovernorEvent>({ prefix: "e:", start: eventKey(from + 1), limit: 500 });
      for (const e of page.values()) {
        this.send(conn, { type: "event", event: e });
        from = e.seq;
      }
      if (page.size < 500) break;
    }
  }

  private send(conn: Party.Connection, m: ServerMessage) {
    conn.send(JSON.stringify(m));
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
          const answer = await this.action(body, {}, 0);
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
      const op = (await req.json()) as SessionOp;
      if (op.op === "open") return await this.open(op);
      this.requireOpen();
      switch (op.op) {
        case "get":
          return json(summarize(this.snapshot));
        case "log":
          return await this.log(op.after, op.limit);
        case "action":
          return json(await this.action(op.body, op.attribution, op.waitMs));
        case "report":
          return json(await this.report(op.body), 201);
        case "approval":
          return json(await this.approval(op.approvalId, op.decision, by, op.note));
        case "kill":
        case "close":
          return json(await this.end(op.op, op.reason, by, op.replaced));
        case "reserve":
          return await this.reserve(op.input);
        case "settle":
          return json(await this.settle(op));
        case "progress":
          this.progressed(op);
          return json({ ok: true });
        case "deliveries":
          return json({ deliveries: await this.notifier.list() });
      }
    } catch (e) {
      return errorResponse(e);
    }
  }

  private requireOpen() {
    if (!this.snapshot.context.opened) throw new NotFoundError("no such session: open it with POST /v1/sessions first");
  }

  private money(): { spentUsd: number; remainingUsd: number | null } {
    const c = this.snapshot.context;
    return { spentUsd: toUsd(c.spentNanos), remainingUsd: remainingUsd(c) };
  }

  private async open(op: Extract<SessionOp, { op: "open" }>): Promise<Response> {
    if (this.snapshot.context.opened) return json(summarize(this.snapshot), 200);
    const [tenant] = this.room.id.split(":");
    const { write } = this.commit([
      { type: "session.opened", id: `open:${op.id}`, data: { tenant, session: op.id, policy: op.policy, agent: op.agent, user: op.user, task: op.task } },
    ]);
    await write;
    return json(summarize(this.snapshot), 201);
  }

  private async log(after: number, limit: number): Promise<Response> {
    const page = await this.room.storage.list<GovernorEvent>({ prefix: "e:", start: eventKey(after + 1), limit });
    const lines = [...page.values()].map((e) => JSON.stringify(e)).join("\n");
    const last = [...page.values()].at(-1);
    const headers: Record<string, string> = { "content-type": "application/x-ndjson", "x-governor-head-seq": String(this.head.seq) };
    if (last && last.seq < this.head.seq) headers["x-governor-next-after"] = String(last.seq);
    return new Response(lines ? `${lines}\n` : "", { headers });
  }

  /** Quotas per user and per agent span sessions, so the tenant actor holds them. */
  private async crossSessionRate(attribution: Attribution): Promise<RateHit | undefined> {
    const c = this.snapshot.context;
    const rules = (c.policy?.limits.rate ?? []).filter((r) => r.per === "user" || r.per === "agent");
    if (!rules.length) return undefined;
    const keys = rules.flatMap((r) => {
      const who = r.per === "user" ? attribution.user ?? c.user : attribution.agent ?? c.agent;
      return who ? [{ key: `${r.per}:${who}:${r.max}/${r.window}`, max: r.max, windowMs: r.window }] : [];
    });
    if (!keys.length) return undefined;
    const res = await callTenant(this.room.context, c.tenant, { op: "hit", keys, now: Date.now() });
    const answer = (await res.json()) as { ok: boolean; key?: string; retryAfterMs?: number; count?: number };
    if (answer.ok) return undefined;
    const per = answer.key?.split(":")[0] ?? "user";
    return { rule: `limits.rate[per=${per}]`, reason: `${answer.key?.split(":").slice(0, 2).join(" ")} reached its rate limit across sessions`, retryAfterMs: answer.retryAfterMs ?? 1000 };
  }

  private async action(body: ActionBody, attribution: Attribution, waitMs: number) {
    const id = body.id ?? crypto.randomUUID();
    const answer = await this.once(`action:${id}`, async () => {
      const attr: Attribution = { ...attribution, run: body.run ?? attribution.run, agent: body.agent ?? attribution.agent, user: body.user ?? attribution.user, action: body.action };
      const argsHash = sha256Hex(canonicalJson(body.args));
      const input = { id, action: body.action, args: body.args, argsHash, costUsd: body.costUsd, attribution: attr };
      const limited = this.isLive() ? await this.crossSessionRate(attr) : undefined;
      const decision = decideAction(this.view, input, Date.now(), limited);
      const { write, answer } = this.commit(decision.drafts, { key: `action:${id}`, answer: () => this.actionAnswer(id, decision.verdict), fresh: body.id === undefined });
      await write;
      return answer as ReturnType<SessionActor["actionAnswer"]>;
    }, body.id === undefined);
    if (answer.decision !== "review" || !answer.approvalId) return answer;
    // A retry after the operator decided gets the decision, not the stale review.
    if (!this.snapshot.context.approvals[answer.approvalId]) {
      return ((await this.recall(`approval-final:${answer.approvalId}`)) as typeof answer | undefined) ?? answer;
    }
    if (waitMs > 0) return await this.waitForApproval(answer.approvalId, Math.min(waitMs, MAX_WAIT_MS), answer);
    return answer;
  }

  private isLive(): boolean {
    const s = stateOf(this.snapshot);
    return s !== "killed" && s !== "closed";
  }

  private actionAnswer(id: string, v: Verdict) {
    return {
      id,
      decision: v.decision as "allow" | "deny" | "review",
      ...(v.code && { code: v.code }),
      ...(v.rule && { rule: v.rule }),
      ...(v.reason && { reason: v.reason }),
      ...(v.approvalId && { approvalId: v.approvalId }),
      ...(v.retryAfterMs !== undefined && { retryAfter: Math.ceil(v.retryAfterMs / 1000) }),
      ...this.money(),
    };
  }

  private waitForApproval(approvalId: string, waitMs: number, pending: ReturnType<SessionActor["actionAnswer"]>) {
    return new Promise<ReturnType<SessionActor["actionAnswer"]>>((resolve) => {
      const set = this.approvalWaiters.get(approvalId) ?? new Set();
      const done = (m: DecisionMessage) => {
        clearTimeout(timer);
        set.delete(done);
        const { type: _t, final: _f, ...rest } = m;
        resolve(rest as ReturnType<SessionActor["actionAnswer"]>);
      };
      const timer = setTimeout(() => {
        set.delete(done);
        resolve(pending);
      }, waitMs);
      set.add(done);
      this.approvalWaiters.set(approvalId, set);
    });
  }

  /**
   * The final decisions a batch makes on reviewed actions (granted, denied, timed out, or
   * ended with the session), keyed by approval id. They are stored with the batch, so a
   * retry of the reviewed action finds the decision even after a restart.
   */
  private finalDecisions(events: GovernorEvent[], before: SessionSnapshot, after: SessionSnapshot): Map<string, DecisionMessage> {
    const money = { spentUsd: toUsd(after.context.spentNanos), remainingUsd: remainingUsd(after.context) };
    const out = new Map<string, DecisionMessage>();
    const decide = (approvalId: string, granted: boolean, by: string, note?: string) => {
      // The first decision on an approval is the one that stands.
      if (out.has(approvalId)) return;
      const requested = before.context.approvals[approvalId]?.requestId;
      out.set(approvalId, {
        type: "decision",
        id: requested ?? approvalId,
        decision: granted ? "allow" : "deny",
        ...(granted ? {} : { code: "policy_violation" }),
        rule: "approval",
        reason: `${granted ? "approved" : "denied"} by ${by}${note ? `: ${note}` : ""}`,
        approvalId,
        ...money,
        final: true,
      });
    };
    for (const e of events) {
      if (e.type === "approval.granted" || e.type === "approval.denied") decide(e.data.approvalId, e.type === "approval.granted", e.data.by, e.data.note);
      // Whoever waits on an approval learns that it will never come.
      if (e.type === "session.killed" || e.type === "session.closed") {
        for (const a of Object.keys(before.context.approvals)) decide(a, false, e.data.by, `session ended: ${e.data.reason ?? e.type}`);
      }
    }
    return out;
  }

  /** The decision on a reviewed action goes to whoever waits on it: held HTTP calls and every socket. */
  private deliverDecisions(finals: Map<string, DecisionMessage>) {
    for (const [approvalId, msg] of finals) {
      for (const w of this.approvalWaiters.get(approvalId) ?? []) w(msg);
      this.approvalWaiters.delete(approvalId);
      const text = JSON.stringify(msg);
      for (const c of this.room.getConnections()) c.send(text);
    }
  }

  private async report(body: ReportBody) {
    const id = body.id ?? crypto.randomUUID();
    return this.once(`report:${id}`, async () => {
      const decision = decideReport(this.view, { ...body, id }, Date.now());
      const { write, answer } = this.commit(decision.drafts, { key: `report:${id}`, answer: (v) => ({ id, accepted: true, state: v.state, ...this.money() }), fresh: body.id === undefined });
      await write;
      return answer;
    }, body.id === undefined);
  }

  private async approval(approvalId: string, decision: "approve" | "deny", by: string, note?: string) {
    return this.once(`approval:${approvalId}`, async () => {
      const d = decideApproval(this.view, { approvalId, decision, by, note }, Date.now());
      if (!d) throw new GovernorError("not_found", 404, `no pending approval "${approvalId}" in this session`, { field: "approvalId" });
      const { write, answer } = this.commit(d.drafts, { key: `approval:${approvalId}`, answer: (v) => ({ approvalId, decision: d.verdict.decision, state: v.state, ...this.money() }) });
      await write;
      return answer;
    });
  }

  private async end(how: "kill" | "close", reason: string, by: string, replaced?: string) {
    const d = decideEnd(this.view, { how, by, reason, replaced, id: crypto.randomUUID() });
    const { write } = this.commit(d.drafts);
    await write;
    return summarize(this.snapshot);
  }

  // ---------------------------------------------------------------- reservations (the proxy)

  /** The worst case: every prompt token at the input price, plus the output cap at the output price. */
  private priced(req: ReserveRequest): ReserveInput & { outputCap: number } {
    const outputCap = req.maxOutputTokens ?? this.snapshot.context.policy?.budget.default_max_tokens ?? 4096;
    const maxOut = outputCap * req.choices;
    const estimateUsd = req.price ? (req.promptTokens * req.price.input + maxOut * req.price.output) / 1_000_000 : 0;
    return { ...req, maxOutputTokens: maxOut, outputCap, estimateUsd, priced: req.price !== null };
  }

  private async reserve(req: ReserveRequest): Promise<Response> {
    const input = this.priced(req);
    let decidedHere = false;
    const answer = await this.once(`reserve:${input.requestId}`, async () => {
      decidedHere = true;
      // A call that will be held is counted against cross-session rates when it is released, not twice.
      if (stateOf(this.snapshot) === "awaiting-approval" && this.snapshot.context.policy?.approval.while_pending === "hold") return undefined;
      const limited = this.isLive() ? await this.crossSessionRate(input.attribution) : undefined;
      const decision = decideReserve(this.view, input, Date.now(), limited);
      if (decision.verdict.decision === "hold") return undefined;
      const { write, answer } = this.commit(decision.drafts, { key: `reserve:${input.requestId}`, answer: () => ({ ...this.reserveAnswer(input.requestId, decision.verdict, input.estimateUsd), ...(decision.verdict.decision === "allow" && { outputCap: input.outputCap }) }), fresh: !req.clientKey });
      await write;
      return answer as ReserveAnswer;
    }, !req.clientKey);
    if (answer === undefined) return this.hold(req);
    // A replayed Idempotency-Key must not send a second call out on the first one's
    // reservation (which may be settled already): the call it names was already made.
    if (!decidedHere && answer.decision === "allow") {
      throw new GovernorError("conflict", 409, `Idempotency-Key "${req.requestId}" was already used for a call that went out; use a new key for a new call`, { field: "Idempotency-Key" });
    }
    return json(answer, answer.decision === "allow" ? 200 : STATUS[answer.code as keyof typeof STATUS] ?? 403);
  }

  private reserveAnswer(requestId: string, v: Verdict, estimateUsd?: number): ReserveAnswer {
    return {
      requestId,
      decision: v.decision === "allow" ? "allow" : "deny",
      ...(v.decision === "allow" && estimateUsd !== undefined && { estimateUsd }),
      ...(v.code && { code: v.code }),
      ...(v.rule && { rule: v.rule }),
      ...(v.reason && { reason: v.reason }),
      ...(v.retryAfterMs !== undefined && { retryAfterMs: v.retryAfterMs }),
      ...this.money(),
    };
  }

  /** `approval.while_pending: hold`: the call waits for the decision, up to the approval timeout. */
  private hold(input: Held["input"]): Promise<Response> {
    const limit = Math.min(this.snapshot.context.policy?.approval.timeout ?? MAX_WAIT_MS, MAX_WAIT_MS);
    return new Promise((resolve) => {
      const entry: Held = {
        input,
        resolve,
        timer: setTimeout(() => {
          this.held = this.held.filter((h) => h !== entry);
          resolve(json(this.reserveAnswer(input.requestId, { decision: "deny", code: "awaiting_approval", rule: "approval.while_pending", reason: "still awaiting approval" }), 409));
        }, limit),
      };
      this.held.push(entry);
    });
  }

  private releaseHeld() {
    const held = this.held;
    this.held = [];
    for (const h of held) {
      clearTimeout(h.timer);
      void this.reserve(h.input).then(h.resolve, (e) => h.resolve(errorResponse(e)));
    }
  }

  private async settle(op: Extract<SessionOp, { op: "settle" }>) {
    return this.once(`settle:${op.requestId}`, async () => {
      const d = decideSettle(this.view, op, Date.now());
      if (!d) throw new GovernorError("not_found", 404, `no open reservation "${op.requestId}"`, { field: "requestId" });
      const { write, answer } = this.commit(d.drafts, { key: `settle:${op.requestId}`, answer: () => ({ requestId: op.requestId, settled: true, ...this.money() }) });
      await write;
      return answer;
    });
  }

  /** A stream's heartbeat: kept in memory only; the settle (or the alarm) records the cost. */
  private progressed(op: Extract<SessionOp, { op: "progress" }>) {
    if (!this.snapshot.context.reservations[op.requestId]) return;
    this.streams.set(op.requestId, { costUsd: op.costUsd, usage: op.usage, staleAt: Date.now() + STREAM_IDLE_MS });
    this.scheduleAlarm();
  }

  private abandoned(now: number): Abandoned {
    const out: Abandoned = {};
    for (const [id, s] of this.streams) if (s.staleAt <= now && this.snapshot.context.reservations[id]) out[id] = s;
    return out;
  }

  // ---------------------------------------------------------------- timers and the index

  private scheduleAlarm() {
    for (const id of this.streams.keys()) if (!this.snapshot.context.reservations[id]) this.streams.delete(id);
    let next = nextDeadline(this.snapshot.context);
    for (const s of this.streams.values()) next = Math.min(next ?? Infinity, s.staleAt);
    if (next === undefined || next === this.alarmAt) return;
    if (this.alarmAt !== null && this.alarmAt <= next && this.alarmAt > Date.now()) return;
    this.alarmAt = next;
    void this.room.storage.setAlarm(next);
  }

  async onAlarm() {
    this.alarmAt = null;
    if (!this.snapshot.context.opened) await this.load();
    const now = Date.now();
    const streaming = new Set([...this.streams].filter(([, st]) => st.staleAt > now).map(([id]) => id));
    const drafts = decideTimers(this.view, now, this.abandoned(now), streaming);
    if (drafts.length) await this.commit(drafts).write;
    this.scheduleAlarm();
  }

  /**
   * The tenant's index trails the session by at most one update in flight, and spend-only
   * changes are batched for INDEX_DELAY_MS so a busy session does not write the index per call.
   */
  private scheduleIndex(urgent: boolean) {
    this.indexDirty = true;
    if (this.indexing) return;
    if (!urgent) {
      this.indexTimer ??= setTimeout(() => {
        this.indexTimer = undefined;
        this.scheduleIndex(true);
      }, INDEX_DELAY_MS);
      return;
    }
    clearTimeout(this.indexTimer);
    this.indexTimer = undefined;
    this.indexing = true;
    void (async () => {
      try {
        while (this.indexDirty) {
          this.indexDirty = false;
          const summary = summarize(this.snapshot);
          const res = await callTenant(this.room.context, summary.tenant, { op: "upsert", summary });
          if (!res.ok) throw new Error(`tenant answered ${res.status}`);
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
    })();
  }
}
