import { describe, expect, it } from "vitest";
import { decideAction } from "../../machines/decide";
import { decideEnd, decideReserve, decideSettle, decideTimers, needsCount, type ReserveInput } from "../../machines/money";
import { replay, stateOf } from "../../machines/session";
import { summarize } from "../../machines/summary";
import { FoldedSession } from "../support/folded";

// The money side of the engine, folded in memory as the actor folds it.

class Sim extends FoldedSession {
  reserve(extra: Partial<ReserveInput> = {}) {
    const requestId = `r${this.log.length}`;
    return { ...this.apply(decideReserve(this.view, input(requestId, extra), this.now)), requestId };
  }
  settle(requestId: string, costUsd: number, usage?: { inputTokens: number; outputTokens: number }) {
    return this.apply(decideSettle(this.view, { requestId, costUsd, outcome: "completed", usage: usage && { ...usage, cachedInputTokens: 0, cacheWriteTokens: 0 } }, this.now)!);
  }
  of(type: string) {
    return this.log.filter((e) => e.type === type);
  }
}

// $3/M input, $15/M output (claude-sonnet-4-5): 1000 input tokens = $0.003, 1 output token = $0.000015.
function input(requestId: string, extra: Partial<ReserveInput> = {}): ReserveInput {
  const cap = extra.fit?.cap ?? 1000;
  const fixedNanos = 1000 * 3000;
  return {
    requestId,
    provider: "anthropic",
    model: "claude-sonnet-4-5",
    path: "v1/messages",
    estimateUsd: (fixedNanos + cap * 15_000) / 1e9,
    priced: true,
    promptTokens: 1000,
    estimateTokens: 1000,
    maxOutputTokens: cap,
    attribution: {},
    fit: { fixedNanos, outputNanosPerToken: 15_000, choices: 1, cap },
    ...extra,
  };
}

describe("overruns", () => {
  it("a settle above its reservation records the overrun and the input ratio, and raises one alert per session", () => {
    const s = new Sim({ budget: { session_usd: 10 } });
    const a = s.reserve();
    s.settle(a.requestId, 0.05, { inputTokens: 5000, outputTokens: 10 });
    const settled = s.of("request.settled")[0];
    expect(settled.type === "request.settled" && settled.data.overrunUsd).toBeCloseTo(0.05 - 0.018, 12);
    expect(settled.type === "request.settled" && settled.data.inputRatio).toBe(5);
    const alert = s.of("alert.raised")[0];
    expect(alert.type === "alert.raised" && alert.data).toMatchObject({ kind: "overrun", rule: "budget.overrun", model: "claude-sonnet-4-5", ratio: 5 });
    const b = s.reserve();
    s.settle(b.requestId, 0.05, { inputTokens: 5000, outputTokens: 10 });
    expect(s.of("alert.raised")).toHaveLength(1);
    expect(summarize(s.snapshot).overrunUsd).toBeCloseTo(2 * (0.05 - 0.018), 12);
  });

  it("a settle within its reservation records no overrun", () => {
    const s = new Sim({ budget: { session_usd: 10 } });
    const a = s.reserve();
    s.settle(a.requestId, 0.01, { inputTokens: 800, outputTokens: 10 });
    const settled = s.of("request.settled")[0];
    expect(settled.type === "request.settled" && settled.data.overrunUsd).toBeUndefined();
    expect(settled.type === "request.settled" && settled.data.inputRatio).toBe(0.8);
    expect(s.of("alert.raised")).toHaveLength(0);
  });

  it("spend past the ceiling shows in the summary", () => {
    const s = new Sim({ budget: { session_usd: 0.02, alert_at: 1 } });
    const a = s.reserve();
    s.settle(a.requestId, 0.03);
    expect(summarize(s.snapshot)).toMatchObject({ overBudgetUsd: 0.01 });
  });
});

