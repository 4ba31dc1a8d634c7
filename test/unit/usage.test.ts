import { describe, expect, it } from "vitest";
import { StreamUsageTracker, usageFromJson, withStreamUsage } from "../../party/proxy/usage";
import { countTextTokens } from "../../party/proxy/tokens";
import type { Provider } from "../../schema/pricing";

const sse = (events: Array<[string | null, unknown]>, eol = "\n") =>
  events
    .map(([event, data]) => (event ? `event: ${event}${eol}` : "") + `data: ${typeof data === "string" ? data : JSON.stringify(data)}${eol}${eol}`)
    .join("");

const chatStream = sse([
  [null, { id: "c", object: "chat.completion.chunk", choices: [{ index: 0, delta: { role: "assistant", content: "" } }], usage: null }],
  [null, { id: "c", choices: [{ index: 0, delta: { content: "Héllo" } }], usage: null }],
  [null, { id: "c", choices: [{ index: 0, delta: { content: " wörld 👋" } }], usage: null }],
  [null, { id: "c", choices: [{ index: 0, delta: { tool_calls: [{ index: 0, id: "t", type: "function", function: { name: "f", arguments: '{"a":' } }] } }], usage: null }],
  [null, { id: "c", choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: "1}" } }] } }], usage: null }],
  [null, { id: "c", choices: [{ index: 0, delta: {}, finish_reason: "stop" }], usage: null }],
  [null, { id: "c", choices: [], usage: { prompt_tokens: 20, completion_tokens: 7, total_tokens: 27, prompt_tokens_details: { cached_tokens: 8 } } }],
  [null, "[DONE]"],
]);

const responsesStream =
  ": keep-alive\n\n" +
  sse([
    ["response.created", { type: "response.created", response: { id: "r", status: "in_progress", usage: null } }],
    ["response.output_text.delta", { type: "response.output_text.delta", item_id: "m", output_index: 0, content_index: 0, delta: "Hi" }],
    ["response.output_text.delta", { type: "response.output_text.delta", item_id: "m", output_index: 0, content_index: 0, delta: " thére ✓" }],
    ["response.output_text.done", { type: "response.output_text.done", item_id: "m", text: "Hi thére ✓" }],
    [
      "response.completed",
      {
        type: "response.completed",
        response: {
          id: "r",
          status: "completed",
          output: [{ type: "message", content: [{ type: "output_text", text: "Hi thére ✓" }] }],
          usage: { input_tokens: 30, input_tokens_details: { cached_tokens: 10 }, output_tokens: 5, output_tokens_details: { reasoning_tokens: 2 }, total_tokens: 35 },
        },
      },
    ],
  ]);

const anthropicEvents: Array<[string, unknown]> = [
  [
    "message_start",
    {
      type: "message_start",
      message: {
        id: "m",
        type: "message",
        role: "assistant",
        content: [],
        model: "claude-sonnet-4-5-20250929",
        usage: { input_tokens: 25, cache_creation_input_tokens: 100, cache_read_input_tokens: 50, output_tokens: 1 },
      },
    },
  ],
  ["content_block_start", { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }],
  ["ping", { type: "ping" }],
  ["content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Bonjour" } }],
  ["content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: " à tous 🎉" } }],
  ["content_block_stop", { type: "content_block_stop", index: 0 }],
  ["content_block_delta", { type: "content_block_delta", index: 1, delta: { type: "input_json_delta", partial_json: '{"q":1}' } }],
  ["message_delta", { type: "message_delta", delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { output_tokens: 15 } }],
  ["message_stop", { type: "message_stop" }],
];
const anthropicStream = sse(anthropicEvents);

type Case = { name: string; provider: Provider; path: string; model: string; stream: string; usage: object; text: string };
const cases: Case[] = [
  {
    name: "openai chat",
    provider: "openai",
    path: "v1/chat/completions",
    model: "gpt-4o",
    stream: chatStream,
    usage: { inputTokens: 12, cachedInputTokens: 8, outputTokens: 7, cacheWriteTokens: 0 },
    text: 'Héllo wörld 👋{"a":1}',
  },
  {
    name: "openai responses",
    provider: "openai",
    path: "v1/responses",
    model: "gpt-5",
    stream: responsesStream,
    usage: { inputTokens: 20, cachedInputTokens: 10, outputTokens: 5, cacheWriteTokens: 0 },
    text: "Hi thére ✓",
  },
  {
    name: "anthropic messages",
    provider: "anthropic",
    path: "v1/messages",
    model: "claude-sonnet-4-5",
    stream: anthropicStream,
    usage: { inputTokens: 25, cachedInputTokens: 50, cacheWriteTokens: 100, outputTokens: 15 },
    text: 'Bonjour à tous 🎉{"q":1}',
  },
];

