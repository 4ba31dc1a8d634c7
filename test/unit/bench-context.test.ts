import { getEncoding } from "js-tiktoken";
import { describe, expect, it } from "vitest";
import { agentContext } from "../../bench/context";

// bench:peers and profile:proxy compare runs by their figures, so the long context they send
// must be the same bytes every time, as long as asked, and shaped like a real agent's history.

describe("the benchmark's agent context", () => {
  const { body, tokens } = agentContext(40_000);

  it("is the same bytes on every run, and another seed gives another context", () => {
    expect(JSON.stringify(agentContext(40_000).body)).toBe(JSON.stringify(body));
    expect(JSON.stringify(agentContext(40_000, 7).body)).not.toBe(JSON.stringify(body));
  });

  it("reaches the asked size, counted independently of its own tally", () => {
    expect(tokens).toBeGreaterThanOrEqual(40_000);
    const enc = getEncoding("o200k_base");
    const text = body.messages.map((m) => ("tool_calls" in m && m.tool_calls ? m.tool_calls.map((c) => c.function.arguments).join("") : "") + (m.content ?? "")).join("") + JSON.stringify(body.tools);
    const counted = enc.encode(text).length;
    expect(counted).toBeGreaterThan(38_000);
    expect(counted).toBeLessThan(44_000);
  });

  it("is an agent loop: system, task, then tool calls each answered by its result", () => {
    const [system, task, ...rest] = body.messages;
    expect(system.role).toBe("system");
    expect(task.role).toBe("user");
    expect(rest.at(-1)?.role).toBe("user");
    const turns = rest.slice(0, -1);
    expect(turns.length).toBeGreaterThan(40);
    for (let i = 0; i < turns.length; i += 2) {
      const call = turns[i];
      const result = turns[i + 1];
      expect(call.role).toBe("assistant");
      expect(result.role).toBe("tool");
      if (call.role !== "assistant" || result.role !== "tool") continue;
      const id = call.tool_calls?.[0]?.id;
      expect(result.tool_call_id).toBe(id);
      const args = JSON.parse(call.tool_calls![0].function.arguments) as object;
      expect(typeof args).toBe("object");
    }
    expect(body.tools.length).toBe(12);
  });
});
