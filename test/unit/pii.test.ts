import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { auditEvents } from "../../lib/audit";
import { eventHash } from "../../lib/chain";
import { commit, fromRanges, isCommitment, personalFields, piiProblem, reveal, scrub, seal, toRanges, visiblePii, type Pii } from "../../lib/pii";
import { SessionLog } from "../support/logs";

// Personal values as salted commitments inside the hashed event, values beside it: what
// erasure (GDPR Art. 17) deletes without breaking the chain.

const salt = () => randomBytes(16).toString("hex");

describe("commitments", () => {
  it("seal commits to each personal field and policy secret; reveal puts the values back; the hash ignores what is beside", () => {
    const data = { tenant: "t", session: "s", user: "ana", task: "refund for ana", agent: "bot", policy: { notify: [{ slack: "https://hooks.slack.com/x" }, { webhook: "https://h.example/?k=1" }] } };
    const { data: sealed, pii } = seal("session.opened", data, salt);
    expect(Object.keys(pii!).sort()).toEqual(["/policy/notify/0/slack", "/policy/notify/1/webhook", "/task", "/user"]);
    expect(isCommitment(sealed.user)).toBe(true);
    expect(sealed.agent).toBe("bot");
    expect(JSON.stringify(sealed)).not.toContain("ana");
    expect(JSON.stringify(sealed)).not.toContain("hooks.slack.com");
    expect(data.user).toBe("ana"); // the input is not changed
    expect(reveal(sealed, pii)).toEqual(data);
    expect(piiProblem(sealed, pii)).toBeUndefined();
    expect(sealed.user).toBe(commit("ana", pii!["/user"].s));
    // Two commitments to one value differ: nothing links them without the salts.
    expect(seal("session.opened", data, salt).data.user).not.toBe(sealed.user);
    const e = { seq: 1, id: "open:s", ts: 1, type: "session.opened", data: sealed, prev: "0".repeat(64) };
    expect(eventHash({ ...e, pii } as never)).toBe(eventHash(e));
  });

  it("a value beside an event that is not the committed one, or has no commitment, is named", () => {
    const { data, pii } = seal("action.checked", { requestId: "r", action: "refund", args: { account: "DE1" }, attribution: { user: "bo" } }, salt);
    expect(piiProblem(data, { ...pii, "/args": { ...pii!["/args"], v: { account: "DE2" } } })).toBe("the value given beside the event for /args does not match its commitment");
    expect(piiProblem(data, { "/action": { v: "refund", s: "0".repeat(32) } })).toBe("the value given beside the event for /action has no commitment there");
  });

  it("policy secrets are for operators only; statuses say what is revealed, erased or plain", () => {
    const { data, pii } = seal("session.opened", { user: "ana", policy: { notify: [{ slack: "https://hooks.slack.com/x" }] } }, salt);
    expect(Object.keys(visiblePii(pii, false)!)).toEqual(["/user"]);
    expect(visiblePii(pii, true)).toBe(pii);
    const erased: Pii = {};
    expect(personalFields("session.opened", data, erased)).toEqual([{ pointer: "/user", status: "erased" }]);
    expect(personalFields("session.opened", { user: "old" }, undefined)).toEqual([{ pointer: "/user", status: "plain", value: "old" }]);
  });

  it("seq ranges are compact and bounded by the event that names them", () => {
    expect(toRanges([9, 1, 2, 3, 5, 3])).toEqual(["1-3,5,9"]);
    expect(fromRanges(["1-3,5,9"])).toEqual([1, 2, 3, 5, 9]);
    expect(fromRanges(["1-1000000000"], 6)).toEqual([1, 2, 3, 4, 5]);
    expect(fromRanges(["x,-3,4"])).toEqual([4]);
    const many = toRanges(Array.from({ length: 5000 }, (_, i) => i * 2));
    expect(many.length).toBeGreaterThan(1);
    expect(many.every((r) => r.length <= 4000)).toBe(true);
    expect(fromRanges(many)).toHaveLength(5000);
  });

  it("scrub removes a value from records kept outside the log, whole words only", () => {
    const body = { user: "al", text: "*User*\nal, also alice", event: { pii: { "/args": { v: { n: 1 }, s: "x" } } }, n: 2 };
    const out = scrub(body, ["al", { n: 1 }]);
    expect(out).toEqual({ user: "[erased]", text: "*User*\n[erased], also alice", event: { pii: { "/args": { v: "[erased]", s: "x" } } }, n: 2 });
    expect(scrub(body, ["nobody"])).toBe(body);
  });
});

describe("replay of a log with values beside it", () => {
  it("verifies each value, folds the commitments, reveals the summary, and reports erased and plain values", () => {
    const log = new SessionLog("acme", "p1", Date.now(), { user: "ana", task: "t-1", sealed: true });
    log.action("refund", 0.5, { user: "bo" }, { amount: 50 });
    log.action("search", 0.25);
    const ok = auditEvents(log.raw());
    if (!ok.ok) throw new Error(ok.reason);
    expect(ok.summary).toMatchObject({ user: "ana", task: "t-1", spentUsd: 0.75 });
    expect(ok.personal).toMatchObject({ erased: [], plain: [], redactions: [] });
    expect(ok.personal.revealed).toBe(4);
    expect((ok.revealed[1].data as { attribution: { user: string } }).attribution.user).toBe("bo");

    log.erase([1]);
    const after = auditEvents(log.raw());
    if (!after.ok) throw new Error(after.reason);
    expect([after.state, after.summary.spentUsd]).toEqual([ok.state, ok.summary.spentUsd]);
    expect(after.summary.user).toBe("[erased]");
    expect(after.personal.erased).toEqual([
      { seq: 1, pointer: "/user" },
      { seq: 1, pointer: "/task" },
    ]);
    expect(after.personal.redactions).toEqual([expect.objectContaining({ seq: 4, by: "alice" })]);

    // A value swapped beside the log is caught, naming its seq, though every hash still holds.
    const forged = log.raw() as Array<{ pii?: Pii }>;
    forged[1].pii!["/attribution/user"].v = "eve";
    expect(auditEvents(forged)).toMatchObject({ ok: false, problem: "chain", seq: 2, reason: "the value given beside the event for /attribution/user does not match its commitment" });

    const old = auditEvents(new SessionLog("acme", "p2", Date.now(), { user: "old-user" }).raw());
    expect(old.ok && old.personal.plain).toEqual([{ seq: 1, pointer: "/user" }]);
  });
});
