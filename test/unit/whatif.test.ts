import { describe, expect, it } from "vitest";
import { whatIf, whatIfPolicy } from "../../machines/whatif";
import type { GovernorEvent } from "../../schema/events";
import { WhatIfReport } from "../../schema/whatif";
import { Recorder } from "../support/recorder";

// The what-if engine against logs built the way the actor builds them.

const run = (log: GovernorEvent[], other: unknown, mode: "merge" | "replace" = "merge") => {
  const report = whatIf(log, whatIfPolicy(log, other, mode), mode);
  // What the CLI prints and the route answers must fit the schema the console checks with.
  expect(WhatIfReport.safeParse(JSON.parse(JSON.stringify(report))).success).toBe(true);
  return report;
};

function runaway(policy: object = {}) {
  const r = new Recorder({ budget: { session_usd: 5 }, ...policy });
  let prompt = 1000;
  const calls = [];
  for (let i = 0; i < 8; i++) {
    calls.push(r.call(prompt, 200, { maxTokens: 500 }));
    prompt = Math.round(prompt * 1.5);
  }
  return { r, calls };
}

const costOf = (log: GovernorEvent[], requestId: string) =>
  log.filter((e) => e.type === "request.settled" && e.data.requestId === requestId).reduce((n, e) => n + (e as { data: { costUsd: number } }).data.costUsd, 0);

