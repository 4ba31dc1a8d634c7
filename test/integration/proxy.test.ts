import Anthropic from "@anthropic-ai/sdk";
import { request as httpRequest } from "node:http";
import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { costUsd, priceFor, type Provider, type Usage } from "../../schema/pricing";
import { useProxiedGovernor } from "../support/proxied";
import { TOKENS } from "../support/server";

const OPENAI_KEY = "sk-provider-secret-openai";
const ANTHROPIC_KEY = "sk-ant-provider-secret";

const rig = useProxiedGovernor(
  (up) => ({
    OPENAI_BASE_URL: `${up.url}/v1`,
    OPENAI_API_KEY: OPENAI_KEY,
    ANTHROPIC_BASE_URL: up.url,
    ANTHROPIC_API_KEY: ANTHROPIC_KEY,
    GOVERNOR_UPSTREAM_TIMEOUT_MS: "3000",
    GOVERNOR_STREAM_STALL_MS: "2000",
  }),
  "p",
);
const { op, session, summary, openai, anthropic, whenSettled } = rig;

function expected(provider: Provider, model: string, u: Usage) {
  return costUsd(priceFor(provider, model)!.price, u);
}
const openaiUsage = (u: { prompt_tokens: number; completion_tokens: number; prompt_tokens_details?: { cached_tokens?: number } | null }): Usage => {
  const cached = u.prompt_tokens_details?.cached_tokens ?? 0;
  return { inputTokens: u.prompt_tokens - cached, outputTokens: u.completion_tokens, cachedInputTokens: cached, cacheWriteTokens: 0 };
};

describe("cost is usage x price", () => {
  it("OpenAI chat completions, non-streaming, with cached tokens", async () => {
    const id = await session();
    rig.up.next({ cachedTokens: 4 });
    const { data, response } = await openai(id, { headers: { "X-Agent-ID": "bot-7", "X-Run-ID": "run-1" } })
      .chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Say hello to the governor" }], max_tokens: 50 })
      .withResponse();
    expect(data.choices[0].message.content).toBeTruthy();
    const s = await whenSettled(id);
    expect(s.spentUsd).toBeCloseTo(expected("openai", "gpt-4o-mini", openaiUsage(data.usage!)), 12);
    expect(s.reservations).toHaveLength(0);
    expect(response.headers.get("x-governor-request-id")).toBeTruthy();
    expect(Number(response.headers.get("x-governor-spent-usd"))).toBeCloseTo(s.spentUsd, 6);
    expect(Number(response.headers.get("x-governor-remaining-usd"))).toBeCloseTo(10 - s.spentUsd, 6);
    const log = (await op(`/v1/sessions/${id}/log`)).text;
    expect(log).toContain('"agent":"bot-7"');
    expect(log).toContain('"run":"run-1"');
    expect(log).not.toContain("Say hello to the governor");
  });

  it("OpenAI chat completions, streaming: usage is asked for and settled", async () => {
    const id = await session();
    const stream = await openai(id).chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "stream please" }], stream: true });
    let usage: any;
    let text = "";
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text.length).toBeGreaterThan(0);
    expect(rig.up.requests[0].body.stream_options).toEqual({ include_usage: true });
    const s = await whenSettled(id);
    expect(s.spentUsd).toBeCloseTo(expected("openai", "gpt-4o", openaiUsage(usage)), 12);
  });

  it("OpenAI streaming with include_usage: false: the client gets no usage chunk, the settle still uses the provider's usage", async () => {
    const id = await session();
    // Figures the local count could not reach: a settle by counting would show.
    rig.up.setDefault({ promptTokens: 5000, completionTokens: 700 });
    const stream = await openai(id).chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "stream please" }], stream: true, stream_options: { include_usage: false } });
    let text = "";
    const chunks: Array<{ choices: unknown[]; usage?: unknown }> = [];
    for await (const chunk of stream) {
      chunks.push(chunk);
      text += chunk.choices[0]?.delta?.content ?? "";
    }
    expect(text.length).toBeGreaterThan(0);
    expect(chunks.length).toBeGreaterThan(0);
    expect(chunks.every((c) => c.choices.length > 0 && !c.usage)).toBe(true);
    expect(rig.up.requests[0].body.stream_options).toEqual({ include_usage: true });
    const s = await whenSettled(id);
    expect(s.spentUsd).toBeCloseTo(expected("openai", "gpt-4o", { inputTokens: 5000, outputTokens: 700, cachedInputTokens: 0, cacheWriteTokens: 0 }), 12);
  });

  it("OpenAI responses API, streaming and not", async () => {
    const id = await session();
    const r = await openai(id).responses.create({ model: "gpt-4.1-mini", input: "hello", max_output_tokens: 40 });
    const first = expected("openai", "gpt-4.1-mini", { inputTokens: r.usage!.input_tokens - (r.usage!.input_tokens_details?.cached_tokens ?? 0), outputTokens: r.usage!.output_tokens, cachedInputTokens: r.usage!.input_tokens_details?.cached_tokens ?? 0, cacheWriteTokens: 0 });
    expect((await whenSettled(id)).spentUsd).toBeCloseTo(first, 12);
    const stream = await openai(id).responses.create({ model: "gpt-4.1-mini", input: "hello again", stream: true });
    let done: any;
    for await (const ev of stream) if (ev.type === "response.completed") done = ev.response;
    const second = expected("openai", "gpt-4.1-mini", { inputTokens: done.usage.input_tokens, outputTokens: done.usage.output_tokens, cachedInputTokens: 0, cacheWriteTokens: 0 });
    expect((await whenSettled(id)).spentUsd).toBeCloseTo(first + second, 12);
  });

  it("OpenAI embeddings", async () => {
    const id = await session();
    const r = await openai(id).embeddings.create({ model: "text-embedding-3-small", input: ["a", "b c"] });
    expect((await whenSettled(id)).spentUsd).toBeCloseTo(expected("openai", "text-embedding-3-small", { inputTokens: r.usage.prompt_tokens, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0 }), 12);
  });

  it("Anthropic messages, non-streaming and streaming", async () => {
    const id = await session();
    rig.up.next({ cachedTokens: 3 });
    const m = await anthropic(id).messages.create({ model: "claude-sonnet-4-5", max_tokens: 64, messages: [{ role: "user", content: "hi" }] });
    const u1: Usage = { inputTokens: m.usage.input_tokens, outputTokens: m.usage.output_tokens, cachedInputTokens: m.usage.cache_read_input_tokens ?? 0, cacheWriteTokens: m.usage.cache_creation_input_tokens ?? 0 };
    expect((await whenSettled(id)).spentUsd).toBeCloseTo(expected("anthropic", "claude-sonnet-4-5", u1), 12);
    const final = await anthropic(id).messages.stream({ model: "claude-haiku-4-5", max_tokens: 64, messages: [{ role: "user", content: "stream" }] }).finalMessage();
    const u2: Usage = { inputTokens: final.usage.input_tokens, outputTokens: final.usage.output_tokens, cachedInputTokens: final.usage.cache_read_input_tokens ?? 0, cacheWriteTokens: 0 };
    const s = await whenSettled(id);
    expect(s.spentUsd).toBeCloseTo(expected("anthropic", "claude-sonnet-4-5", u1) + expected("anthropic", "claude-haiku-4-5", u2), 12);
  });
});

