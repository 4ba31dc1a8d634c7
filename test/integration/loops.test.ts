import { isCheckpointLine } from "../../lib/checkpoint";
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GovernorEvent } from "../../schema/events";
import { client, startGovernor, TOKENS, type Governor } from "../support/server";
import { startUpstream, type Upstream } from "../support/upstream";
import { Socket } from "../support/ws";

// Loop detection (runaway.repeat) on every path an agent acts through besides MCP (see
// mcp.test.ts): HTTP actions, socket checks, tool calls in proxied LLM requests, error
// facts, and failed LLM calls.

let up: Upstream;
let gov: Governor;
let op: ReturnType<typeof client>;
let agent: ReturnType<typeof client>;

beforeAll(async () => {
  up = await startUpstream();
  gov = await startGovernor({ vars: { OPENAI_BASE_URL: `${up.url}/v1`, OPENAI_API_KEY: "sk-test", ANTHROPIC_BASE_URL: up.url, ANTHROPIC_API_KEY: "sk-ant-test" } });
  op = client(gov.url, TOKENS.operator);
  agent = client(gov.url, TOKENS.agent);
});
afterAll(async () => {
  await gov?.stop();
  await up?.close();
});

let n = 0;
async function open(repeat: Record<string, unknown>) {
  const id = `loop-${Date.now().toString(36)}-${n++}`;
  const r = await op("/v1/sessions", { body: { id, policy: { runaway: { repeat } } } });
  expect(r.status).toBe(201);
  return id;
}

async function logOf(id: string) {
  const res = await op(`/v1/sessions/${id}/log`);
  // The export ends with its signed checkpoint (lib/checkpoint.ts), which is not an event.
  return res.text.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)).filter((l) => !isCheckpointLine(l)).map((l) => GovernorEvent.parse(l));
}
const anomalies = async (id: string) => (await logOf(id)).filter((e) => e.type === "anomaly.detected").map((e) => e.data);

