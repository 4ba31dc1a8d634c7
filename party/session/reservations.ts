import type * as Party from "partykit/server";
import "../hashing";
import { GovernorError } from "../../lib/errors";
import { toNanos } from "../../lib/money";
import { STATUS, type Verdict } from "../../machines/decide";
import { decideReserve, decideSettle, needsCount, type Abandoned, type ReserveInput } from "../../machines/money";
import { stateOf } from "../../machines/session";
import type { Usage } from "../../schema/events";
import { callTenant } from "../calls";
import { errorResponse, json } from "../http";
import type { ReserveAnswer, ReserveRequest, SessionOp, SettleOp } from "../ops";
import type { Committed, Journal } from "./journal";
import { callRates } from "./pricing";
import { crossSessionRate } from "./quotas";

// Proxied calls, seen from the session: reserve the worst case, settle with what the
// provider billed, hear from calls in flight and end them when the session ends, and learn
// from every settle how far the estimates of a model run low.

const MAX_WAIT_MS = 120_000;
// Reports come back-to-back while a call runs (each held up to ~1 s); this long without
// one means the gateway lost the request (the client went away and the runtime dropped it).
const STREAM_IDLE_MS = 5_000;
const MAX_HOLD_MS = 2_000;
// The tenant's learned ratios are read when the actor first prices a call, then refreshed
// in the background; a settle that raises one tells the tenant at once.
const RATIOS_FRESH_MS = 30_000;

type Held = { input: ReserveRequest; resolve: (r: Response) => void; timer: ReturnType<typeof setTimeout> };
type Progress = { costUsd: number; usage: Usage; staleAt: number };
type WatchAnswer = { ok?: true; abort?: true; gone?: true; code?: string; reason?: string };

const ratioKey = (model: string, profile = "text") => `${model}|${profile}`;
const withoutSource = ({ source: _s, key: _k, ...rates }: NonNullable<ReserveInput["rates"]>) => rates;
const milli = (usdPerMTok: number) => Math.round(usdPerMTok * 1000);

export class Reservations {
  private held: Held[] = [];
  private progress = new Map<string, Progress>();
  private watchers = new Map<string, Set<(a: WatchAnswer) => void>>();
  private ratios = new Map<string, number>();
  /** When this session raised each ratio itself (kept across a reload of the tenant's set). */
  private learnedAt = new Map<string, number>();
  private ratiosAt = 0;
  private ratiosLoading?: Promise<void>;

  constructor(
    private readonly room: Party.Room,
    private readonly journal: Journal,
    /** Sets the actor's alarm; `added`: deadlines just added (see Timers.schedule). */
    private readonly schedule: (added?: number[]) => void,
  ) {}

  // ---------------------------------------------------------------- learned ratios

  /** Read ahead of the first call (not from onAlarm: PartyKit forbids reaching other parties there). */
  prefetch() {
    if (this.journal.context.opened && this.ratiosAt === 0) setTimeout(() => void this.loadRatios(), 0);
  }

  private loadRatios(): Promise<void> {
    this.ratiosLoading ??= (async () => {
      const asked = Date.now();
      try {
        const res = await callTenant(this.room.context, this.journal.context.tenant, { op: "ratios" });
        const { ratios } = (await res.json()) as { ratios: Record<string, number> };
        // The tenant's set replaces ours, so an operator's reset (DELETE /v1/learned-ratios)
        // reaches running sessions; what this session learned since it asked is kept.
        const next = new Map(Object.entries(ratios ?? {}));
        for (const [k, at] of this.learnedAt) if (at >= asked) next.set(k, Math.max(next.get(k) ?? 0, this.ratios.get(k) ?? 0));
        this.ratios = next;
        this.ratiosAt = Date.now();
      } catch (e) {
        console.error("learned ratios not read; estimates go without them for now", e);
      } finally {
        this.ratiosLoading = undefined;
      }
    })();
    return this.ratiosLoading;
  }

  private async freshRatios() {
    if (this.ratiosAt === 0) await this.loadRatios();
    else if (Date.now() - this.ratiosAt > RATIOS_FRESH_MS) void this.loadRatios();
  }

  /** Ratios only ever raise an estimate: a prompt unlike the last ones must still be covered. */
  private ratioFor(model: string, profile?: string): number {
    return Math.max(1, this.ratios.get(ratioKey(model, profile)) ?? 0);
  }

