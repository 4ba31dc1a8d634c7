import { AIMessage, type ToolMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { ChatOpenAI } from "@langchain/openai";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { costUsd, priceFor } from "../../schema/pricing";
import { ActionDeniedError } from "../../sdk/index";
import { GovernorCallbackHandler, proxyFields } from "../../sdk/integrations/langchain";
import { approveNext, openFresh, useStack } from "../support/stack";

// LangChain.js against a real Governor and the provider stand-in: ChatOpenAI through the
// proxy, tool calls run the way a LangChain agent runs them (tool.invoke(toolCall) with the
// handler in callbacks), a deny and an operator's approval, and usage reported for calls
// that bypass the proxy.

const stack = useStack();

function toolset(ran: string[]) {
  const search = tool(async ({ q }) => (ran.push(`search:${q}`), `3 results for ${q}`), { name: "search", description: "search the docs", schema: z.object({ q: z.string() }) });
  const deleteDatabase = tool(async ({ name }) => (ran.push(`delete:${name}`), "gone"), { name: "delete_database", description: "drop everything", schema: z.object({ name: z.string() }) });
  const refund = tool(async ({ amount }) => (ran.push(`refund:${amount}`), `refunded ${amount}`), { name: "refund", description: "refund a customer", schema: z.object({ amount: z.number() }) });
  const flaky = tool(
    async () => {
      throw Object.assign(new Error("payments API timed out"), { code: "ETIMEDOUT" });
    },
    { name: "flaky", description: "fails", schema: z.object({}) },
  );
  return { search, delete_database: deleteDatabase, refund, flaky } as const;
}

/** One agent step as LangChain runs it: the model picks tools, each tool call is invoked with the callbacks. */
async function step(model: ChatOpenAI, tools: ReturnType<typeof toolset>, handler: GovernorCallbackHandler, prompt: string) {
  const ai = (await model.bindTools(Object.values(tools)).invoke(prompt, { callbacks: [handler] })) as AIMessage;
  const outcomes: Array<ToolMessage | Error> = [];
  for (const call of ai.tool_calls ?? []) {
    const t = tools[call.name as keyof typeof tools] as { invoke(c: unknown, o: unknown): Promise<ToolMessage> };
    outcomes.push(await t.invoke(call, { callbacks: [handler] }).catch((e: Error) => e));
  }
  return { ai, outcomes };
}

describe("LangChain.js", () => {
  it("a plain call goes through the proxy; the handler leaves its metering to the proxy", async () => {
    const id = await openFresh(stack, "lc-plain");
    const session = stack.agent.bind(id, { agent: "lc-bot" });
    const model = new ChatOpenAI({ model: "gpt-4o-mini", maxRetries: 0, ...proxyFields(session, "openai") });
    const r = await model.invoke("hello", { callbacks: [new GovernorCallbackHandler(session)] });
    expect(r.content).toContain("Hello from the upstream");
    const s = await session.get();
    expect(s.counters.llmCalls).toBe(1);
    expect(s.reservations).toEqual([]);
    const log = await stack.operator.exportLog(id);
    expect(log.filter((e) => e.type === "request.settled").map((e) => e.data.outcome)).toEqual(["completed"]);
  });

  it("an allowed tool runs; a denied one never starts and raises ActionDeniedError; a failing one leaves an error fact", async () => {
    const id = await openFresh(stack, "lc-tools");
    const session = stack.agent.bind(id, { run: "r1" });
    const ran: string[] = [];
    const tools = toolset(ran);
    const handler = new GovernorCallbackHandler(session, { costUsd: { search: 0.02 } });
    const model = new ChatOpenAI({ model: "gpt-4o-mini", maxRetries: 0, ...proxyFields(session, "openai") });
    stack.up.next({ toolCalls: [{ name: "search", arguments: { q: "refunds" } }, { name: "delete_database", arguments: { name: "prod" } }, { name: "flaky", arguments: {} }] });
    const { outcomes } = await step(model, tools, handler, "do things");
    expect(ran).toEqual(["search:refunds"]);
    expect((outcomes[0] as ToolMessage).content).toBe("3 results for refunds");
    expect(outcomes[1]).toBeInstanceOf(ActionDeniedError);
    expect(outcomes[1]).toMatchObject({ action: "delete_database", code: "policy_violation", rule: "actions.deny" });
    // The tool's own exception reaches the caller as it was thrown.
    expect(outcomes[2]).toMatchObject({ message: "payments API timed out", code: "ETIMEDOUT" });
    const s = await session.get();
    expect(s.counters).toMatchObject({ actions: 3, denied: 1, errors: 1 });
    const log = await stack.operator.exportLog(id);
    expect(log.find((e) => e.type === "error.recorded")?.data).toMatchObject({ source: "tool", action: "flaky", code: "ETIMEDOUT" });
    expect(log.find((e) => e.type === "action.checked" && e.data.action === "search")?.data).toMatchObject({ decision: "allow", costUsd: 0.02, attribution: { run: "r1" } });
  });

  it("a tool needing approval waits until an operator approves from another client, then runs", async () => {
    const id = await openFresh(stack, "lc-review");
    const session = stack.agent.bind(id);
    const ran: string[] = [];
    const tools = toolset(ran);
    let reviewed: string | undefined;
    const handler = new GovernorCallbackHandler(session, { onReview: (name, d) => (reviewed = `${name}:${d.approvalId}`) });
    const running = tools.refund.invoke({ id: "call_1", name: "refund", args: { amount: 700 }, type: "tool_call" }, { callbacks: [handler] });
    const approvalId = await approveNext(stack, id);
    const msg = await running;
    expect(msg.content).toBe("refunded 700");
    expect(ran).toEqual(["refund:700"]);
    expect(reviewed).toBe(`refund:${approvalId}`);
  });

  it("an operator's denial stops the tool", async () => {
    const id = await openFresh(stack, "lc-review-no");
    const session = stack.agent.bind(id);
    const ran: string[] = [];
    const running = toolset(ran).refund.invoke({ amount: 800 }, { callbacks: [new GovernorCallbackHandler(session)] }).catch((e) => e);
    await approveNext(stack, id, "deny");
    expect(await running).toMatchObject({ name: "ActionDeniedError", rule: "approval", reason: expect.stringContaining("no by test") });
    expect(ran).toEqual([]);
  });

  it("a call over the budget is refused with status 402", async () => {
    const id = await openFresh(stack, "lc-budget", { budget: { session_usd: 0.000001 } });
    const session = stack.agent.bind(id);
    const model = new ChatOpenAI({ model: "gpt-4o-mini", maxRetries: 0, ...proxyFields(session, "openai") });
    const e = await model.invoke("hello").catch((x) => x);
    expect(e).toMatchObject({ status: 402 });
    expect(String(e.message)).toMatch(/budget/);
    expect(stack.up.requests).toHaveLength(0);
  });

  it("calls that bypass the proxy are reported as cost; violations counted", async () => {
    const id = await openFresh(stack, "lc-direct", { budget: { session_usd: 1 }, violations: { thresholds: { pii_blocked: 2 }, on_threshold: "kill" } });
    const session = stack.agent.bind(id);
    const handler = new GovernorCallbackHandler(session, { reportUsage: true });
    // Straight to the provider stand-in: Governor sees this call only through the handler.
    const direct = new ChatOpenAI({ model: "gpt-4o-mini", maxRetries: 0, apiKey: "sk-direct", configuration: { baseURL: `${stack.up.url}/v1` } });
    const r = await direct.invoke("hello", { callbacks: [handler] });
    const u = r.usage_metadata!;
    const expected = costUsd(priceFor("openai", "gpt-4o-mini")!.price, { inputTokens: u.input_tokens, outputTokens: u.output_tokens, cachedInputTokens: 0, cacheWriteTokens: 0 });
    const s = await session.get();
    expect(s.spentUsd).toBeCloseTo(expected, 9);
    expect(s.counters.llmCalls).toBe(0);
    await handler.reportViolation("pii_blocked", "email address in output");
    expect((await session.get()).counters.violations).toBe(1);
    await handler.reportViolation("pii_blocked");
    expect((await session.get()).state).toBe("killed");
  });
});