describe("credentials", () => {
  it("the upstream sees the provider key and never the Governor token", async () => {
    const id = await session();
    await openai(id, { headers: { "X-User-ID": "u-1" } }).chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], max_tokens: 5 });
    await anthropic(id).messages.create({ model: "claude-haiku-4-5", max_tokens: 5, messages: [{ role: "user", content: "x" }] });
    const [o, a] = rig.up.requests;
    expect(o.headers.authorization).toBe(`Bearer ${OPENAI_KEY}`);
    expect(a.headers["x-api-key"]).toBe(ANTHROPIC_KEY);
    expect(a.headers["anthropic-version"]).toBeTruthy();
    for (const r of rig.up.requests) {
      const all = JSON.stringify(r.headers);
      expect(all).not.toContain(TOKENS.agent);
      expect(all).not.toMatch(/x-session-id|x-user-id/i);
    }
    const log = (await op(`/v1/sessions/${id}/log`)).text;
    expect(log).not.toContain(OPENAI_KEY);
    expect(log).not.toContain(ANTHROPIC_KEY);
    expect(rig.gov.output()).not.toContain(OPENAI_KEY);
  });
});

describe("refusals in the provider's error shape", () => {
  it("budget_exceeded is a 402 the OpenAI and Anthropic SDKs raise as APIError", async () => {
    const id = await session({ budget: { session_usd: 0.0001 } });
    const e1 = await openai(id).chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "x" }], max_tokens: 1000 }).catch((e) => e);
    expect(e1).toBeInstanceOf(OpenAI.APIError);
    expect(e1.status).toBe(402);
    expect(e1.code).toBe("budget_exceeded");
    const e2 = await anthropic(id).messages.create({ model: "claude-sonnet-4-5", max_tokens: 1000, messages: [{ role: "user", content: "x" }] }).catch((e) => e);
    expect(e2).toBeInstanceOf(Anthropic.APIError);
    expect(e2.status).toBe(402);
    expect(e2.error.error.type).toBe("budget_exceeded");
    expect(rig.up.requests).toHaveLength(0);
  });

  it("40 concurrent calls from separate clients never spend past the budget", async () => {
    // Each call reserves ~ (prompt + 100 output tokens) of gpt-4o: about $0.001.
    const id = await session({ budget: { session_usd: 0.01 } });
    rig.up.setDefault({ delayMs: 20 });
    const results = await Promise.allSettled(
      Array.from({ length: 40 }, () => openai(id).chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "go" }], max_tokens: 100 })),
    );
    const ok = results.filter((r) => r.status === "fulfilled").length;
    const refused = results.filter((r) => r.status === "rejected" && (r.reason as any).status === 402).length;
    expect(ok + refused).toBe(40);
    expect(ok).toBeGreaterThan(0);
    expect(refused).toBeGreaterThan(0);
    expect(rig.up.requests).toHaveLength(ok);
    const s = await whenSettled(id);
    expect(s.spentUsd).toBeLessThanOrEqual(0.01);
  });

  it("missing session header, unknown session, bad body, wrong token", async () => {
    const noHeader = await fetch(`${rig.gov.url}/v1/proxy/openai/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${TOKENS.agent}` }, body: "{}" });
    expect(noHeader.status).toBe(400);
    expect(((await noHeader.json()) as any).error).toMatchObject({ code: "bad_request", param: "X-Session-ID" });
    const unknown = await openai("never-opened").chat.completions.create({ model: "gpt-4o", messages: [] }).catch((e) => e);
    expect(unknown.status).toBe(404);
    const id = await session();
    const noModel = await fetch(`${rig.gov.url}/v1/proxy/openai/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${TOKENS.agent}`, "x-session-id": id }, body: JSON.stringify({ messages: [] }) });
    expect(noModel.status).toBe(400);
    expect(((await noModel.json()) as any).error.param).toBe("model");
    const bad = await new OpenAI({ apiKey: "not-a-token", baseURL: `${rig.gov.url}/v1/proxy/openai/v1`, maxRetries: 0, defaultHeaders: { "X-Session-ID": id } }).chat.completions.create({ model: "gpt-4o", messages: [] }).catch((e) => e);
    expect(bad).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(rig.up.requests).toHaveLength(0);
  });

  it("an unpriced model is refused while a budget is set", async () => {
    const id = await session();
    const e = await openai(id).chat.completions.create({ model: "gpt-99-experimental", messages: [{ role: "user", content: "x" }] }).catch((e) => e);
    expect(e.status).toBe(403);
    expect(e.code).toBe("policy_violation");
    expect(e.error.rule).toBe("unpriced_models");
    expect(rig.up.requests).toHaveLength(0);
    const free = await session({});
    const ok = await openai(free).chat.completions.create({ model: "gpt-99-experimental", messages: [{ role: "user", content: "x" }] });
    expect(ok.choices).toHaveLength(1);
  });
});

