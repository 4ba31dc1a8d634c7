import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { decideAction, decideReport } from "../../machines/decide";
import { appendDrafts, EMPTY_HEAD, type Head } from "../../machines/log";
import { initialSnapshot, replay, stateOf, type SessionSnapshot } from "../../machines/session";
import { summarize } from "../../machines/summary";
import { ReportBody } from "../../schema/api";
import { GovernorEvent } from "../../schema/events";
import { SessionSummary } from "../../schema/protocol";
import { parsePolicy, type PolicyInput } from "../../schema/policy";

// A tool's failure reported as a fact: one `error.recorded` event, counted, with the
// message kept only when the policy keeps raw text.

function session(policy: PolicyInput = {}) {
  let snapshot: SessionSnapshot = initialSnapshot();
  let head: Head = EMPTY_HEAD;
  const log: GovernorEvent[] = [];
  const now = 1_700_000_000_000;
  const apply = (drafts: Parameters<typeof appendDrafts>[2]) => {
    const r = appendDrafts(snapshot, head, drafts, now);
    snapshot = r.snapshot;
    head = r.head;
    log.push(...r.events);
  };
  apply([{ type: "session.opened", id: "open", data: { tenant: "t", session: "s", policy: parsePolicy(policy) } }]);
  const view = () => ({ state: stateOf(snapshot), context: snapshot.context });
  return {
    log,
    summary: () => summarize(snapshot),
    report: (body: unknown, id: string) => apply(decideReport(view(), { ...(ReportBody.parse(body) as object), id } as never, now).drafts),
    action: (action: string) => apply(decideAction(view(), { id: `a${log.length}`, action, args: {}, argsHash: "h", costUsd: 0, attribution: {} }, now).drafts),
  };
}

const sha = (s: string) => createHash("sha256").update(s).digest("hex");

describe("error facts", () => {
  it("append error.recorded with a signature, count it, and drop the message by default", () => {
    const s = session();
    s.report({ type: "error", action: "refund", code: "ETIMEDOUT", message: "payment API timed out for ACME-1234" }, "e1");
    const e = s.log.at(-1)!;
    expect(e.type).toBe("error.recorded");
    expect(e.data).toEqual({ source: "tool", action: "refund", code: "ETIMEDOUT", signature: sha("refund\nETIMEDOUT\npayment API timed out for ACME-1234") });
    expect(JSON.stringify(e)).not.toContain("ACME-1234");
    expect(s.summary().counters.errors).toBe(1);
    expect(s.summary().state).toBe("active");
  });

  it("equal failures share a signature; different ones do not", () => {
    const s = session();
    s.report({ type: "error", action: "search", code: "500", message: "boom" }, "e1");
    s.report({ type: "error", action: "search", code: "500", message: "boom" }, "e2");
    s.report({ type: "error", action: "search", message: "boom" }, "e3");
    const sigs = s.log.filter((e) => e.type === "error.recorded").map((e) => (e.data as { signature: string }).signature);
    expect(sigs[0]).toBe(sigs[1]);
    expect(sigs[2]).not.toBe(sigs[0]);
    expect(sigs[2]).toBe(sha("search\n\nboom"));
    expect(s.summary().counters.errors).toBe(3);
  });

  it("keeps the message under keep_raw, and a replay of the log gives the same counters", () => {
    const s = session({ keep_raw: true });
    s.action("search");
    s.report({ type: "error", action: "search", message: "index offline" }, "e1");
    expect(s.log.at(-1)!.data).toMatchObject({ message: "index offline" });
    const replayed = summarize(replay(s.log.map((e) => GovernorEvent.parse(JSON.parse(JSON.stringify(e))))));
    expect(replayed.counters).toEqual(s.summary().counters);
    expect(replayed.counters).toMatchObject({ errors: 1, actions: 1, allowed: 1 });
  });

  it("refuses a malformed error fact by field", () => {
    const r = ReportBody.safeParse({ type: "error", code: 42 });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.path).toEqual(["code"]);
    expect(ReportBody.safeParse({ type: "error", message: "x".repeat(5000) }).success).toBe(false);
  });

  it("a summary from a server without the counter still parses, as zero", () => {
    const s = session();
    const old = JSON.parse(JSON.stringify(s.summary()));
    delete old.counters.errors;
    expect(SessionSummary.parse(old).counters.errors).toBe(0);
  });
});