  private learn(c: Committed) {
    for (const e of c.events) {
      if (e.type !== "request.settled" || e.data.inputRatio === undefined) continue;
      const r = c.before.context.reservations[e.data.requestId];
      if (!r?.model) continue;
      const key = ratioKey(r.model, r.profile);
      if (e.data.inputRatio <= (this.ratios.get(key) ?? 0)) continue;
      this.ratios.set(key, e.data.inputRatio);
      this.learnedAt.set(key, Date.now());
      // Outside the alarm's turn: PartyKit forbids reaching other parties from onAlarm.
      setTimeout(() => {
        callTenant(this.room.context, this.journal.context.tenant, { op: "learn", key, ratio: e.data.inputRatio! }).catch((err) => console.error("learned ratio not stored at the tenant", err));
      }, 0);
    }
  }

  // ---------------------------------------------------------------- reserve

  /** The worst case: input (raised by the learned ratio) at the worst-case input rate, tool fees, and the output cap. */
  priced(req: ReserveRequest): ReserveInput & { outputCap: number } {
    const policy = this.journal.context.policy;
    const outputCap = req.maxOutputTokens ?? policy?.budget.default_max_tokens ?? 4096;
    const maxOut = outputCap * req.choices;
    const estimateTokens = req.prompt.counted ?? req.prompt.bound;
    const inputRatio = this.ratioFor(req.model, req.prompt.profile);
    const promptTokens = Math.ceil(estimateTokens * inputRatio);
    const base = { requestId: req.requestId, provider: req.provider, model: req.model, path: req.path, promptHash: req.promptHash, attribution: req.attribution, toolCalls: req.toolCalls, choices: req.choices, capFrom: req.maxOutputTokens === null ? ("policy" as const) : ("call" as const) };
    const facts = {
      promptTokens,
      estimateTokens,
      inputRatio,
      promptSize: req.prompt.size,
      profile: req.prompt.profile,
      inputMethod: (req.prompt.counted === undefined ? "bound" : "count") as "bound" | "count",
      feesUsd: req.prompt.feesUsd,
      ...(req.cacheWrite && { cacheWrite: req.cacheWrite }),
    };
    // The policy's declared price for the model, else the table's (already on the request).
    const { price, premium, rates: declared } = callRates(policy, req);
    if (!price || req.unpriced) {
      return { ...base, ...facts, estimateUsd: 0, priced: false, maxOutputTokens: maxOut, outputCap, ...(req.unpriced && { unpricedReason: req.unpriced }) };
    }
    const rate = premium && promptTokens > premium.above ? premium : price;
    const fixedNanos = promptTokens * milli(rate.input) + toNanos(req.prompt.feesUsd);
    const outputNanosPerToken = milli(rate.output);
    const estimateNanos = fixedNanos + maxOut * outputNanosPerToken;
    return {
      ...base,
      ...facts,
      estimateUsd: estimateNanos / 1e9,
      priced: true,
      maxOutputTokens: maxOut,
      outputCap,
      countable: req.prompt.counted === undefined,
      fit: { fixedNanos, outputNanosPerToken, choices: req.choices, cap: outputCap },
      outputPrice: rate.output,
      inputPrice: rate.input,
      ...(declared && { rates: declared }),
    };
  }

