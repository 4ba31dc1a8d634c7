import { describe, expect, it } from "vitest";
import { llmErrorOf, toolCallsOf, withoutRequestIds } from "../../party/proxy/tool-calls";

// Which tool calls a proxied request shows: those of its newest assistant turn.

describe("tool calls in a request's history", () => {
  it("OpenAI chat: the newest assistant turn's calls, by id; arguments spaced differently are the same call", () => {
    const body = {
      messages: [
        { role: "user", content: "find it" },
        { role: "assistant", tool_calls: [{ id: "call_old", type: "function", function: { name: "search", arguments: '{"q":"a"}' } }] },
        { role: "tool", tool_call_id: "call_old", content: "nothing" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            { id: "call_1", type: "function", function: { name: "search", arguments: '{"q": "a", "page": 2}' } },
            { id: "call_2", type: "function", function: { name: "fetch", arguments: "not json" } },
          ],
        },
        { role: "tool", tool_call_id: "call_1", content: "nothing" },
      ],
    };
    const calls = toolCallsOf("openai", "v1/chat/completions", body);
    expect(calls.map((c) => [c.key, c.name])).toEqual([["call_1", "search"], ["call_2", "fetch"]]);
    const again = toolCallsOf("openai", "v1/chat/completions", { messages: [{ role: "assistant", tool_calls: [{ id: "x", function: { name: "search", arguments: '{"page":2,"q":"a"}' } }] }] });
    expect(again[0].argsHash).toBe(calls[0].argsHash);
    expect(toolCallsOf("openai", "v1/chat/completions", { messages: [{ role: "user", content: "hi" }] })).toEqual([]);
  });

  it("a call without an id is known by its place in the history", () => {
    const calls = toolCallsOf("openai", "v1/chat/completions", { messages: [{ role: "user", content: "x" }, { role: "assistant", function_call: { name: "legacy", arguments: "{}" } }] });
    expect(calls).toEqual([expect.objectContaining({ name: "legacy", key: "#1.0" })]);
  });

  it("OpenAI responses: the function calls after the last other item", () => {
    const input = [
      { role: "user", content: "go" },
      { type: "function_call", call_id: "c0", name: "old", arguments: "{}" },
      { type: "function_call_output", call_id: "c0", output: "x" },
      { type: "reasoning", id: "rs_1", summary: [] },
      { type: "function_call", call_id: "c1", name: "search", arguments: '{"q":"b"}' },
      { type: "function_call", call_id: "c2", name: "open", arguments: "{}" },
      { type: "function_call_output", call_id: "c1", output: "y" },
      { type: "function_call_output", call_id: "c2", output: "z" },
    ];
    expect(toolCallsOf("openai", "v1/responses", { input }).map((c) => c.key)).toEqual(["c1", "c2"]);
    expect(toolCallsOf("openai", "v1/responses", { input: "just text" })).toEqual([]);
  });

  it("Anthropic: tool_use blocks of the newest assistant message", () => {
    const body = {
      messages: [
        { role: "user", content: "go" },
        { role: "assistant", content: [{ type: "text", text: "let me look" }, { type: "tool_use", id: "toolu_1", name: "search", input: { q: "c" } }] },
        { role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_1", content: "r" }] },
      ],
    };
    expect(toolCallsOf("anthropic", "v1/messages", body)).toEqual([expect.objectContaining({ key: "toolu_1", name: "search" })]);
  });
});

describe("failed calls as error facts", () => {
  it("the provider's status and error type make the code; per-request ids leave the message", () => {
    expect(llmErrorOf(500, JSON.stringify({ error: { message: "The server had an error (request ID req_abc123def456)", type: "server_error" } }))).toEqual({
      code: "500 server_error",
      message: "The server had an error (request ID req_*)",
    });
    expect(llmErrorOf(529, JSON.stringify({ type: "error", error: { type: "overloaded_error", message: "Overloaded" } }))).toEqual({ code: "529 overloaded_error", message: "Overloaded" });
    expect(llmErrorOf(502, "<html>bad gateway</html>")).toEqual({ code: "502", message: "<html>bad gateway</html>" });
    expect(withoutRequestIds("id 123e4567-e89b-12d3-a456-426614174000 failed")).toBe("id * failed");
  });
});