describe("declared prices", () => {
  const model = "gpt-99-experimental";
  const events = async (id: string) =>
    (await op(`/v1/sessions/${id}/log`)).text
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l))
      .filter((e) => e.type);

  it("a model the table does not know is refused under a budget, naming the pricing field; declared, it is reserved and settled at that price", async () => {
    const unpriced = await session();
    const e = await openai(unpriced).chat.completions.create({ model, messages: [{ role: "user", content: "x" }] }).catch((e) => e);
    expect(e).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect(e.error.rule).toBe("unpriced_models");
    expect(e.message).toContain(`declare its price in the policy under pricing ("openai/${model}": { input, output } in USD per 1M tokens)`);
    expect(rig.up.requests).toHaveLength(0);

    const price = { input: 2, output: 8, cached_input: 0.5, cache_write: 2 };
    const id = await session({ budget: { session_usd: 1 }, pricing: { [`openai/${model}`]: price } });
    rig.up.next({ cachedTokens: 4 });
    const { data, response } = await openai(id).chat.completions.create({ model, messages: [{ role: "user", content: "priced by the policy" }], max_tokens: 50 }).withResponse();
    const u = openaiUsage(data.usage!);
    const first = (u.inputTokens * price.input + u.cachedInputTokens * price.cached_input + u.outputTokens * price.output) / 1e6;
    expect(first).toBeGreaterThan(0);
    expect((await whenSettled(id)).spentUsd).toBeCloseTo(first, 12);
    expect(Number(response.headers.get("x-governor-spent-usd"))).toBeCloseTo(first, 9);

    // A stream: the settle is the actor's, from the provider's usage, at the same price.
    const stream = await openai(id).chat.completions.create({ model, messages: [{ role: "user", content: "and streamed" }], max_tokens: 50, stream: true });
    let usage: any;
    for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
    const v = openaiUsage(usage);
    const second = (v.inputTokens * price.input + v.cachedInputTokens * price.cached_input + v.outputTokens * price.output) / 1e6;
    expect((await whenSettled(id)).spentUsd).toBeCloseTo(first + second, 12);

    const log = await events(id);
    const reserved = log.filter((e) => e.type === "request.reserved");
    expect(reserved).toHaveLength(2);
    for (const r of reserved) {
      expect(r.data.rates).toMatchObject({ source: "policy", key: `openai/${model}`, input: 2, output: 8, cachedInput: 0.5 });
      expect(r.data).toMatchObject({ inputPrice: 2, outputPrice: 8, maxOutputTokens: 50 });
      expect(r.data.estimateUsd).toBeCloseTo((r.data.promptTokens * 2 + 50 * 8) / 1e6, 12);
    }
    const settled = log.filter((e) => e.type === "request.settled").map((e) => e.data.costUsd);
    expect(settled[0]).toBeCloseTo(first, 12);
    expect(settled[1]).toBeCloseTo(second, 12);
  });

  it("a declared price takes precedence over the table, for Anthropic streams too", async () => {
    const price = { input: 1, output: 2, cached_input: 0.1, cache_write: 1.25 };
    const id = await session({ budget: { session_usd: 1 }, pricing: { "anthropic/claude-sonnet-4-6": price } });
    const stream = anthropic(id).messages.stream({ model: "claude-sonnet-4-6", max_tokens: 64, messages: [{ role: "user", content: "discounted" }] });
    const final = await stream.finalMessage();
    const u = final.usage;
    const cost = ((u.input_tokens ?? 0) * price.input + (u.cache_read_input_tokens ?? 0) * price.cached_input + (u.cache_creation_input_tokens ?? 0) * price.cache_write + u.output_tokens * price.output) / 1e6;
    expect(cost).toBeGreaterThan(0);
    // The table's $3 / $15 would charge more than three times as much.
    expect((await whenSettled(id)).spentUsd).toBeCloseTo(cost, 12);
  });
});

