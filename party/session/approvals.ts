import type * as Party from "partykit/server";
import { canonicalJson, sha256Hex } from "../../lib/chain";
import { GovernorError } from "../../lib/errors";
import { toUsd } from "../../lib/money";
import { decideAction, decideApproval, decideReport, remainingUsd, type Verdict } from "../../machines/decide";
import type { SessionSnapshot } from "../../machines/session";
import type { ActionBody, ReportBody } from "../../schema/api";
import type { ApprovalAnswer } from "../../schema/answers";
import type { ActionSource, Attribution, GovernorEvent } from "../../schema/events";
import type { DecisionMessage } from "../../schema/protocol";
import type { Extras, Journal } from "./journal";
import { HeldArgs } from "./held-args";
import { crossSessionRate } from "./quotas";

// Tool actions, reported facts, and the approvals a reviewed action waits for: who waits
// (held HTTP requests, sockets) hears the final decision once it is stored, and a retry of
// the reviewed action finds that decision even after a restart.

const MAX_WAIT_MS = 120_000;

export type ActionAnswer = ReturnType<Approvals["actionAnswer"]>;

export class Approvals {
  private waiters = new Map<string, Set<(m: DecisionMessage) => void>>();
  /** Every argument of each pending action, as sent (held-args.ts). */
  readonly held: HeldArgs;

  constructor(
    private readonly room: Party.Room,
    private readonly journal: Journal,
  ) {
    this.held = new HeldArgs(room.storage);
    // Decided, timed out or ended with the session: what was held for it goes.
    journal.onCommitted((c) => {
      if (Object.keys(c.before.context.approvals).length) this.dropDecided();
    });
  }

  /** After the log is loaded: what was held before a restart, for approvals still pending. */
  load() {
    return this.held.load((id) => id in this.journal.context.approvals);
  }

  private dropDecided() {
    // The current state, not the batch's: a later batch may have opened another approval already.
    this.held.dropExcept((id) => id in this.journal.context.approvals).catch((e) => console.error("held arguments not dropped; they go at the next start", e));
  }

  async action(body: ActionBody, attribution: Attribution, waitMs: number, source?: ActionSource): Promise<ActionAnswer> {
    const j = this.journal;
    const id = body.id ?? crypto.randomUUID();
    const answer = await j.once(
      `action:${id}`,
      async () => {
        const attr: Attribution = { ...attribution, run: body.run ?? attribution.run, agent: body.agent ?? attribution.agent, user: body.user ?? attribution.user, action: body.action };
        const argsHash = sha256Hex(canonicalJson(body.args));
        const input = { id, action: body.action, args: body.args, argsHash, costUsd: body.costUsd, attribution: attr, source };
        const limited = j.isLive() ? await crossSessionRate(this.room, j, attr) : undefined;
        const decision = decideAction(j.view, input, Date.now(), limited);
        const { events, write, answer } = j.commit(decision.drafts, { key: `action:${id}`, answer: () => this.actionAnswer(id, decision.verdict), fresh: body.id === undefined });
        // In the same turn as the commit, so both are stored together.
        const held = this.holdArgs(events, id, body.args, attr);
        await Promise.all([write, held]);
        return answer as ActionAnswer;
      },
      body.id === undefined,
    );
    if (answer.decision !== "review" || !answer.approvalId) return answer;
    // A retry after the operator decided gets the decision, not the stale review.
    if (!j.context.approvals[answer.approvalId]) {
      return ((await j.recall(`approval-final:${answer.approvalId}`)) as ActionAnswer | undefined) ?? answer;
    }
    if (waitMs > 0) return await this.waitFor(answer.approvalId, Math.min(waitMs, MAX_WAIT_MS), answer);
    return answer;
  }

  /** A review this action opened keeps every argument beside the log, unless the log keeps them itself (keep_raw). */
  private holdArgs(events: GovernorEvent[], requestId: string, args: Record<string, unknown>, attr: Attribution): Promise<void> | undefined {
    if (this.journal.context.policy?.keep_raw) return undefined;
    const opened = events.find((e) => e.type === "approval.requested" && e.data.requestId === requestId);
    if (opened?.type !== "approval.requested") return undefined;
    return this.held.hold({ approvalId: opened.data.approvalId, requestId, action: opened.data.action, user: attr.user ?? this.journal.vault.value(this.journal.context.user), agent: attr.agent ?? this.journal.context.agent }, args, opened.ts);
  }