describe("repeated calls", () => {
  it("over HTTP: alert, then review, then kill as the loop goes on", async () => {
    const id = await open({ same_call: 2 });
    const act = async () => (await agent(`/v1/sessions/${id}/actions`, { body: { action: "poll", args: { job: 7 } } })).json;
    await act();
    expect((await act()).decision).toBe("allow");
    expect((await op(`/v1/sessions/${id}`)).json.state).toBe("alerting");
    await act();
    const review = await act();
    expect(review).toMatchObject({ decision: "review", rule: "runaway.repeat.same_call" });
    expect((await op(`/v1/sessions/${id}/approvals/${review.approvalId}`, { body: { decision: "approve" } })).status).toBe(200);
    await act();
    expect(await act()).toMatchObject({ decision: "deny", code: "session_killed", rule: "runaway.repeat.same_call" });
    expect((await anomalies(id)).map((a) => a.onDetect)).toEqual(["alert", "review", "kill"]);
    const checked = (await logOf(id)).filter((e) => e.type === "action.checked");
    expect(checked.every((e) => e.type === "action.checked" && e.data.source === "http")).toBe(true);
  });

  it("over the session socket", async () => {
    const id = await open({ same_call: 3, on_detect: "kill" });
    const s = await Socket.open(`${gov.wsUrl}/parties/session/acme:${id}?token=${TOKENS.agent}`);
    try {
      for (let i = 1; i <= 3; i++) s.send({ type: "check", id: `c${i}`, action: "fetch", args: { url: "https://example.com" } });
      const msgs = await s.waitFor((m) => m.filter((x) => x.type === "decision").length === 3);
      const decisions = msgs.filter((x) => x.type === "decision");
      expect(decisions.map((d) => d.decision)).toEqual(["allow", "allow", "deny"]);
      expect(decisions[2]).toMatchObject({ code: "session_killed", rule: "runaway.repeat.same_call" });
    } finally {
      s.close();
    }
    const checked = (await logOf(id)).filter((e) => e.type === "action.checked");
    expect(checked.map((e) => e.type === "action.checked" && e.data.source)).toEqual(["socket", "socket", "socket"]);
  });

  it("in proxied LLM requests: the model calling the same tool again and again stops the call that would go on", async () => {
    const id = await open({ same_call: 3, on_detect: "kill" });
    const openai = new OpenAI({ apiKey: TOKENS.agent, baseURL: `${gov.url}/v1/proxy/openai/v1`, defaultHeaders: { "X-Session-ID": id }, maxRetries: 0 });
    const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [{ role: "user", content: "find the invoice" }];
    const sentBefore = up.requests.length;
    const outcomes: string[] = [];
    for (let i = 0; i < 4; i++) {
      try {
        await openai.chat.completions.create({ model: "gpt-4o-mini", messages, max_tokens: 16 });
        outcomes.push("ok");
      } catch (e) {
        outcomes.push(`${(e as { status?: number }).status}`);
        break;
      }
      // The agent runs the call the model asked for and sends the history back, again and again.
      messages.push({ role: "assistant", content: null, tool_calls: [{ id: `call_${i}`, type: "function", function: { name: "lookup", arguments: '{"invoice": 42}' } }] });
      messages.push({ role: "tool", tool_call_id: `call_${i}`, content: "not found" });
    }
    // Calls 2 and 3 show the first and second lookup; the fourth shows the third: refused.
    expect(outcomes).toEqual(["ok", "ok", "ok", "403"]);
    expect(up.requests.length - sentBefore).toBe(3);
    // (A growing context may also raise the prompt-growth alert on the way: a different signal.)
    expect((await anomalies(id)).find((a) => a.kind === "repeat_call")).toMatchObject({ action: "lookup", count: 3, onDetect: "kill" });
    const reserved = (await logOf(id)).filter((e) => e.type === "request.reserved");
    expect(reserved.map((e) => (e.type === "request.reserved" ? e.data.toolCalls?.map((t) => t.key) : undefined))).toEqual([undefined, ["call_0"], ["call_1"]]);
  });
});

describe("repeated errors", () => {
  it("reported tool errors: the same one three times in a row", async () => {
    const id = await open({ same_error: 3, on_detect: "kill" });
    const report = (message: string) => agent(`/v1/sessions/${id}/events`, { body: { type: "error", action: "charge", code: "E502", message } });
    await report("gateway down");
    await report("gateway down");
    expect((await op(`/v1/sessions/${id}`)).json.state).toBe("active");
    await report("gateway down");
    const s = (await op(`/v1/sessions/${id}`)).json;
    expect(s.state).toBe("killed");
    expect(s.killed).toMatchObject({ rule: "runaway.repeat.same_error" });
  });

  it("failed LLM calls through the proxy, settled as errors", async () => {
    const id = await open({ same_error: 2, on_detect: "kill" });
    const anthropic = new Anthropic({ apiKey: TOKENS.agent, baseURL: `${gov.url}/v1/proxy/anthropic`, defaultHeaders: { "X-Session-ID": id }, maxRetries: 0 });
    const ask = () => anthropic.messages.create({ model: "claude-3-5-haiku-20241022", max_tokens: 16, messages: [{ role: "user", content: "hi" }] });
    up.next({ status: 529 }, 2);
    await expect(ask()).rejects.toMatchObject({ status: 502 });
    await expect(ask()).rejects.toMatchObject({ status: 502 });
    const log = await logOf(id);
    const errors = log.filter((e) => e.type === "error.recorded").map((e) => e.data);
    expect(errors).toEqual([expect.objectContaining({ source: "llm", code: "529 overloaded_error" }), expect.objectContaining({ source: "llm", code: "529 overloaded_error" })]);
    expect((await op(`/v1/sessions/${id}`)).json.killed).toMatchObject({ rule: "runaway.repeat.same_error" });
    await expect(ask()).rejects.toMatchObject({ status: 403 });
  });
});
