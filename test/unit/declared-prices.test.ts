import { describe, expect, it } from "vitest";
import { decideReserve, decideSettle } from "../../machines/money";
import { whatIf, whatIfPolicy } from "../../machines/whatif";
import { callRates } from "../../party/session/pricing";
import type { ReserveRequest } from "../../party/ops";
import { BadRequestError } from "../../lib/errors";
import { declaredPriceFor, declaredRates, type Pricing } from "../../schema/declared-prices";
import type { GovernorEvent } from "../../schema/events";
import { mergePolicies, parsePolicy } from "../../schema/policy";
import { ratesCostUsd } from "../../schema/pricing";
import { WhatIfReport } from "../../schema/whatif";
import { Recorder } from "../support/recorder";

// Prices a policy declares: their schema and bounds, how a model finds its declaration, the
// rates a declaration means, and that reservations, settles and what-ifs price by them.

const refusal = (policy: unknown) => {
  try {
    parsePolicy(policy);
  } catch (e) {
    if (e instanceof BadRequestError) return { message: e.message, field: e.field };
    throw e;
  }
  return undefined;
};

describe("pricing in the policy schema", () => {
  it("takes prices per provider/model in USD per 1M tokens", () => {
    const p = parsePolicy({ pricing: { "openai/gpt-5.4-mini": { input: 0.75, output: 4.5, cached_input: 0.075 }, "anthropic/claude-haiku-5-5": { input: 0.1, output: 0.5, long_context: { above_tokens: 100_000, input: 0.5, output: 2.5 } } } });
    expect(p.pricing?.["openai/gpt-5.4-mini"]).toEqual({ input: 0.75, output: 4.5, cached_input: 0.075 });
    expect(parsePolicy({}).pricing).toBeUndefined();
  });

  it.each([
    [{ "gpt-5.4-mini": { input: 1, output: 2 } }, "policy.pricing.gpt-5.4-mini", /<provider>\/<model>/],
    [{ "google/gemini": { input: 1, output: 2 } }, "policy.pricing.google/gemini", /provider openai or anthropic/],
    [{ "openai/x": { input: -1, output: 2 } }, "policy.pricing.openai/x.input", /0/],
    [{ "openai/x": { input: 1, output: 1_000_001 } }, "policy.pricing.openai/x.output", /1000/],
    [{ "openai/x": { input: 0.0001, output: 2 } }, "policy.pricing.openai/x.input", /3 decimal places/],
    [{ "openai/x": { input: 1 } }, "policy.pricing.openai/x.output", /./],
    [{ "openai/x": { input: 1, output: 2, cache_writes: 3 } }, "policy.pricing.openai/x", /cache_writes/],
    [{ "openai/x": { input: 1, output: 2, long_context: { input: 2, output: 4 } } }, "policy.pricing.openai/x.long_context.above_tokens", /./],
    [{ "openai/x": { input: 1, output: 2, long_context: { above_tokens: 0, input: 2, output: 4 } } }, "policy.pricing.openai/x.long_context.above_tokens", /./],
    [{ "openai/x": { input: Number.NaN, output: 2 } }, "policy.pricing.openai/x.input", /./],
  ])("refuses %j naming the field", (pricing, field, message) => {
    const r = refusal({ pricing });
    expect(r?.field).toBe(field);
    expect(r?.message).toMatch(message);
  });

  it("refuses more than 256 models", () => {
    const pricing = Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`openai/m-${i}`, { input: 1, output: 1 }]));
    expect(refusal({ pricing })?.field).toBe("policy.pricing");
  });

  it("a session's policy overrides the tenant default model by model, field by field", () => {
    const tenant = { budget: { session_usd: 5 }, pricing: { "openai/gpt-9": { input: 1, output: 2 }, "openai/gpt-8": { input: 3, output: 4 } } };
    const merged = parsePolicy(mergePolicies(tenant, { pricing: { "openai/gpt-9": { output: 3 }, "anthropic/claude-9": { input: 5, output: 6 } } }));
    expect(merged.pricing).toEqual({ "openai/gpt-9": { input: 1, output: 3 }, "openai/gpt-8": { input: 3, output: 4 }, "anthropic/claude-9": { input: 5, output: 6 } });
  });
});

