import type { Decision } from "../../machines/decide";
import { appendDrafts, EMPTY_HEAD, type Head } from "../../machines/log";
import { initialSnapshot, stateOf, type SessionSnapshot } from "../../machines/session";
import type { GovernorEvent } from "../../schema/events";
import { parsePolicy, type PolicyInput } from "../../schema/policy";

/**
 * A session folded in memory exactly as the actor folds it, minus storage: decisions are
 * applied with the actor's appendDrafts at `now`, which only the test moves. The tests
 * that drive it add the calls they need.
 */
export class FoldedSession {
  snapshot: SessionSnapshot = initialSnapshot();
  head: Head = EMPTY_HEAD;
  log: GovernorEvent[] = [];
  now = 1_700_000_000_000;

  /** `openId`: the id of the session.opened event, which the chain's first hash covers. */
  constructor(policy: PolicyInput = {}, who: { tenant?: string; session?: string; signingKid?: string; openId?: string } = {}) {
    const data = { tenant: who.tenant ?? "t", session: who.session ?? "s", policy: parsePolicy(policy), ...(who.signingKid && { signingKid: who.signingKid }) };
    this.apply({ drafts: [{ type: "session.opened", id: who.openId ?? "open", data }], verdict: { decision: "allow" } });
  }

  get view() {
    return { state: stateOf(this.snapshot), context: this.snapshot.context };
  }

  get state() {
    return stateOf(this.snapshot);
  }

  apply(d: Decision) {
    const r = appendDrafts(this.snapshot, this.head, d.drafts, this.now);
    this.snapshot = r.snapshot;
    this.head = r.head;
    this.log.push(...r.events);
    return d.verdict;
  }
}
