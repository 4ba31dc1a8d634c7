import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";
import { countPromptTokens, replyPieces, startUpstream, type Upstream } from "../support/upstream.js";

let up: Upstream;
let openai: OpenAI;
let anthropic: Anthropic;

beforeAll(async () => {
  up = await startUpstream();
  openai = new OpenAI({ apiKey: "sk-test", baseURL: up.url + "/v1", maxRetries: 0 });
  anthropic = new Anthropic({ apiKey: "sk-ant-test", baseURL: up.url, maxRetries: 0 });
});

afterAll(async () => {
  await up.close();
});

beforeEach(() => up.reset());

async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}

const messages = [
  { role: "system" as const, content: "You are terse." },
  { role: "user" as const, content: "Say hello." },
];

describe("upstream stand-in", () => {
  it("exposes a loopback url without trailing slash", () => {
    expect(up.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  });

  it("chat completions, non-streaming", async () => {
    const r = await openai.chat.completions.create({ model: "gpt-4o-mini", messages });
    expect(r.object).toBe("chat.completion");
    expect(r.id).toMatch(/^chatcmpl-/);
    expect(r.model).toBe("gpt-4o-mini");
    expect(r.choices[0].message.role).toBe("assistant");
    expect(r.choices[0].message.content).toBe(replyPieces(5).join(""));
    expect(r.choices[0].finish_reason).toBe("stop");
    const expected = countPromptTokens("chat", { model: "gpt-4o-mini", messages });
    expect(r.usage).toMatchObject({
      prompt_tokens: expected,
      completion_tokens: 10,
      total_tokens: expected + 10,
      prompt_tokens_details: { cached_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0 },
    });

    const rec = up.requests[0];
    expect(rec.method).toBe("POST");
    expect(rec.path).toBe("/v1/chat/completions");
    expect(rec.headers.authorization).toBe("Bearer sk-test");
    expect(rec.body.messages).toEqual(messages);
    expect(rec.aborted).toBe(false);
  });

  it("prompt token count is deterministic and grows with the prompt", () => {
    const a = countPromptTokens("chat", { messages });
    expect(countPromptTokens("chat", { messages })).toBe(a);
    expect(countPromptTokens("chat", { messages: [...messages, { role: "user", content: "more words here" }] })).toBeGreaterThan(a);
  });

  it("chat honours overrides and max tokens cap", async () => {
    up.next({ promptTokens: 1000, completionTokens: 42, cachedTokens: 600 });
    const a = await openai.chat.completions.create({ model: "gpt-4o", messages });
    expect(a.usage).toMatchObject({
      prompt_tokens: 1000,
      completion_tokens: 42,
      total_tokens: 1042,
      prompt_tokens_details: { cached_tokens: 600 },
    });

    const b = await openai.chat.completions.create({ model: "gpt-4o", messages, max_completion_tokens: 3 });
    expect(b.usage?.completion_tokens).toBe(3);
    expect(b.choices[0].finish_reason).toBe("length");

    up.next({ omitUsage: true });
    const c = await openai.chat.completions.create({ model: "gpt-4o", messages });
    expect(c.usage).toBeUndefined();
  });

  it("chat completions, streaming with include_usage", async () => {
    up.next({ chunks: 3 });
    const stream = await openai.chat.completions.create({
      model: "gpt-4o-mini",
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage: OpenAI.CompletionUsage | null | undefined;
    let finish: string | null = null;
    for await (const chunk of stream) {
      expect(chunk.object).toBe("chat.completion.chunk");
      if (chunk.choices[0]?.delta?.content) text += chunk.choices[0].delta.content;
      if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(replyPieces(3).join(""));
    expect(finish).toBe("stop");
    expect(usage?.completion_tokens).toBe(6);
    expect(usage?.prompt_tokens).toBe(countPromptTokens("chat", { messages }));
  });

  it("chat streaming without include_usage sends no usage chunk", async () => {
    const res = await fetch(up.url + "/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "gpt-4o-mini", messages, stream: true }),
    });
    expect(res.headers.get("content-type")).toMatch(/text\/event-stream/);
    const raw = await res.text();
    expect(raw).not.toContain('"usage"');
    expect(raw.trimEnd().endsWith("data: [DONE]")).toBe(true);
    expect(up.requests[0].path).toBe("/chat/completions");
  });

  it("chat.completions.stream helper reaches a final completion", async () => {
    const runner = openai.chat.completions.stream({
      model: "gpt-4o-mini",
      messages,
      stream_options: { include_usage: true },
    });
    const final = await runner.finalChatCompletion();
    expect(final.choices[0].message.content).toBe(replyPieces(5).join(""));
    expect(final.usage?.completion_tokens).toBe(10);
  });

  it("responses, non-streaming", async () => {
    const r = await openai.responses.create({ model: "gpt-4.1-mini", input: "Say hello.", instructions: "Be terse." });
    expect(r.object).toBe("response");
    expect(r.status).toBe("completed");
    expect(r.output_text).toBe(replyPieces(5).join(""));
    const expected = countPromptTokens("responses", { input: "Say hello.", instructions: "Be terse." });
    expect(r.usage).toMatchObject({
      input_tokens: expected,
      output_tokens: 10,
      total_tokens: expected + 10,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens_details: { reasoning_tokens: 0 },
    });
    expect(up.requests[0].path).toBe("/v1/responses");
  });

  it("responses, streaming via responses.stream", async () => {
    up.next({ chunks: 4, cachedTokens: 2 });
    const stream = openai.responses.stream({ model: "gpt-4.1-mini", input: [{ role: "user", content: "Say hello." }] });
    const deltas: string[] = [];
    stream.on("response.output_text.delta", (e) => deltas.push(e.delta));
    const final = await stream.finalResponse();
    expect(deltas).toEqual(replyPieces(4));
    expect(final.output_text).toBe(replyPieces(4).join(""));
    expect(final.usage?.output_tokens).toBe(8);
    expect(final.usage?.input_tokens_details.cached_tokens).toBe(2);
  });

  it("responses, streaming via create({stream:true}) has monotonic sequence numbers", async () => {
    const stream = await openai.responses.create({ model: "gpt-4.1-mini", input: "hi", stream: true });
    const types: string[] = [];
    const seqs: number[] = [];
    let usage: OpenAI.Responses.ResponseUsage | undefined;
    for await (const ev of stream) {
      types.push(ev.type);
      seqs.push(ev.sequence_number);
      if (ev.type === "response.completed") usage = ev.response.usage;
    }
    expect(types[0]).toBe("response.created");
    expect(types).toContain("response.output_text.delta");
    expect(types).toContain("response.output_text.done");
    expect(types.at(-1)).toBe("response.completed");
    expect(seqs).toEqual(seqs.map((_, i) => i));
    expect(usage?.output_tokens).toBe(10);
  });

  it("embeddings, base64 default and float", async () => {
    const a = await openai.embeddings.create({ model: "text-embedding-3-small", input: ["alpha", "beta"] });
    expect(a.data).toHaveLength(2);
    expect(a.data[0].embedding.length).toBe(8);
    expect(a.usage.prompt_tokens).toBe(countPromptTokens("embeddings", { input: ["alpha", "beta"] }));
    expect(a.usage.total_tokens).toBe(a.usage.prompt_tokens);

    const b = await openai.embeddings.create({ model: "text-embedding-3-small", input: "alpha", encoding_format: "float" });
    expect(b.data[0].embedding).toEqual(Array.from(a.data[0].embedding));
  });

  it("anthropic messages, non-streaming", async () => {
    up.next({ cachedTokens: 7 });
    const m = await anthropic.messages.create({
      model: "claude-sonnet-4-6",
      max_tokens: 100,
      system: "Be terse.",
      messages: [{ role: "user", content: "Say hello." }],
    });
    expect(m.id).toMatch(/^msg_/);
    expect(m.type).toBe("message");
    expect(m.model).toBe("claude-sonnet-4-6");
    expect(m.content[0]).toMatchObject({ type: "text", text: replyPieces(5).join("") });
    expect(m.stop_reason).toBe("end_turn");
    expect(m.usage).toMatchObject({
      input_tokens: countPromptTokens("messages", { system: "Be terse.", messages: [{ role: "user", content: "Say hello." }] }),
      output_tokens: 10,
      cache_read_input_tokens: 7,
      cache_creation_input_tokens: 0,
    });
    const rec = up.requests[0];
    expect(rec.path).toBe("/v1/messages");
    // @anthropic-ai/sdk 1.x sends the API key as a bearer token, not x-api-key.
    expect(rec.headers.authorization ?? rec.headers["x-api-key"]).toMatch(/sk-ant-test$/);
    expect(rec.headers["anthropic-version"]).toBeTruthy();
  });

  it("anthropic messages, max_tokens cap", async () => {
    const m = await anthropic.messages.create({
      model: "claude-haiku-4-5",
      max_tokens: 4,
      messages: [{ role: "user", content: "Say hello." }],
    });
    expect(m.stop_reason).toBe("max_tokens");
    expect(m.usage.output_tokens).toBe(4);
  });

  it("anthropic messages, streaming finalMessage carries usage", async () => {
    up.next({ chunks: 6, chunkDelayMs: 2 });
    const stream = anthropic.messages.stream({
      model: "claude-sonnet-4-6",
      max_tokens: 100,
      messages: [{ role: "user", content: "Say hello." }],
    });
    const deltas: string[] = [];
    stream.on("text", (t) => deltas.push(t));
    const m = await stream.finalMessage();
    expect(deltas).toEqual(replyPieces(6));
    expect(m.content[0]).toMatchObject({ type: "text", text: replyPieces(6).join("") });
    expect(m.stop_reason).toBe("end_turn");
    expect(m.usage.output_tokens).toBe(12);
    expect(m.usage.input_tokens).toBe(countPromptTokens("messages", { messages: [{ role: "user", content: "Say hello." }] }));
  });

  it("500 surfaces as the OpenAI SDK's APIError", async () => {
    up.next({ status: 500 });
    const err = await openai.chat.completions.create({ model: "gpt-4o-mini", messages }).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect(err.status).toBe(500);
    expect(err.error).toMatchObject({ type: "server_error", param: null });
  });

  it("error bodies are Anthropic-shaped on /v1/messages", async () => {
    up.next({ status: 429 });
    const err = await anthropic.messages
      .create({ model: "claude-sonnet-4-6", max_tokens: 10, messages: [{ role: "user", content: "x" }] })
      .catch((e) => e);
    expect(err).toBeInstanceOf(Anthropic.APIError);
    expect(err.status).toBe(429);
    expect(err.error).toEqual({ type: "error", error: { type: "rate_limit_error", message: expect.any(String) } });
  });

  it("queue applies to the next N requests, then the default", async () => {
    up.setDefault({ chunks: 1 });
    up.next({ chunks: 2 }, 2);
    const lens: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await openai.chat.completions.create({ model: "gpt-4o-mini", messages });
      lens.push(r.usage!.completion_tokens);
    }
    expect(lens).toEqual([4, 4, 2]);
  });

  it("delayMs holds the response back", async () => {
    up.next({ delayMs: 80 });
    const t0 = Date.now();
    await openai.chat.completions.create({ model: "gpt-4o-mini", messages });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(70);
  });

  it("hang + client abort marks the record aborted", async () => {
    up.next({ hang: true });
    const ac = new AbortController();
    const p = openai.chat.completions.create({ model: "gpt-4o-mini", messages }, { signal: ac.signal }).catch((e) => e);
    await until(() => up.requests.length === 1);
    expect(up.requests[0].aborted).toBe(false);
    ac.abort();
    const err = await p;
    expect(err).toBeInstanceOf(OpenAI.APIUserAbortError);
    await until(() => up.requests[0].aborted);
  });

  it("mid-stream disconnect marks the record aborted", async () => {
    up.next({ chunks: 50, chunkDelayMs: 20 });
    const ac = new AbortController();
    const res = await fetch(up.url + "/v1/messages", {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": "k" },
      body: JSON.stringify({ model: "claude-sonnet-4-6", max_tokens: 1000, stream: true, messages: [{ role: "user", content: "hi" }] }),
      signal: ac.signal,
    });
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toContain("event: message_start");
    ac.abort();
    await until(() => up.requests[0].aborted);
  });

  it("close() does not wait for hanging requests", async () => {
    const other = await startUpstream();
    other.next({ hang: true });
    const p = fetch(other.url + "/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "m", messages: [] }),
    }).catch((e) => e);
    await until(() => other.requests.length === 1);
    await other.close();
    expect(await p).toBeInstanceOf(Error);
  });
});