describe("which declaration prices a model", () => {
  const pricing: Pricing = { "openai/GPT-9": { input: 1, output: 2 }, "openai/gpt-9-mini": { input: 0.1, output: 0.2 }, "anthropic/claude-9": { input: 3, output: 4 } };

  it("its own id, case-insensitively, or the id it is a dated snapshot of, longest first", () => {
    expect(declaredPriceFor(pricing, "openai", "gpt-9")?.key).toBe("openai/GPT-9");
    expect(declaredPriceFor(pricing, "openai", " GPT-9 ")?.key).toBe("openai/GPT-9");
    expect(declaredPriceFor(pricing, "openai", "gpt-9-2027-01-01")?.key).toBe("openai/GPT-9");
    expect(declaredPriceFor(pricing, "openai", "gpt-9-mini-2027-01-01")?.key).toBe("openai/gpt-9-mini");
    expect(declaredPriceFor(pricing, "anthropic", "claude-9-20270101")?.key).toBe("anthropic/claude-9");
  });

  it("never another model, nor another provider's", () => {
    expect(declaredPriceFor(pricing, "openai", "gpt-9-pro")).toBeUndefined();
    expect(declaredPriceFor(pricing, "openai", "gpt-90")).toBeUndefined();
    expect(declaredPriceFor(pricing, "anthropic", "gpt-9")).toBeUndefined();
    expect(declaredPriceFor(pricing, "openai", "claude-9")).toBeUndefined();
    expect(declaredPriceFor(undefined, "openai", "gpt-9")).toBeUndefined();
  });
});

describe("the rates a declaration means", () => {
  it("fills what it leaves out with what can only charge more: cached at input, writes at the providers' premiums", () => {
    expect(declaredRates("openai", "gpt-9", { input: 1, output: 2 })).toEqual({ input: 1, output: 2, cachedInput: 1, cacheWrite: 1.25, cacheWrite1h: 2 });
    // Derived prices round up to the finest price the arithmetic holds, never down.
    expect(declaredRates("openai", "gpt-9", { input: 0.001, output: 0.002 }).cacheWrite).toBe(0.002);
    expect(declaredRates("anthropic", "claude-9", { input: 3, output: 15, cached_input: 0.3, cache_write: 3.75, cache_write_1h: 6 })).toEqual({ input: 3, output: 15, cachedInput: 0.3, cacheWrite: 3.75, cacheWrite1h: 6 });
  });

  it("keeps the long-context tier: declared, or the table's multipliers for a model the table knows", () => {
    const tiered = declaredRates("anthropic", "claude-haiku-5-5", { input: 0.1, output: 0.5, cached_input: 0.01, long_context: { above_tokens: 100_000, input: 0.5, output: 2.5, cached_input: 0.05 } });
    expect(tiered.long).toEqual({ above: 100_000, input: 0.5, output: 2.5, cachedInput: 0.05, cacheWrite: 0.625, cacheWrite1h: 1 });
    // A discount on gpt-5.6-sol still bills prompts past 272K at 2x input and 1.5x output.
    const sol = declaredRates("openai", "gpt-5.6-sol", { input: 4, output: 20, cached_input: 0.4 });
    expect(sol.long).toMatchObject({ above: 272_000, input: 8, output: 30, cachedInput: 0.8 });
    const usage = { inputTokens: 300_000, outputTokens: 100, cachedInputTokens: 0, cacheWriteTokens: 0 };
    expect(ratesCostUsd("openai", sol, usage)).toBeCloseTo(300_000 * 8e-6 + 100 * 30e-6, 12);
  });
});