describe("exactly one end event", () => {
  it("late settles after an operator's kill never append another session.killed, even past the budget under on_exceed: kill", () => {
    const s = new Sim({ budget: { session_usd: 0.05, on_exceed: "kill" } });
    const calls = [s.reserve(), s.reserve()];
    s.apply(decideEnd(s.view, { how: "kill", by: "alice", reason: "stop", id: "k" }));
    for (const c of calls) s.settle(c.requestId, 0.04);
    expect(s.of("session.killed")).toHaveLength(1);
    expect(summarize(s.snapshot).killed).toMatchObject({ by: "alice", reason: "stop" });
    expect(s.snapshot.context.spentNanos).toBe(80_000_000);
  });

  it("an alarm batch settling many late reservations adds no end either", () => {
    const s = new Sim({ budget: { session_usd: 0.05, on_exceed: "kill", reservation_ttl: "1s" } });
    s.reserve();
    s.reserve();
    s.apply(decideEnd(s.view, { how: "close", by: "agent", reason: "done", id: "c" }));
    s.now += 2_000;
    s.apply({ drafts: decideTimers(s.view, s.now), verdict: { decision: "allow" } });
    expect(s.of("request.settled")).toHaveLength(2);
    expect(s.of("session.killed")).toHaveLength(0);
    expect(stateOf(s.snapshot)).toBe("closed");
  });

  it("a log with a second kill (written before this rule) still names the first killer on replay", () => {
    const s = new Sim({ budget: { session_usd: 1 } });
    s.apply(decideEnd(s.view, { how: "kill", by: "alice", reason: "stop", id: "k" }));
    s.apply({ drafts: [{ type: "session.killed", id: "late#kill", data: { by: "policy", reason: "late settle" } }], verdict: { decision: "deny" } });
    expect(replay(s.log).context.killed).toMatchObject({ by: "alice" });
  });
});

describe("budget.fit_output", () => {
  it("lowers the cap to what the budget leaves, at least min_output_tokens", () => {
    // $0.02 left after the $0.003 prompt: 1133 output tokens at $15/M.
    const s = new Sim({ budget: { session_usd: 0.02, fit_output: true } });
    const v = s.reserve({ fit: { fixedNanos: 3_000_000, outputNanosPerToken: 15_000, choices: 1, cap: 64_000 }, estimateUsd: (3_000_000 + 64_000 * 15_000) / 1e9 });
    expect(v).toMatchObject({ decision: "allow", outputCap: 1133 });
    const reserved = s.of("request.reserved")[0];
    expect(reserved.type === "request.reserved" && reserved.data).toMatchObject({ fittedCap: 1133, maxOutputTokens: 1133 });
    expect(summarize(s.snapshot).reservedUsd).toBeLessThanOrEqual(0.02);
  });

  it("refuses when even min_output_tokens does not fit, and the refusal says why", () => {
    const s = new Sim({ budget: { session_usd: 0.005, fit_output: true, min_output_tokens: 256 } });
    const v = s.reserve({ fit: { fixedNanos: 3_000_000, outputNanosPerToken: 15_000, choices: 1, cap: 64_000 }, estimateUsd: 0.963 });
    expect(v).toMatchObject({ decision: "deny", code: "budget_exceeded" });
  });

  it("off by default: the 402 names the cap and budget.fit_output", () => {
    const s = new Sim({ budget: { session_usd: 0.25 } });
    const v = s.reserve({ fit: { fixedNanos: 3_000_000, outputNanosPerToken: 15_000, choices: 1, cap: 64_000 }, estimateUsd: 0.963 });
    expect(v.decision).toBe("deny");
    expect(v.reason).toContain("output cap of 64000 tokens");
    expect(v.reason).toContain("budget.fit_output: true");
  });

  it("a prompt that alone does not fit says so instead", () => {
    const s = new Sim({ budget: { session_usd: 0.002 } });
    const v = s.reserve();
    expect(v.reason).toContain("the prompt alone needs $0.003");
  });
});