  actionAnswer(id: string, v: Verdict) {
    return {
      id,
      decision: v.decision as "allow" | "deny" | "review",
      ...(v.code && { code: v.code }),
      ...(v.rule && { rule: v.rule }),
      ...(v.reason && { reason: v.reason }),
      ...(v.approvalId && { approvalId: v.approvalId }),
      ...(v.retryAfterMs !== undefined && { retryAfter: Math.ceil(v.retryAfterMs / 1000) }),
      ...this.journal.money(),
    };
  }

  private waitFor(approvalId: string, waitMs: number, pending: ActionAnswer) {
    return new Promise<ActionAnswer>((resolve) => {
      const set = this.waiters.get(approvalId) ?? new Set();
      const done = (m: DecisionMessage) => {
        clearTimeout(timer);
        set.delete(done);
        const { type: _t, final: _f, ...rest } = m;
        resolve(rest as ActionAnswer);
      };
      const timer = setTimeout(() => {
        set.delete(done);
        resolve(pending);
      }, waitMs);
      set.add(done);
      this.waiters.set(approvalId, set);
    });
  }

  /**
   * The final decisions a batch makes on reviewed actions (granted, denied, timed out, or
   * ended with the session), stored with the batch under `approval-final:<id>`.
   */
  finals(events: GovernorEvent[], before: SessionSnapshot, after: SessionSnapshot): Extras {
    const money = { spentUsd: toUsd(after.context.spentNanos), remainingUsd: remainingUsd(after.context) };
    const out: Extras = new Map();
    const decide = (approvalId: string, granted: boolean, by: string, note?: string) => {
      const key = `approval-final:${approvalId}`;
      // The first decision on an approval is the one that stands.
      if (out.has(key)) return;
      const requested = before.context.approvals[approvalId]?.requestId;
      out.set(key, {
        id: requested ?? approvalId,
        decision: granted ? "allow" : "deny",
        ...(granted ? {} : { code: "policy_violation" }),
        rule: "approval",
        reason: `${granted ? "approved" : "denied"} by ${by}${note ? `: ${note}` : ""}`,
        approvalId,
        ...money,
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
  deliver(extras: Extras) {
    for (const [key, stored] of extras) {
      if (!key.startsWith("approval-final:")) continue;
      const approvalId = key.slice("approval-final:".length);
      const msg = { type: "decision", ...(stored as Omit<DecisionMessage, "type" | "final">), final: true } as DecisionMessage;
      for (const w of this.waiters.get(approvalId) ?? []) w(msg);
      this.waiters.delete(approvalId);
      const text = JSON.stringify(msg);
      for (const c of this.room.getConnections()) c.send(text);
    }
  }

  async report(body: ReportBody) {
    const j = this.journal;
    const id = body.id ?? crypto.randomUUID();
    return j.once(
      `report:${id}`,
      async () => {
        const decision = decideReport(j.view, { ...body, id }, Date.now());
        const { write, answer } = j.commit(decision.drafts, { key: `report:${id}`, answer: (v) => ({ id, accepted: true, state: v.state, ...j.money() }), fresh: body.id === undefined });
        await write;
        return answer;
      },
      body.id === undefined,
    );
  }

  async decide(approvalId: string, decision: "approve" | "deny", by: string, note?: string): Promise<ApprovalAnswer> {
    const j = this.journal;
    return j.once<ApprovalAnswer>(`approval:${approvalId}`, async () => {
      const d = decideApproval(j.view, { approvalId, decision, by, note }, Date.now());
      if (!d) throw new GovernorError("not_found", 404, `no pending approval "${approvalId}" in this session`, { field: "approvalId" });
      const { write, answer } = j.commit(d.drafts, { key: `approval:${approvalId}`, answer: (v): ApprovalAnswer => ({ approvalId, decision: d.verdict.decision === "allow" ? "allow" : "deny", state: v.state, ...j.money() }) });
      await write;
      // The answer was built just above as an ApprovalAnswer; the journal keeps answers untyped.
      return answer as ApprovalAnswer;
    });
  }
}