describe("the actor prices a call at the declared price", () => {
  const request = (model: string, extra: Partial<ReserveRequest> = {}): ReserveRequest => ({
    requestId: "r1",
    clientKey: false,
    provider: "openai",
    model,
    path: "v1/chat/completions",
    prompt: { bound: 1000, size: 1000, feesUsd: 0, profile: "text" },
    maxOutputTokens: 100,
    choices: 1,
    price: null,
    attribution: {},
    ...extra,
  });

  it("a declaration takes precedence over the table, and one for an unknown model prices it", () => {
    const policy = parsePolicy({ pricing: { "openai/gpt-4o": { input: 1, output: 2 }, "openai/gpt-9": { input: 3, output: 6, cached_input: 0.3, cache_write: 3 } } });
    const table = request("gpt-4o", { price: { input: 2.5, output: 10 } });
    expect(callRates(policy, table)).toMatchObject({ price: { input: 1.25, output: 2 }, rates: { source: "policy", key: "openai/gpt-4o", input: 1 } });
    expect(callRates(parsePolicy({}), table)).toEqual({ price: { input: 2.5, output: 10 } });
    expect(callRates(policy, request("gpt-9"))).toMatchObject({ price: { input: 3, output: 6 } });
    // Anthropic writes only what cache_control marks, at the declared (or default) write rate.
    const claude = parsePolicy({ pricing: { "anthropic/claude-9": { input: 2, output: 10 } } });
    expect(callRates(claude, request("claude-9", { provider: "anthropic" })).price).toEqual({ input: 2, output: 10 });
    expect(callRates(claude, request("claude-9", { provider: "anthropic", cacheWrite: "1h" })).price).toEqual({ input: 4, output: 10 });
    const tiered = parsePolicy({ pricing: { "anthropic/claude-9": { input: 2, output: 10, long_context: { above_tokens: 200_000, input: 4, output: 15 } } } });
    expect(callRates(tiered, request("claude-9", { provider: "anthropic", context: 1_000_000 })).premium).toEqual({ above: 200_000, input: 4, output: 15 });
    expect(callRates(tiered, request("claude-9", { provider: "anthropic", context: 150_000 })).premium).toBeUndefined();
  });

  it("the reservation records the rates and the settle is charged at them from the usage, whatever the gateway reported", () => {
    const r = new Recorder({ budget: { session_usd: 1 }, pricing: { "openai/gpt-9": { input: 3, output: 6 } } });
    const rates = { ...declaredRates("openai", "gpt-9", { input: 3, output: 6 }), source: "policy" as const, key: "openai/gpt-9" };
    const call = r.call(1000, 50, { model: "gpt-9", maxTokens: 100, rates });
    expect(call.decision).toBe("allow");
    const reserved = r.log.find((e) => e.type === "request.reserved")!;
    expect(reserved.type === "request.reserved" && reserved.data).toMatchObject({ estimateUsd: (1000 * 3 + 100 * 6) / 1e6, rates: { source: "policy", key: "openai/gpt-9", input: 3, output: 6 }, inputPrice: 3, outputPrice: 6, feesUsd: 0 });
    const settled = r.log.find((e) => e.type === "request.settled")!;
    // The Recorder's gateway reports $0 for a model its table does not know.
    expect(settled.type === "request.settled" && settled.data.costUsd).toBeCloseTo((1000 * 3 + 50 * 6) / 1e6, 12);
    expect(r.summary.spentUsd).toBeCloseTo((1000 * 3 + 50 * 6) / 1e6, 12);
  });

  it("a released call is charged nothing, and one settled without usage at what the gateway says", () => {
    const r = new Recorder({ budget: { session_usd: 1 } });
    const rates = { ...declaredRates("openai", "gpt-9", { input: 3, output: 6 }), source: "policy" as const };
    const reserve = (id: string) =>
      r.apply(decideReserve(r.view, { requestId: id, provider: "openai", model: "gpt-9", path: "", estimateUsd: 0.01, priced: true, promptTokens: 1000, maxOutputTokens: 100, attribution: {}, rates }, r.now));
    reserve("a");
    reserve("b");
    const usage = { inputTokens: 1000, outputTokens: 100, cachedInputTokens: 0, cacheWriteTokens: 0 };
    r.apply(decideSettle(r.view, { requestId: "a", costUsd: 0, outcome: "released", usage }, r.now)!);
    r.apply(decideSettle(r.view, { requestId: "b", costUsd: 0.004, outcome: "completed" }, r.now)!);
    expect(r.summary.spentUsd).toBeCloseTo(0.004, 12);
  });

  it("an unknown model under a budget is refused, and the refusal says how to declare its price", () => {
    const r = new Recorder({ budget: { session_usd: 1 } });
    const v = r.call(1000, 50, { model: "gpt-9", unpriced: true });
    expect(v).toMatchObject({ decision: "deny", code: "policy_violation", rule: "unpriced_models" });
    expect(v.reason).toContain('pricing ("openai/gpt-9": { input, output } in USD per 1M tokens)');
    expect(v.reason).toContain("unpriced_models: allow");
  });
});