describe("abuse", () => {
  const post = (id: string, path: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${rig.gov.url}/v1/proxy/openai/${path}`, { method: "POST", headers: { authorization: `Bearer ${TOKENS.agent}`, "x-session-id": id, ...headers }, body: JSON.stringify(body) });

  it("a provider path cannot walk elsewhere, and deep nesting is a 400", async () => {
    const id = await session();
    const walk = await post(id, "v1%2F..%2F..%2Fadmin%3Fx=1", { model: "gpt-4o" });
    expect(walk.status).toBe(400);
    expect(((await walk.json()) as any).error.param).toBe("path");
    let deep: unknown = "x";
    for (let i = 0; i < 1000; i++) deep = [deep];
    const nested = await post(id, "v1/chat/completions", { model: "gpt-4o", messages: deep });
    expect(nested.status).toBe(400);
    expect(rig.up.requests).toHaveLength(0);
  });

  it("a replayed Idempotency-Key does not send a second, unpaid call", async () => {
    const id = await session();
    const body = { model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], max_tokens: 5 };
    expect((await post(id, "v1/chat/completions", body, { "idempotency-key": "call-1" })).status).toBe(200);
    const again = await post(id, "v1/chat/completions", body, { "idempotency-key": "call-1" });
    expect(again.status).toBe(409);
    expect(rig.up.requests).toHaveLength(1);
    // A reported cost with the call's id is a bill of its own, not the call's settle.
    await fetch(`${rig.gov.url}/v1/sessions/${id}/events`, { method: "POST", headers: { authorization: `Bearer ${TOKENS.agent}` }, body: JSON.stringify({ id: "call-1", type: "cost", usd: 0.5 }) });
    const s = await whenSettled(id);
    expect(s.spentUsd).toBeGreaterThan(0.5);
  });

  it("reserves n choices, and sends the reserved cap when the call named none", async () => {
    const id = await session({ budget: { session_usd: 10, default_max_tokens: 300 } });
    await openai(id).chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "x" }], n: 4, max_tokens: 100 });
    await openai(id).chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "y" }] });
    expect(rig.up.requests[1].body.max_tokens).toBe(300);
    const log = (await op(`/v1/sessions/${id}/log`)).text.trim().split("\n").map((l) => JSON.parse(l));
    const reserved = log.filter((e) => e.type === "request.reserved");
    expect(reserved[0].data.maxOutputTokens).toBe(400);
    expect(reserved[1].data.maxOutputTokens).toBe(300);
  });
});

describe("failures and aborts", () => {
  it("an upstream 500 answers 502 and releases the reservation", async () => {
    const id = await session();
    rig.up.next({ status: 500 });
    const e = await openai(id).chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "x" }] }).catch((e) => e);
    expect(e.status).toBe(502);
    expect(e.code).toBe("upstream_error");
    const s = await summary(id);
    expect(s).toMatchObject({ spentUsd: 0, reservedUsd: 0, reservations: [] });
  });

  it("an upstream timeout answers 502 and releases the reservation", async () => {
    const id = await session();
    rig.up.next({ hang: true });
    const e = await anthropic(id).messages.create({ model: "claude-haiku-4-5", max_tokens: 10, messages: [{ role: "user", content: "x" }] }).catch((e) => e);
    expect(e.status).toBe(502);
    expect(e.error.error.type).toBe("upstream_error");
    expect(await summary(id)).toMatchObject({ spentUsd: 0, reservedUsd: 0 });
  });

  // A reservation whose settle never comes (the gateway died with the call) is charged at its
  // estimate by the alarm: test/integration/money.test.ts restarts the server to show it.

  it("a stream the client cuts is aborted upstream and settled with what was produced", async () => {
    const id = await session();
    rig.up.next({ chunkDelayMs: 150, chunks: 40 });
    // A client that goes away closes its connection (undici would quietly drain a small
    // body to reuse the socket, so the cut is made on the socket itself).
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest(`${rig.gov.url}/v1/proxy/openai/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKENS.agent}`, "x-session-id": id, "content-type": "application/json" },
      });
      req.on("response", (res) => {
        let events = 0;
        res.on("data", (d: Buffer) => {
          events += String(d).split("data: ").length - 1;
          if (events >= 3) {
            req.destroy();
            resolve();
          }
        });
      });
      req.on("error", (e) => (e.message.includes("aborted") || e.message.includes("socket hang up") ? resolve() : reject(e)));
      req.end(JSON.stringify({ model: "gpt-4o", messages: [{ role: "user", content: "long story" }], stream: true }));
    });
    // Settled by the gateway's cancel handler, or, when the runtime dropped the request with
    // the client, by the actor once the stream's heartbeats stop.
    const s = await whenSettled(id, 20_000);
    expect(s.spentUsd).toBeGreaterThan(0);
    // Far less than the full answer's worth of output was charged.
    expect(s.spentUsd).toBeLessThan(expected("openai", "gpt-4o", { inputTokens: 20, outputTokens: 80, cachedInputTokens: 0, cacheWriteTokens: 0 }));
    for (let i = 0; i < 50 && !rig.up.requests[0].aborted; i++) await new Promise((r) => setTimeout(r, 50));
    expect(rig.up.requests[0].aborted).toBe(true);
    const log = (await op(`/v1/sessions/${id}/log`)).text;
    expect(log).toContain('"outcome":"aborted"');
  });
});

describe("runaway detection", () => {
  const grow = (k: number) => "context ".repeat(50 * 2 ** k);

  it("fires on a growing loop: alert, and with on_detect: kill the next call is refused", async () => {
    const id = await session({ budget: { session_usd: 50 }, runaway: { on_detect: "kill" } });
    const c = openai(id);
    for (let k = 0; k < 3; k++) await c.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: grow(k) }], max_tokens: 5 });
    const e = await c.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: grow(3) }], max_tokens: 5 }).catch((e) => e);
    expect(e.status).toBe(403);
    expect(e.code).toBe("session_killed");
    const s = await summary(id);
    expect(s.state).toBe("killed");
    expect(s.counters.anomalies).toBe(1);
    expect(rig.up.requests).toHaveLength(3);

    const alertOnly = await session({ budget: { session_usd: 50 } });
    const c2 = openai(alertOnly);
    for (let k = 0; k < 4; k++) await c2.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: grow(k) }], max_tokens: 5 });
    expect((await summary(alertOnly)).state).toBe("alerting");
  });

  it("does not fire on a steady loop", async () => {
    const id = await session({ budget: { session_usd: 50 }, runaway: { on_detect: "kill" } });
    const c = openai(id);
    for (let k = 0; k < 8; k++) await c.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: grow(2) }], max_tokens: 5 });
    const s = await summary(id);
    expect(s.state).toBe("active");
    expect(s.counters.anomalies).toBe(0);
  });
});