const enc = new TextEncoder();
function run(c: Case, chunks: Array<Uint8Array | string>) {
  const t = new StreamUsageTracker(c.provider, c.path, c.model);
  for (const chunk of chunks) t.push(chunk);
  return t.finish();
}

describe("StreamUsageTracker", () => {
  for (const c of cases) {
    for (const [eolName, eol] of [
      ["LF", "\n"],
      ["CRLF", "\r\n"],
      ["CR", "\r"],
    ] as const) {
      const bytes = enc.encode(c.stream.replace(/\n/g, eol));

      it(`${c.name} (${eolName}) split at every byte boundary`, () => {
        for (let i = 0; i <= bytes.length; i++) {
          const r = run(c, [bytes.subarray(0, i), bytes.subarray(i)]);
          expect(r.usage, `split at ${i}`).toEqual(c.usage);
          expect(r.outputText, `split at ${i}`).toBe(c.text);
        }
      });

      it(`${c.name} (${eolName}) one byte at a time`, () => {
        const r = run(c, Array.from(bytes, (_, i) => bytes.subarray(i, i + 1)));
        expect(r).toEqual({ usage: c.usage, outputText: c.text });
      });
    }

    it(`${c.name} as string chunks`, () => {
      const s = c.stream;
      const r = run(c, [s.slice(0, 7), s.slice(7, 100), s.slice(100)]);
      expect(r).toEqual({ usage: c.usage, outputText: c.text });
    });
  }

  it("openai chat without include_usage: no usage, text kept for counting", () => {
    const stream = chatStream.slice(0, chatStream.indexOf('data: {"id":"c","choices":[],'));
    const r = run(cases[0], [stream]);
    expect(r.usage).toBeUndefined();
    expect(r.outputText).toBe('Héllo wörld 👋{"a":1}');
  });

  it("responses stream cut before response.completed has no usage", () => {
    const r = run(cases[1], [responsesStream.slice(0, responsesStream.indexOf("event: response.completed"))]);
    expect(r).toEqual({ outputText: "Hi thére ✓" });
  });

  it("responses stream ending in response.incomplete still yields usage", () => {
    const stream = responsesStream.replace(/response\.completed/g, "response.incomplete");
    expect(run(cases[1], [stream]).usage).toEqual(cases[1].usage);
  });

  it("anthropic stream cut mid-way keeps exact input usage and counts output text", () => {
    const stream = sse(anthropicEvents.slice(0, 4));
    const r = run(cases[2], [stream.slice(0, -1)]); // last event lacks its blank line
    expect(r.outputText).toBe("Bonjour");
    expect(r.usage).toEqual({
      inputTokens: 25,
      cachedInputTokens: 50,
      cacheWriteTokens: 100,
      outputTokens: Math.max(1, countTextTokens("anthropic", "claude-sonnet-4-5", "Bonjour")),
    });
  });

  it("anthropic message_delta restating input counts wins", () => {
    const events = anthropicEvents.map(([e, d]): [string, unknown] =>
      e === "message_delta" ? [e, { type: e, delta: {}, usage: { input_tokens: 30, cache_read_input_tokens: 60, output_tokens: 16 } }] : [e, d],
    );
    expect(run(cases[2], [sse(events)]).usage).toEqual({ inputTokens: 30, cachedInputTokens: 60, cacheWriteTokens: 100, outputTokens: 16 });
  });

  it("ignores garbage, comments and truncated JSON", () => {
    const r = run(cases[0], [": hi\n\ndata: {not json\n\nretry: 100\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\ndata: {\"usa"]);
    expect(r).toEqual({ outputText: "ok" });
  });

  it("joins multi-line data fields", () => {
    const r = run(cases[0], ['data: {"choices":[{"delta":\ndata: {"content":"x"}}]}\n\n']);
    expect(r.outputText).toBe("x");
  });
});