describe("what-if replay", () => {
  it("a runaway session under runaway.on_detect: kill names the call that kills it and the dollars saved", () => {
    const { r, calls } = runaway();
    expect(r.summary.state).toBe("alerting");
    const report = run(r.log, { runaway: { on_detect: "kill" } });

    const fourth = r.log.find((e) => e.type === "request.reserved" && e.data.requestId === calls[3].requestId)!;
    expect(report.whatIf.killed).toMatchObject({ seq: fourth.seq, requestId: calls[3].requestId, rule: "runaway", by: "policy", subject: "openai gpt-4o" });
    expect(report.recorded.killed).toBeNull();
    expect(report.whatIf.state).toBe("killed");
    const saved = calls.slice(3).reduce((n, c) => n + costOf(r.log, c.requestId), 0);
    expect(saved).toBeGreaterThan(0);
    expect(report.savedUsd).toBeCloseTo(saved, 9);
    expect(report.whatIf.spentUsd + report.savedUsd).toBeCloseTo(report.recorded.spentUsd, 9);
    expect(report.differences.map((d) => d.requestId)).toEqual(calls.slice(3).map((c) => c.requestId));
    expect(report.differences[0]).toMatchObject({ happened: { decision: "allow" }, wouldHave: { decision: "deny", code: "session_killed", rule: "runaway" } });
    expect(report.differences[1].wouldHave).toMatchObject({ decision: "deny", rule: "session.killed" });
    expect(report.unknown).toEqual([]);
  });

  it("replayed under its own policy it reports no difference", () => {
    const { r } = runaway();
    r.action("refund", 0.5, { amount: 20 });
    r.violation("pii_blocked");
    r.cost(0.25);
    r.end("close");
    for (const report of [run(r.log, {}), run(r.log, r.log[0].type === "session.opened" ? r.log[0].data.policy : {}, "replace")]) {
      expect(report.differences).toEqual([]);
      expect(report.unknown).toEqual([]);
      expect(report.savedUsd).toBe(0);
      expect(report.whatIf).toMatchObject({ state: report.recorded.state, spentUsd: report.recorded.spentUsd, unsettledUsd: 0 });
    }
  });

  it("a lower budget refuses calls, kills under on_exceed: kill, and names the spend saved", () => {
    const r = new Recorder({ budget: { session_usd: 1 } });
    const calls = [0, 1, 2, 3, 4, 5].map(() => r.call(20_000, 1000, { maxTokens: 1000 }));
    expect(r.summary.spentUsd).toBeCloseTo(6 * 0.06, 9);
    const report = run(r.log, { budget: { session_usd: 0.15, on_exceed: "kill" } });
    // Each call reserves 0.06: two fit in 0.15, the third does not.
    expect(report.whatIf.killed).toMatchObject({ requestId: calls[2].requestId, rule: "budget.session_usd" });
    expect(report.whatIf.spentUsd).toBeCloseTo(0.12, 9);
    expect(report.savedUsd).toBeCloseTo(0.24, 9);
  });

  it("a call refused in the record but allowed in the what-if has an unknown cost, bounded by its reservation", () => {
    const r = new Recorder({ budget: { session_usd: 0.05 } });
    r.call(1000, 100, { maxTokens: 1000 });
    const refused = r.call(20_000, 100, { maxTokens: 1000 });
    expect(refused.decision).toBe("deny");
    const report = run(r.log, { budget: { session_usd: 1 } });
    expect(report.differences).toHaveLength(1);
    expect(report.differences[0]).toMatchObject({ requestId: refused.requestId, happened: { decision: "deny", rule: "budget.session_usd" }, wouldHave: { decision: "allow", costUsd: null, reservedUsd: 0.06 } });
    expect(report.whatIf.unsettledUsd).toBeCloseTo(0.06, 9);
  });

  it("default_max_tokens is priced again for calls that named no cap, from the log's own figures", () => {
    const r = new Recorder({ budget: { session_usd: 0.05, default_max_tokens: 4096 } });
    // No max_tokens: reserved at 1000 * 2.5e-6 + 4096 * 10e-6 = 0.04346; each costs 0.0035.
    r.call(1000, 100);
    r.call(1000, 100);
    const third = r.call(1000, 100);
    expect(third.decision).toBe("deny");
    const report = run(r.log, { budget: { default_max_tokens: 1000 } });
    expect(report.differences).toEqual([expect.objectContaining({ requestId: third.requestId, wouldHave: expect.objectContaining({ decision: "allow", reservedUsd: 0.0125 }) })]);
  });

  it("budget.fit_output: a call refused for its output cap would have gone out with the cap lowered", () => {
    const r = new Recorder({ budget: { session_usd: 0.05 } });
    // 1000 prompt tokens ($0.0025) and a 10,000-token cap ($0.10): the cap is what does not fit.
    const refused = r.call(1000, 100, { maxTokens: 10_000 });
    expect(refused.decision).toBe("deny");
    const report = run(r.log, { budget: { fit_output: true } });
    expect(report.unknown).toEqual([]);
    expect(report.differences).toEqual([expect.objectContaining({ requestId: refused.requestId, wouldHave: expect.objectContaining({ decision: "allow", costUsd: null }) })]);
    // Reserved at what the budget leaves: the prompt plus 4,750 output tokens.
    expect(report.differences[0].wouldHave.reservedUsd).toBeCloseTo(0.05, 9);
  });

  it("old logs: a refusal without the call's facts is unknown, not guessed", () => {
    const r = new Recorder({ budget: { session_usd: 0.05 } });
    r.call(1000, 100, { maxTokens: 1000 });
    const refused = r.call(20_000, 100, { maxTokens: 1000 });
    r.end("kill");
    const late = r.call(10, 10, { maxTokens: 10 });
    expect(late).toMatchObject({ decision: "deny", code: "session_killed" });
    // As written before refusals carried the call's facts.
    const old = r.log.map((e) => {
      if (e.type !== "request.denied") return e;
      const { provider: _p, path: _pa, promptTokens: _t, maxOutputTokens: _m, promptHash: _h, choices: _c, capFrom: _f, outputPrice: _o, estimateUsd: _e, ...rest } = e.data;
      return { ...e, data: rest } as GovernorEvent;
    });
    const report = run(old, { budget: { session_usd: 1 } });
    expect(report.differences).toEqual([]);
    // The refusal after the kill is decided all the same: a killed session refuses any call.
    expect(report.unknown).toEqual([expect.objectContaining({ requestId: refused.requestId, why: expect.stringMatching(/does not record this call's estimate/), assumed: expect.objectContaining({ decision: "deny" }) })]);
  });

  it("argument rules: kept arguments decide exactly, unkept ones are unknown, unchanged wildcard rules follow the record", () => {
    const policy = {
      actions: { rules: { refund: { amount: { max: 1000, require_approval_above: 500 } }, "*": { "*": { forbidden: ["drop table"] } } } },
    };
    const r = new Recorder(policy);
    const small = r.action("refund", 0, { amount: 100, note: "ok" });
    const big = r.action("refund", 0, { amount: 700, note: "fine" });
    r.approve(big.approvalId!);
    const bad = r.action("search", 0, { q: "please drop table users" });
    expect(bad.decision).toBe("deny");

    // A lower threshold on the kept argument: exact.
    const lower = run(r.log, { actions: { rules: { refund: { amount: { max: 1000, require_approval_above: 50 } } } } });
    expect(lower.unknown).toEqual([]);
    expect(lower.differences).toEqual([expect.objectContaining({ requestId: small.id, wouldHave: expect.objectContaining({ decision: "review" }) })]);

    // A new rule on an argument the log did not keep: unknown for refunds (and only them).
    const unkept = run(r.log, { actions: { rules: { refund: { amount: { max: 1000, require_approval_above: 500 }, note: { forbidden: ["x"] } } } } });
    expect(unkept.unknown.map((u) => u.requestId)).toEqual([small.id, big.id]);
    expect(unkept.unknown[0].why).toMatch(/reads argument "note", which the log did not keep/);
    expect(unkept.differences).toEqual([]);

    // A changed wildcard rule reads every argument: unknown.
    const wild = run(r.log, { actions: { rules: { "*": { "*": { forbidden: ["rm -rf"] } } } } });
    expect(wild.unknown.map((u) => u.requestId)).toEqual([small.id, big.id, bad.id]);
  });

  it("an approval the record never asked for is taken as unanswered and times out by the what-if policy", () => {
    const r = new Recorder({ approval: { timeout: "1m" } });
    const a = r.action("refund", 2, { amount: 700 });
    expect(a.decision).toBe("allow");
    r.tick(120_000).action("search", 0.5);
    const report = run(r.log, { actions: { rules: { refund: { amount: { require_approval_above: 500 } } } } });
    expect(report.unknown).toEqual([expect.objectContaining({ requestId: a.id, why: expect.stringMatching(/reads argument "amount"/) })]);
    // amount was not kept by the recorded policy (it had no rule for it): the review is an assumption...
    const kept = new Recorder({ approval: { timeout: "1m" }, actions: { rules: { refund: { amount: { max: 10_000 } } } } });
    const b = kept.action("refund", 2, { amount: 700 });
    kept.tick(120_000).action("search", 0.5);
    const exact = run(kept.log, { actions: { rules: { refund: { amount: { max: 10_000, require_approval_above: 500 } } } } });
    // ...and with the argument kept it is exact: review, then the timeout denies it, so its $2 is saved.
    expect(exact.unknown).toEqual([]);
    expect(exact.differences).toEqual([expect.objectContaining({ requestId: b.id, wouldHave: expect.objectContaining({ decision: "review" }) })]);
    expect(exact.savedUsd).toBeCloseTo(2, 9);
    expect(exact.notes.join(" ")).toMatch(/taken as unanswered/);
    expect(exact.whatIf.state).toBe("active");
  });

  it("loops by repetition: replayed as recorded under the same policy, and a kill named under a stricter one", () => {
    const loops = { runaway: { repeat: { same_call: 3, same_error: 3, on_detect: "alert" as const } } };
    const r = new Recorder({ keep_raw: false, ...loops });
    const calls = [0, 1, 2, 3, 4].map(() => r.action("search", 0.01, { q: "same" }));
    // The errors' messages are not kept: the recorded signatures carry what counted them alike.
    for (let i = 0; i < 3; i++) r.error("fetch", "ECONNRESET", `socket hang up ${i % 1}`);
    expect(r.log.filter((e) => e.type === "anomaly.detected").length).toBeGreaterThanOrEqual(2);

    const same = run(r.log, {});
    expect(same.differences).toEqual([]);
    expect(same.unknown).toEqual([]);
    expect(same.whatIf.state).toBe(same.recorded.state);

    const strict = run(r.log, { runaway: { repeat: { same_call: 3, on_detect: "kill" } } });
    expect(strict.whatIf.killed).toMatchObject({ requestId: calls[2].id, rule: "runaway.repeat.same_call", by: "policy" });
    expect(strict.differences.map((d) => d.requestId)).toEqual(calls.slice(2).map((c) => c.id));
  });

  it("merge keeps the recorded fields; replace starts from the defaults; a bad policy names its field", () => {
    const r = new Recorder({ budget: { session_usd: 0.05 } });
    r.call(1000, 100, { maxTokens: 1000 });
    expect(whatIfPolicy(r.log, { runaway: { on_detect: "kill" } }, "merge").budget.session_usd).toBe(0.05);
    expect(whatIfPolicy(r.log, { runaway: { on_detect: "kill" } }, "replace").budget.session_usd).toBeUndefined();
    expect(() => whatIfPolicy(r.log, { budget: { sesion_usd: 1 } }, "merge")).toThrow(/policy\.budget/);
  });
});
