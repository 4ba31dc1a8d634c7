import { beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import {
  PRICES,
  PRICES_AS_OF,
  PriceSchema,
  callCostUsd,
  contextWindow,
  costNanos,
  costUsd,
  inputRate,
  priceFor,
  ratesFor,
  reserveRates,
  type Usage,
} from "../../schema/pricing";
import { UNKNOWN_CONTEXT } from "../../schema/prices";
import { countTextTokens, encoderNow } from "../../party/proxy/tokens";
import { countPromptTokens } from "../../party/proxy/estimate";
import { cpuMsOf } from "../support/cpu";

// Counting outside a call's path: the tables are decoded up front.
beforeAll(() => {
  encoderNow("o200k_base");
  encoderNow("cl100k_base");
});

const usage = (u: Partial<Usage>): Usage => ({ inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0, ...u });
const family = (provider: "openai" | "anthropic", model: string) => priceFor(provider, model)?.family;

describe("price table", () => {
  it("every row satisfies the schema and the as-of date is an ISO date", () => {
    for (const rows of Object.values(PRICES)) z.record(z.string(), PriceSchema).parse(rows);
    expect(PRICES_AS_OF).toMatch(/^\d{4}-\d{2}-\d{2}$/);
  });

  it("has the published prices for anchor models", () => {
    expect(priceFor("openai", "gpt-4o")?.price).toEqual({ input: 2.5, output: 10, cachedInput: 1.25 });
    expect(priceFor("openai", "gpt-4o-mini")?.price).toEqual({ input: 0.15, output: 0.6, cachedInput: 0.075 });
    expect(priceFor("anthropic", "claude-sonnet-4-5")?.price).toEqual({ input: 3, output: 15, cachedInput: 0.3, cacheWrite: 3.75 });
    expect(priceFor("anthropic", "claude-3-haiku")?.price).toEqual({ input: 0.25, output: 1.25, cachedInput: 0.03, cacheWrite: 0.3 });
  });
});

describe("price table as of 2026-11", () => {
  it("prices the current models from the providers' pages, snapshots and aliases included", () => {
    expect(priceFor("openai", "gpt-5.1")?.price).toEqual({ input: 1.25, output: 10, cachedInput: 0.125 });
    expect(priceFor("openai", "gpt-5.1-2025-11-13")?.family).toBe("gpt-5.1");
    // List price, not the promotion that ran until at least 2026-11-21; writes at 1.25x input.
    expect(priceFor("openai", "gpt-5.6-sol")?.price).toEqual({ input: 5, output: 30, cachedInput: 0.5, cacheWrite: 6.25 });
    expect(priceFor("openai", "gpt-5.6")?.family).toBe("gpt-5.6-sol");
    expect(priceFor("openai", "gpt-5.6-terra")?.price).toEqual({ input: 2, output: 12, cachedInput: 0.2, cacheWrite: 2.5 });
    expect(priceFor("openai", "gpt-5.6-luna")?.price).toEqual({ input: 0.2, output: 1.2, cachedInput: 0.02, cacheWrite: 0.25 });
    expect(priceFor("openai", "gpt-5.3-chat-latest")?.family).toBe("gpt-5.3-chat");
    expect(priceFor("openai", "gpt-5-pro-2025-10-06")?.price).toEqual({ input: 15, output: 120, cachedInput: 15 });
    expect(priceFor("openai", "GPT-5-Codex")?.family).toBe("gpt-5-codex");
    expect(priceFor("anthropic", "claude-opus-4-5")?.price).toEqual({ input: 5, output: 25, cachedInput: 0.5, cacheWrite: 6.25, cacheWrite1h: 10 });
    expect(priceFor("anthropic", "claude-opus-4-5-20251101")?.family).toBe("claude-opus-4-5");
    expect(priceFor("anthropic", "claude-sonnet-4-6")?.price).toEqual({ input: 3, output: 15, cachedInput: 0.3, cacheWrite: 3.75, cacheWrite1h: 6 });
    expect(priceFor("anthropic", "claude-opus-5-5")?.price).toEqual({ input: 4, output: 20, cachedInput: 0.2, cacheWrite: 5, cacheWrite1h: 8 });
    expect(priceFor("anthropic", "claude-fable-5-1")?.price.cachedInput).toBe(0.25);
    for (const m of ["claude-opus-4-8", "claude-opus-4-7", "claude-opus-4-6", "claude-opus-5", "claude-sonnet-5", "claude-sonnet-5-5", "claude-mythos-5-1", "claude-haiku-4-5-20251001"]) {
      expect(priceFor("anthropic", m)?.family).toBe(m.replace(/-\d{8}$/, ""));
    }
  });

  it("leaves models no provider page confirmed unpriced, and does not stretch a family over them", () => {
    for (const m of ["gpt-5.4", "gpt-5.4-mini", "gpt-5.4-nano-2026-03-17", "gpt-5.2", "gpt-5.2-pro", "gpt-5.1-codex", "gpt-5.1-mini", "gpt-5.1-chat-latest", "gpt-5.1-codex-max", "gpt-5.5", "codex-mini-latest", "gpt-4.5-preview", "o3-deep-research", "computer-use-preview", "gpt-5.6-sol-x"]) {
      expect(priceFor("openai", m), m).toBeUndefined();
    }
    for (const m of ["claude-fable-5-2", "claude-mythos-5-2", "claude-haiku-5-5", "claude-mythos-preview", "claude-opus-4-9", "claude-sonnet-4-6-1"]) {
      expect(priceFor("anthropic", m), m).toBeUndefined();
    }
  });

  it("long prompts bill the whole request at the long-context tier (gpt-5.6 past 272K, Sonnet 4.5 past 200K)", () => {
    const sol = priceFor("openai", "gpt-5.6-sol")!;
    const u = (input: number) => usage({ inputTokens: input, outputTokens: 1000 });
    expect(callCostUsd("openai", sol.family, sol.price, u(272_000))).toBeCloseTo(272_000 * 5e-6 + 1000 * 30e-6, 12);
    expect(callCostUsd("openai", sol.family, sol.price, u(272_001))).toBeCloseTo(272_001 * 10e-6 + 1000 * 45e-6, 12);
    const sonnet = priceFor("anthropic", "claude-sonnet-4-5")!;
    expect(callCostUsd("anthropic", sonnet.family, sonnet.price, u(200_001))).toBeCloseTo(200_001 * 6e-6 + 1000 * 22.5e-6, 12);
    // Sonnet 4.6 lists one price for its whole 1M window.
    const s46 = priceFor("anthropic", "claude-sonnet-4-6")!;
    expect(callCostUsd("anthropic", s46.family, s46.price, u(900_000))).toBeCloseTo(900_000 * 3e-6 + 1000 * 15e-6, 12);
  });

  it("a reservation assumes the dearest rate an input token can bill at", () => {
    const sol = priceFor("openai", "gpt-5.6-sol")!;
    // OpenAI caches on its own: from GPT-5.6 on, any prompt may be written at 1.25x.
    expect(inputRate("openai", sol.price, "none")).toBe(6.25);
    expect(inputRate("openai", priceFor("openai", "gpt-4o")!.price, "none")).toBe(2.5);
    const opus = priceFor("anthropic", "claude-opus-4-6")!.price;
    expect(inputRate("anthropic", opus, "none")).toBe(5);
    expect(inputRate("anthropic", opus, "5m")).toBe(6.25);
    expect(inputRate("anthropic", opus, "1h")).toBe(10);
    const r = reserveRates("openai", ratesFor("openai", sol.family, sol.price), "none", contextWindow("openai", sol.family));
    expect(r).toEqual({ price: { input: 6.25, output: 30 }, premium: { above: 272_000, input: 12.5, output: 45 } });
    // No tier where the window cannot reach it: Sonnet 4.5 without the 1M beta.
    const s45 = priceFor("anthropic", "claude-sonnet-4-5")!;
    expect(reserveRates("anthropic", ratesFor("anthropic", s45.family, s45.price), "none", contextWindow("anthropic", s45.family)).premium).toBeUndefined();
    expect(reserveRates("anthropic", ratesFor("anthropic", s45.family, s45.price), "none", contextWindow("anthropic", s45.family, "context-1m-2025-08-07")).premium).toEqual({ above: 200_000, input: 6, output: 22.5 });
  });

  it("context windows: confirmed ones cap the bound, unknown ones only the request size", () => {
    expect(contextWindow("openai", "gpt-5.6-luna")).toBe(1_050_000);
    expect(contextWindow("anthropic", "claude-opus-4-6")).toBe(1_000_000);
    expect(contextWindow("anthropic", "claude-haiku-4-5")).toBe(200_000);
    expect(contextWindow("anthropic", "")).toBe(UNKNOWN_CONTEXT);
    expect(contextWindow("openai", "")).toBe(UNKNOWN_CONTEXT);
  });
});

describe("priceFor family mapping", () => {
  it.each([
    ["gpt-4o", "gpt-4o"],
    ["gpt-4o-2024-08-06", "gpt-4o"],
    ["gpt-4o-2024-11-20", "gpt-4o"],
    ["gpt-4o-2024-05-13", "gpt-4o-2024-05-13"],
    ["gpt-4o-mini-2024-07-18", "gpt-4o-mini"],
    ["gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"],
    ["gpt-4.1-nano", "gpt-4.1-nano"],
    ["gpt-5-mini-2025-08-07", "gpt-5-mini"],
    ["gpt-5-chat-latest", "gpt-5-chat"],
    ["o3-mini-2025-01-31", "o3-mini"],
    ["o4-mini-2025-04-16", "o4-mini"],
    ["o1-2024-12-17", "o1"],
    ["gpt-4-0613", "gpt-4"],
    ["gpt-4-turbo-2024-04-09", "gpt-4-turbo"],
    ["gpt-4-1106-preview", "gpt-4-turbo"],
    ["gpt-3.5-turbo-0125", "gpt-3.5-turbo"],
    ["gpt-3.5-turbo-1106", "gpt-3.5-turbo-1106"],
    ["text-embedding-3-small", "text-embedding-3-small"],
  ])("openai %s -> %s", (model, expected) => {
    expect(family("openai", model)).toBe(expected);
  });

  it.each([
    ["claude-3-5-sonnet-20241022", "claude-3-5-sonnet"],
    ["claude-3-5-sonnet-latest", "claude-3-5-sonnet"],
    ["claude-sonnet-4-5-20250929", "claude-sonnet-4-5"],
    ["claude-sonnet-4-5", "claude-sonnet-4-5"],
    ["claude-sonnet-4-20250514", "claude-sonnet-4"],
    ["claude-sonnet-4-0", "claude-sonnet-4"],
    ["claude-opus-4-1-20250805", "claude-opus-4-1"],
    ["claude-opus-4-20250514", "claude-opus-4"],
    ["claude-haiku-4-5-20251001", "claude-haiku-4-5"],
    ["claude-3-7-sonnet-latest", "claude-3-7-sonnet"],
    ["claude-3-5-haiku-20241022", "claude-3-5-haiku"],
    ["claude-3-haiku-20240307", "claude-3-haiku"],
    ["claude-3-opus-20240229", "claude-3-opus"],
  ])("anthropic %s -> %s", (model, expected) => {
    expect(family("anthropic", model)).toBe(expected);
  });

  it("returns undefined for unknown models instead of a $0 price", () => {
    for (const m of ["gpt-9", "gpt-4o-audio-preview", "gpt-4o-mini-x", "ft:gpt-4o-mini-2024-07-18:org::abc", "", "o1-pro-huge"]) {
      expect(priceFor("openai", m)).toBeUndefined();
    }
    expect(priceFor("anthropic", "claude-sonnet-4-5-20250929x")).toBeUndefined();
    expect(priceFor("anthropic", "gpt-4o")).toBeUndefined();
    expect(priceFor("openai", "claude-3-5-sonnet-20241022")).toBeUndefined();
    expect(priceFor("openai", "constructor")).toBeUndefined();
  });
});

describe("costUsd", () => {
  it("openai: uncached + cached + output", () => {
    const { price } = priceFor("openai", "gpt-4o-2024-08-06")!;
    // 1000 * 2.50 + 2000 * 1.25 + 500 * 10.00 = 10,000 USD per 1M = 0.01 USD
    expect(costUsd(price, usage({ inputTokens: 1000, cachedInputTokens: 2000, outputTokens: 500 }))).toBe(0.01);
    // 0.15 + 0.075 + 0.60 for a million of each
    const mini = priceFor("openai", "gpt-4o-mini")!.price;
    expect(costUsd(mini, usage({ inputTokens: 1e6, cachedInputTokens: 1e6, outputTokens: 1e6 }))).toBe(0.825);
  });

  it("anthropic: cache reads and writes", () => {
    const { price } = priceFor("anthropic", "claude-sonnet-4-5-20250929")!;
    // 100*3 + 10000*3.75 + 20000*0.30 + 300*15 = 300 + 37500 + 6000 + 4500 = 48300 per 1M
    const u = usage({ inputTokens: 100, cacheWriteTokens: 10_000, cachedInputTokens: 20_000, outputTokens: 300 });
    expect(costUsd(price, u)).toBe(0.0483);
    const haiku = priceFor("anthropic", "claude-3-haiku-20240307")!.price;
    expect(costUsd(haiku, usage({ inputTokens: 1e6, cachedInputTokens: 1e6, cacheWriteTokens: 1e6, outputTokens: 1e6 }))).toBe(1.83);
    const opus = priceFor("anthropic", "claude-opus-4-1")!.price;
    expect(costUsd(opus, usage({ cacheWriteTokens: 1e6, cachedInputTokens: 1e6 }))).toBe(20.25);
  });

  it("is exact in nano-dollars and independent of term order", () => {
    const { price } = priceFor("openai", "gpt-5-nano")!;
    expect(costNanos(price, usage({ inputTokens: 1, cachedInputTokens: 1, outputTokens: 1 }))).toBe(50 + 5 + 400);
    expect(costUsd(price, usage({ inputTokens: 3 }))).toBe(150 / 1e9);
    let total = 0;
    for (let i = 0; i < 10; i++) total += costNanos(price, usage({ inputTokens: 2 }));
    expect(total).toBe(costNanos(price, usage({ inputTokens: 20 })));
  });

  it("ignores negative or non-finite counts", () => {
    const { price } = priceFor("openai", "gpt-4o")!;
    expect(costUsd(price, usage({ inputTokens: -5, outputTokens: Number.NaN }))).toBe(0);
  });
});

describe("token counting", () => {
  it("counts known strings", () => {
    expect(countTextTokens("openai", "gpt-4o", "hello world")).toBe(2);
    expect(countTextTokens("openai", "gpt-4", "hello world")).toBe(2);
    expect(countTextTokens("anthropic", "claude-sonnet-4-5", "hello world")).toBe(2);
    expect(countTextTokens("openai", "gpt-4o", "")).toBe(0);
    // o200k and cl100k disagree on this one, proving the model picks the encoding.
    const s = "Привет, как дела? 你好世界";
    expect(countTextTokens("openai", "gpt-4o", s)).not.toBe(countTextTokens("openai", "gpt-4-turbo", s));
  });

  it("treats special-token text as plain text", () => {
    expect(countTextTokens("openai", "gpt-4o", "<|endoftext|>")).toBeGreaterThan(1);
  });

  it("stays fast on pathological whitespace-free input", () => {
    // CPU time, not wall time: unbounded, js-tiktoken's BPE is quadratic in a run's length
    // (16K chars of "aaaa…" took ~18 s), and that is CPU; a loaded machine stretched the
    // ~1 s of CPU this takes to 10.2 s of wall time (see test/support/cpu.ts).
    const cpu = cpuMsOf(() => {
      expect(countTextTokens("openai", "gpt-4o", "a".repeat(50_000))).toBe(6250);
      expect(countTextTokens("openai", "gpt-4o", "ab".repeat(400_000))).toBeGreaterThan(50_000);
    });
    expect(cpu).toBeLessThan(10_000);
  });

  it("chat: messages, parts, names, tools, images", () => {
    const one = { model: "gpt-4o", messages: [{ role: "user", content: "hello world" }] };
    // 3 per message + "user" + "hello world" + 3 reply priming
    expect(countPromptTokens("openai", "v1/chat/completions", one)).toBe(3 + 1 + 2 + 3);
    expect(countPromptTokens("openai", "/v1/chat/completions", one)).toBe(9);
    expect(countPromptTokens("openai", "chat/completions", one)).toBe(9);
    const parts = { model: "gpt-4o", messages: [{ role: "user", content: [{ type: "text", text: "hello world" }] }] };
    expect(countPromptTokens("openai", "v1/chat/completions", parts)).toBe(9);
    const named = { model: "gpt-4o", messages: [{ role: "user", name: "bob", content: "hello world" }] };
    expect(countPromptTokens("openai", "v1/chat/completions", named)).toBe(9 + 1 + 1);

    const longer = { model: "gpt-4o", messages: [...one.messages, { role: "assistant", content: "a much longer reply with more words" }] };
    expect(countPromptTokens("openai", "v1/chat/completions", longer)).toBeGreaterThan(9 + 3 + 5);
    const tools = { ...one, tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }] };
    expect(countPromptTokens("openai", "v1/chat/completions", tools)).toBeGreaterThan(9 + 10);
    const image = { model: "gpt-4o", messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "data:image/png;base64," + "A".repeat(100_000) } }] }] };
    // No readable size in the payload: gpt-4o's largest image (85 + 8 tiles x 170) plus the part's wrapper.
    expect(countPromptTokens("openai", "v1/chat/completions", image)).toBe(3 + 1 + 1445 + 20 + 3);
    const calls = {
      model: "gpt-4o",
      messages: [{ role: "assistant", content: null, tool_calls: [{ id: "c", type: "function", function: { name: "f", arguments: '{"city":"Paris"}' } }] }],
    };
    expect(countPromptTokens("openai", "v1/chat/completions", calls)).toBeGreaterThan(3 + 1 + 3 + 4);
  });

  it("responses: string or item input plus instructions", () => {
    const s = countPromptTokens("openai", "v1/responses", { model: "gpt-5", input: "hello world" });
    expect(s).toBe(9);
    const items = countPromptTokens("openai", "responses", {
      model: "gpt-5",
      input: [{ role: "user", content: [{ type: "input_text", text: "hello world" }] }],
    });
    expect(items).toBe(9);
    const withInstr = countPromptTokens("openai", "v1/responses", { model: "gpt-5", input: "hello world", instructions: "be brief" });
    expect(withInstr).toBeGreaterThan(s + 3);
    const fnOut = countPromptTokens("openai", "v1/responses", {
      model: "gpt-5",
      input: [{ role: "user", content: "hello world" }, { type: "function_call_output", call_id: "c", output: "sunny and warm today" }],
    });
    expect(fnOut).toBe(9 + countTextTokens("openai", "gpt-5", "sunny and warm today"));
  });

  it("embeddings: strings, string arrays and token arrays", () => {
    const e = (input: unknown) => countPromptTokens("openai", "v1/embeddings", { model: "text-embedding-3-small", input });
    expect(e("hello world")).toBe(2);
    expect(e(["hello world", "hello world"])).toBe(4);
    expect(e([1, 2, 3])).toBe(3);
    expect(e([[1, 2], [3]])).toBe(3);
  });

  it("anthropic: system string or blocks, messages, tools", () => {
    const base = { model: "claude-sonnet-4-5", max_tokens: 100, messages: [{ role: "user", content: "hello world" }] };
    const plain = countPromptTokens("anthropic", "v1/messages", base);
    expect(plain).toBe(9);
    const sys = countPromptTokens("anthropic", "messages", { ...base, system: "You are terse." });
    const blocks = countPromptTokens("anthropic", "v1/messages", { ...base, system: [{ type: "text", text: "You are terse." }] });
    expect(sys).toBeGreaterThan(plain);
    expect(blocks).toBe(sys);
    const tools = countPromptTokens("anthropic", "v1/messages", { ...base, tools: [{ name: "search", input_schema: { type: "object" } }] });
    expect(tools).toBeGreaterThan(plain);
    const toolTurn = countPromptTokens("anthropic", "v1/messages", {
      ...base,
      messages: [
        ...base.messages,
        { role: "assistant", content: [{ type: "tool_use", id: "t", name: "search", input: { q: "weather" } }] },
        { role: "user", content: [{ type: "tool_result", tool_use_id: "t", content: [{ type: "text", text: "sunny" }] }] },
      ],
    });
    expect(toolTurn).toBeGreaterThan(plain + 6);
  });
});