  async reserve(req: ReserveRequest): Promise<Response> {
    const j = this.journal;
    await this.freshRatios();
    const input = this.priced(req);
    let decidedHere = false;
    const answer = await j.once(
      `reserve:${input.requestId}`,
      async () => {
        decidedHere = true;
        // A call that will be held is counted against cross-session rates when it is released, not twice.
        if (stateOf(j.snapshot) === "awaiting-approval" && j.context.policy?.approval.while_pending === "hold") return undefined;
        // Asked to count before anything is counted against a rate: the call comes straight back.
        if (needsCount(j.view, input)) return this.answer(input.requestId, { decision: "count" });
        const limited = j.isLive() ? await crossSessionRate(this.room, j, input.attribution) : undefined;
        const decision = decideReserve(j.view, input, Date.now(), limited);
        if (decision.verdict.decision === "hold") return undefined;
        if (decision.verdict.decision === "count") return this.answer(input.requestId, decision.verdict);
        const allowed = decision.verdict.decision === "allow";
        const cap = decision.verdict.outputCap;
        const { write, answer } = j.commit(decision.drafts, {
          key: `reserve:${input.requestId}`,
          answer: (v) => ({
            ...this.answer(input.requestId, decision.verdict, allowed ? (v.context.reservations[input.requestId]?.estimateNanos ?? 0) / 1e9 : undefined),
            ...(allowed && { outputCap: cap ?? input.outputCap, ...(cap !== undefined && { fitted: true }) }),
            // The gateway prices the answer's usage for its headers and progress reports the same way.
            ...(allowed && input.rates && { rates: withoutSource(input.rates) }),
          }),
          fresh: !req.clientKey,
        });
        await write;
        return answer as ReserveAnswer;
      },
      !req.clientKey,
    );
    if (answer === undefined) return this.hold(req);
    if (answer.decision === "count") return json(answer);
    // A replayed Idempotency-Key must not send a second call out on the first one's
    // reservation (which may be settled already): the call it names was already made.
    if (!decidedHere && answer.decision === "allow") {
      throw new GovernorError("conflict", 409, `Idempotency-Key "${req.requestId}" was already used for a call that went out; use a new key for a new call`, { field: "Idempotency-Key" });
    }
    return json(answer, answer.decision === "allow" ? 200 : STATUS[answer.code as keyof typeof STATUS] ?? 403);
  }

  private answer(requestId: string, v: Verdict, estimateUsd?: number): ReserveAnswer {
    return {
      requestId,
      decision: v.decision === "allow" ? "allow" : v.decision === "count" ? "count" : "deny",
      ...(v.decision === "allow" && estimateUsd !== undefined && { estimateUsd }),
      ...(v.code && { code: v.code }),
      ...(v.rule && { rule: v.rule }),
      ...(v.reason && { reason: v.reason }),
      ...(v.retryAfterMs !== undefined && { retryAfterMs: v.retryAfterMs }),
      ...this.journal.money(),
    };
  }