describe("usageFromJson", () => {
  it("openai chat completions: cached tokens split out of prompt_tokens", () => {
    const json = { usage: { prompt_tokens: 100, completion_tokens: 20, total_tokens: 120, prompt_tokens_details: { cached_tokens: 64 } } };
    expect(usageFromJson("openai", "v1/chat/completions", json)).toEqual({ inputTokens: 36, cachedInputTokens: 64, outputTokens: 20, cacheWriteTokens: 0 });
    const plain = { usage: { prompt_tokens: 10, completion_tokens: 2 } };
    expect(usageFromJson("openai", "chat/completions", plain)).toEqual({ inputTokens: 10, cachedInputTokens: 0, outputTokens: 2, cacheWriteTokens: 0 });
  });

  it("openai responses", () => {
    const json = { object: "response", usage: { input_tokens: 50, input_tokens_details: { cached_tokens: 20 }, output_tokens: 9, total_tokens: 59 } };
    expect(usageFromJson("openai", "v1/responses", json)).toEqual({ inputTokens: 30, cachedInputTokens: 20, outputTokens: 9, cacheWriteTokens: 0 });
  });

  it("openai cache writes (GPT-5.6 on) are split out of the prompt like cached tokens", () => {
    const chat = { usage: { prompt_tokens: 100, completion_tokens: 5, prompt_tokens_details: { cached_tokens: 30, cache_write_tokens: 50 } } };
    expect(usageFromJson("openai", "v1/chat/completions", chat)).toEqual({ inputTokens: 20, cachedInputTokens: 30, outputTokens: 5, cacheWriteTokens: 50 });
    const resp = { object: "response", usage: { input_tokens: 40, input_tokens_details: { cached_tokens: 0, cache_write_tokens: 40 }, output_tokens: 1 } };
    expect(usageFromJson("openai", "v1/responses", resp)).toEqual({ inputTokens: 0, cachedInputTokens: 0, outputTokens: 1, cacheWriteTokens: 40 });
    // A breakdown larger than the total never makes a bucket negative.
    const odd = { usage: { prompt_tokens: 10, completion_tokens: 0, prompt_tokens_details: { cached_tokens: 8, cache_write_tokens: 9 } } };
    expect(usageFromJson("openai", "v1/chat/completions", odd)).toEqual({ inputTokens: 0, cachedInputTokens: 8, outputTokens: 0, cacheWriteTokens: 2 });
  });

  it("openai embeddings", () => {
    const json = { object: "list", data: [], usage: { prompt_tokens: 8, total_tokens: 8 } };
    expect(usageFromJson("openai", "v1/embeddings", json)).toEqual({ inputTokens: 8, cachedInputTokens: 0, outputTokens: 0, cacheWriteTokens: 0 });
  });

  it("anthropic messages: input_tokens already excludes cache reads and writes", () => {
    const json = { type: "message", usage: { input_tokens: 5, output_tokens: 40, cache_read_input_tokens: 1000, cache_creation_input_tokens: 200 } };
    expect(usageFromJson("anthropic", "v1/messages", json)).toEqual({ inputTokens: 5, cachedInputTokens: 1000, cacheWriteTokens: 200, outputTokens: 40 });
    expect(usageFromJson("anthropic", "v1/messages", { usage: { input_tokens: 5, output_tokens: 1, cache_read_input_tokens: null } })).toEqual({
      inputTokens: 5,
      cachedInputTokens: 0,
      cacheWriteTokens: 0,
      outputTokens: 1,
    });
  });

  it("undefined when there is no usage", () => {
    expect(usageFromJson("openai", "v1/chat/completions", { error: { message: "x" } })).toBeUndefined();
    expect(usageFromJson("anthropic", "v1/messages", { type: "error", error: {} })).toBeUndefined();
    expect(usageFromJson("openai", "v1/chat/completions", null)).toBeUndefined();
    expect(usageFromJson("openai", "v1/chat/completions", [1])).toBeUndefined();
  });
});

describe("withStreamUsage", () => {
  const path = "v1/chat/completions";
  it("asks for usage on streamed chat completions without mutating the input", () => {
    const body = { model: "gpt-4o", stream: true, messages: [] };
    const out = withStreamUsage("openai", path, body);
    expect(out).toEqual({ ...body, stream_options: { include_usage: true } });
    expect(body).not.toHaveProperty("stream_options");
  });

  it("keeps other stream_options", () => {
    const body = { model: "gpt-4o", stream: true, stream_options: { include_obfuscation: false } };
    expect(withStreamUsage("openai", "/v1/chat/completions", body).stream_options).toEqual({ include_obfuscation: false, include_usage: true });
  });

  it("asks for usage even when the client said false (its stream is filtered instead: hide-usage.ts)", () => {
    const body = { stream: true, stream_options: { include_usage: false } };
    expect(withStreamUsage("openai", path, body).stream_options).toEqual({ include_usage: true });
  });

  it("leaves usage already asked for, non-streams and other endpoints alone", () => {
    for (const [provider, p, body] of [
      ["openai", path, { stream: true, stream_options: { include_usage: true } }],
      ["openai", path, { stream: false }],
      ["openai", path, {}],
      ["openai", "v1/responses", { stream: true }],
      ["openai", "v1/embeddings", { stream: true }],
      ["anthropic", "v1/messages", { stream: true }],
    ] as const) {
      expect(withStreamUsage(provider, p, body)).toBe(body);
    }
  });
});