describe("the size bound and the count", () => {
  it("a bound that does not fit asks for the count before refusing, and counts nothing", () => {
    const s = new Sim({ budget: { session_usd: 0.01 } });
    const big = input("x", { countable: true, estimateUsd: 0.5 });
    expect(needsCount(s.view, big)).toBe(true);
    expect(decideReserve(s.view, big, s.now)).toEqual({ drafts: [], verdict: { decision: "count" } });
    expect(needsCount(s.view, { ...big, countable: false })).toBe(false);
    expect(needsCount(s.view, { ...big, estimateUsd: 0.001 })).toBe(false);
  });

  it("runaway detection compares the size measure call to call", () => {
    const s = new Sim({ budget: { session_usd: 10 }, runaway: { on_detect: "kill" } });
    for (const size of [1000, 2000, 4000]) s.reserve({ promptSize: size, promptTokens: 10 });
    expect(s.reserve({ promptSize: 8000, promptTokens: 10 })).toMatchObject({ decision: "deny", rule: "runaway" });
  });

  it("an unpriced part of a priced model is refused under a budget, naming why", () => {
    const s = new Sim({ budget: { session_usd: 1 } });
    const v = s.reserve({ priced: false, unpricedReason: "audio input is billed at audio-token prices" });
    expect(v).toMatchObject({ decision: "deny", rule: "unpriced_models" });
    expect(v.reason).toContain("audio");
  });

  it("actions still charge and refuse as before alongside reservations", () => {
    const s = new Sim({ budget: { session_usd: 0.02 } });
    s.reserve();
    expect(s.apply(decideAction(s.view, { id: "a", action: "t", args: {}, argsHash: "h", costUsd: 0.01, attribution: {} }, s.now)).decision).toBe("deny");
  });
});

describe("governor show", () => {
  it("prints an overrun line when settles went past their reservations", async () => {
    const { formatSession } = await import("../../sdk/cli/format");
    const s = new Sim({ budget: { session_usd: 0.02, alert_at: 1 } });
    const a = s.reserve();
    expect(formatSession(summarize(s.snapshot))).not.toContain("overrun");
    s.settle(a.requestId, 0.03);
    expect(formatSession(summarize(s.snapshot))).toMatch(/overrun\s+\$0\.012 charged above reservations; \$0\.01 past the budget/);
  });

  it("counts decisions so the parts add up: LLM calls and actions on one side, allowed, denied and waiting on the other", async () => {
    const { formatSession } = await import("../../sdk/cli/format");
    const s = new Sim({ budget: { session_usd: 0.05 }, actions: { deny: ["drop"], rules: { refund: { amount: { require_approval_above: 10 } } } } });
    const act = (id: string, action: string, args: Record<string, unknown> = {}) =>
      s.apply(decideAction(s.view, { id, action, args, argsHash: id, costUsd: 0, attribution: {} }, s.now));
    s.settle(s.reserve().requestId, 0.01); // an LLM call, allowed
    expect(s.reserve({ estimateUsd: 1 }).decision).toBe("deny"); // an LLM call over the budget
    act("a1", "search"); // allowed
    act("a2", "search"); // allowed
    act("a3", "drop"); // denied
    expect(act("a4", "refund", { amount: 50 }).decision).toBe("review"); // waiting for an operator
    const summary = summarize(s.snapshot);
    // The old line read "4 actions (3 allowed, 2 denied, 1 reviews)": 3 + 2 + 1 is not 4.
    expect(formatSession(summary)).toMatch(/decisions\s+6: 2 llm calls \+ 4 actions = 3 allowed \+ 2 denied \+ 1 awaiting approval \(1 went to review\)\n/);
    expect(formatSession(summary)).toMatch(/facts\s+0 violations, 0 tool errors, 0 alerts, 0 anomalies/);
    // Killed with the review still pending: it is neither allowed nor denied, and says so.
    s.apply(decideEnd(s.view, { how: "kill", reason: "stop", by: "op", id: "k" }));
    expect(formatSession(summarize(s.snapshot))).toMatch(/decisions\s+6: 2 llm calls \+ 4 actions = 3 allowed \+ 2 denied \+ 1 undecided when the session ended/);
  });
});