  /** `approval.while_pending: hold`: the call waits for the decision, up to the approval timeout. */
  private hold(input: ReserveRequest): Promise<Response> {
    const limit = Math.min(this.journal.context.policy?.approval.timeout ?? MAX_WAIT_MS, MAX_WAIT_MS);
    return new Promise((resolve) => {
      const entry: Held = {
        input,
        resolve,
        timer: setTimeout(() => {
          this.held = this.held.filter((h) => h !== entry);
          resolve(json(this.answer(input.requestId, { decision: "deny", code: "awaiting_approval", rule: "approval.while_pending", reason: "still awaiting approval" }), 409));
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

  // ---------------------------------------------------------------- settle

  /**
   * A settle is idempotent by the reservation it closes: decided and appended in one turn
   * while the reservation is open (no storage read, no idempotency record), and a repeat
   * finds it closed. Only a settle for a reservation that is not open looks for the answer
   * of a settle stored before that rule (an idempotency record), else it is a 404.
   */
  async settle(op: SettleOp) {
    const j = this.journal;
    const now = this.settleNow(op);
    if (now) {
      await now;
      return { requestId: op.requestId, settled: true, ...j.money() };
    }
    return j.once(`settle:${op.requestId}`, async () => {
      const d = decideSettle(j.view, op, Date.now());
      if (!d) throw new GovernorError("not_found", 404, `no open reservation "${op.requestId}"`, { field: "requestId" });
      const { write } = j.commit(d.drafts);
      await write;
      return { requestId: op.requestId, settled: true, ...j.money() };
    });
  }

  /**
   * Settles of several finished calls (background work: the calls were answered), each
   * applied in this turn, their writes going out as one. Never throws: a settle that is
   * refused or not stored is reported and left to the alarm, which charges its estimate.
   */
  async settleAll(ops: SettleOp[]): Promise<{ settled: string[]; gone: string[]; failed: string[] }> {
    const out = { settled: [] as string[], gone: [] as string[], failed: [] as string[] };
    const writes: Promise<void>[] = [];
    const failed = (id: string) => (e: unknown) => {
      console.error(`settle of ${id} not recorded; its reservation will expire at its estimate`, e);
      out.failed.push(id);
    };
    for (const op of ops) {
      try {
        const write = this.settleNow(op);
        if (!write) out.gone.push(op.requestId);
        else writes.push(write.then(() => void out.settled.push(op.requestId), failed(op.requestId)));
      } catch (e) {
        // One bad settle (a draft the log refuses) must not keep the others from landing.
        failed(op.requestId)(e);
      }
    }
    await Promise.all(writes);
    return out;
  }

  /** The settle's write when the reservation is open (appended in this turn), else undefined. */
  private settleNow(op: SettleOp): Promise<void> | undefined {
    const j = this.journal;
    if (!j.context.reservations[op.requestId]) return undefined;
    const d = decideSettle(j.view, op, Date.now());
    if (!d) return undefined;
    return j.commit(d.drafts).write;
  }

  // ---------------------------------------------------------------- calls in flight

  /**
   * A call's progress report. Kept in memory only (the settle, or the alarm, records the
   * cost). Held up to `holdMs` and answered early with `abort` when the session ends, which
   * is how a kill reaches calls in flight; `gone` when the reservation is no longer open.
   */
  report(op: Extract<SessionOp, { op: "progress" }>): Response | Promise<Response> {
    const j = this.journal;
    if (!j.context.reservations[op.requestId]) return json({ gone: true } satisfies WatchAnswer);
    if (!j.isLive()) return json(this.ended());
    const hold = Math.min(Math.max(0, op.holdMs ?? 0), MAX_HOLD_MS);
    const staleAt = Date.now() + hold + STREAM_IDLE_MS;
    this.progress.set(op.requestId, { costUsd: op.costUsd, usage: op.usage, staleAt });
    this.schedule([staleAt]);
    if (!hold) return json({ ok: true } satisfies WatchAnswer);
    return new Promise<Response>((resolve) => {
      const set = this.watchers.get(op.requestId) ?? new Set();
      const done = (a: WatchAnswer) => {
        clearTimeout(timer);
        set.delete(done);
        if (!set.size) this.watchers.delete(op.requestId);
        resolve(json(a));
      };
      const timer = setTimeout(() => done({ ok: true }), hold);
      set.add(done);
      this.watchers.set(op.requestId, set);
    });
  }

  private ended(): WatchAnswer {
    const c = this.journal.context;
    return c.closed ? { abort: true, code: "session_closed", reason: `closed by ${c.closed.by}${c.closed.reason ? `: ${c.closed.reason}` : ""}` } : { abort: true, code: "session_killed", reason: `killed by ${c.killed?.by ?? "policy"}: ${c.killed?.reason ?? "no reason given"}` };
  }

  /** Streams whose reports stopped: settled by the alarm at what they had produced. */
  abandoned(now: number): Abandoned {
    const out: Abandoned = {};
    for (const [id, s] of this.progress) if (s.staleAt <= now && this.journal.context.reservations[id]) out[id] = s;
    return out;
  }

  /** Calls still reporting: not charged at their estimate however long they run. */
  reporting(now: number): Set<string> {
    return new Set([...this.progress].filter(([, s]) => s.staleAt > now).map(([id]) => id));
  }

  /** The earliest moment a call in flight would count as abandoned. */
  nextStale(): number | undefined {
    for (const id of this.progress.keys()) if (!this.journal.context.reservations[id]) this.progress.delete(id);
    let t: number | undefined;
    for (const s of this.progress.values()) t = Math.min(t ?? Infinity, s.staleAt);
    return t;
  }

  /** After every stored batch: end calls in flight when the session ended, release held calls, learn. */
  committed(c: Committed) {
    const endedNow = !this.journal.isLive() && c.events.some((e) => e.type === "session.killed" || e.type === "session.closed");
    if (endedNow) {
      const a = this.ended();
      for (const set of [...this.watchers.values()]) for (const w of [...set]) w(a);
    }
    for (const e of c.events) {
      if (e.type !== "request.settled") continue;
      for (const w of [...(this.watchers.get(e.data.requestId) ?? [])]) w({ gone: true });
      this.progress.delete(e.data.requestId);
    }
    if (this.held.length && stateOf(this.journal.snapshot) !== "awaiting-approval") this.releaseHeld();
    this.learn(c);
  }
}