describe("what-if prices calls the way the policy it runs under declares", () => {
  const run = (log: GovernorEvent[], other: unknown, mode: "merge" | "replace" = "merge") => {
    const report = whatIf(log, whatIfPolicy(log, other, mode), mode);
    expect(WhatIfReport.safeParse(JSON.parse(JSON.stringify(report))).success).toBe(true);
    return report;
  };
  const declared = (input: number, output: number) => ({ ...declaredRates("openai", "gpt-9", { input, output }), source: "policy" as const, key: "openai/gpt-9" });

  it("a call refused for want of a price is allowed under a policy that declares one, at the declared worst case", () => {
    const r = new Recorder({ budget: { session_usd: 1 } });
    const refused = r.call(1000, 50, { model: "gpt-9", maxTokens: 100, unpriced: true });
    const report = run(r.log, { pricing: { "openai/gpt-9": { input: 3, output: 6 } } });
    expect(report.differences).toHaveLength(1);
    expect(report.differences[0]).toMatchObject({ requestId: refused.requestId, happened: { decision: "deny", rule: "unpriced_models" }, wouldHave: { decision: "allow", costUsd: null } });
    // Writes may cost 1.25x input where the declaration does not say otherwise.
    expect(report.differences[0].wouldHave.reservedUsd).toBeCloseTo((1000 * 3.75 + 100 * 6) / 1e6, 12);
    expect(report.notes.join("\n")).toContain('pricing."openai/gpt-9"');
  });

  it("replayed under its own declared prices nothing changes; under dearer ones, settles cost more and a budget refuses sooner", () => {
    const policy = { budget: { session_usd: 0.05 }, pricing: { "openai/gpt-9": { input: 3, output: 6, cache_write: 3 } } };
    const r = new Recorder(policy);
    for (let i = 0; i < 4; i++) r.call(1000, 500, { model: "gpt-9", maxTokens: 1000, rates: declared(3, 6) });
    const spent = r.summary.spentUsd;
    expect(spent).toBeCloseTo(4 * (1000 * 3 + 500 * 6) / 1e6, 12);
    const same = run(r.log, {});
    expect(same.differences).toEqual([]);
    expect(same.unknown).toEqual([]);
    expect(same.whatIf.spentUsd).toBeCloseTo(spent, 12);

    const dearer = run(r.log, { pricing: { "openai/gpt-9": { input: 6, output: 12, cache_write: 6 } } });
    // Each call now reserves 1000 * 6 + 1000 * 12 = $0.018 and costs 1000 * 6 + 500 * 12 = $0.012:
    // three fit $0.05 ($0.024 spent + $0.018 reserved), the fourth does not ($0.036 + $0.018).
    expect(dearer.differences.map((d) => d.wouldHave.decision)).toEqual(["deny"]);
    expect(dearer.whatIf.spentUsd).toBeCloseTo(3 * 0.012, 12);
    expect(dearer.savedUsd).toBeCloseTo(spent - 3 * 0.012, 12);
    expect(dearer.notes.join("\n")).toContain("priced at this policy's declared price");
  });

  it("dropping the declaration prices a model the table knows at the table, and leaves an unknown one unpriced", () => {
    const r = new Recorder({ budget: { session_usd: 1 }, pricing: { "openai/gpt-4o": { input: 1, output: 2, cache_write: 1 }, "openai/gpt-9": { input: 1, output: 2, cache_write: 1 } } });
    r.call(1000, 100, { model: "gpt-4o", maxTokens: 100, rates: { ...declared(1, 2), cacheWrite: 1, key: "openai/gpt-4o" } });
    r.call(1000, 100, { model: "gpt-9", maxTokens: 100, rates: { ...declared(1, 2), cacheWrite: 1 } });
    const opened = r.log[0];
    const policy = opened.type === "session.opened" ? { ...opened.data.policy, pricing: undefined } : {};
    const report = run(r.log, policy, "replace");
    expect(report.differences).toHaveLength(1);
    expect(report.differences[0]).toMatchObject({ subject: "openai gpt-9", wouldHave: { decision: "deny", rule: "unpriced_models" } });
    // gpt-4o at the table's $2.50 / $10: 1000 * 2.5 + 100 * 10.
    expect(report.whatIf.spentUsd).toBeCloseTo((1000 * 2.5 + 100 * 10) / 1e6, 12);
    expect(report.notes.join("\n")).toContain("built-in price table");
  });

  it("a log from before declared prices stays unknown when its price changes", () => {
    const r = new Recorder({ budget: { session_usd: 1 } });
    r.call(1000, 100, { model: "gpt-4o", maxTokens: 100 });
    const old = r.log.map((e) => (e.type === "request.reserved" ? ({ ...e, data: { ...e.data, feesUsd: undefined } } as GovernorEvent) : e));
    const report = run(old, { budget: { session_usd: 0.0001 }, pricing: { "openai/gpt-4o": { input: 1, output: 2 } } });
    expect(report.unknown).toHaveLength(1);
    expect(report.unknown[0].why).toContain("predates");
  });
});
