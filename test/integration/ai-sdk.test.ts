import { APICallError, generateText, stepCountIs, tool, type ModelMessage } from "ai";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { ActionDeniedError } from "../../sdk/index";
import { awaitApprovals, governedProvider, governTools } from "../../sdk/integrations/ai-sdk";
import { approveNext, openFresh, useStack } from "../support/stack";

// The Vercel AI SDK against a real Governor and the provider stand-in: model calls through
// the proxy, tools governed by governTools, a review answered through the AI SDK's own
// tool-approval flow.

const stack = useStack();

function tools(ran: string[]) {
  return {
    search: tool({ description: "search the docs", inputSchema: z.object({ q: z.string() }), execute: async ({ q }) => (ran.push(`search:${q}`), `3 results for ${q}`) }),
    delete_database: tool({ description: "drop everything", inputSchema: z.object({ name: z.string() }), execute: async ({ name }) => (ran.push(`delete:${name}`), "gone") }),
    refund: tool({ description: "refund a customer", inputSchema: z.object({ amount: z.number() }), execute: async ({ amount }) => (ran.push(`refund:${amount}`), `refunded ${amount}`) }),
  };
}

describe("Vercel AI SDK", () => {
  it("a plain call goes through the proxy as the session, for OpenAI and Anthropic", async () => {
    const id = await openFresh(stack, "ai-plain");
    const session = stack.agent.bind(id, { agent: "ai-bot", run: "r1" });
    const openai = await governedProvider(session, "openai");
    const r = await generateText({ model: openai("gpt-4o-mini"), prompt: "hello" });
    expect(r.text).toContain("Hello from the upstream");
    const anthropic = await governedProvider(session, "anthropic");
    const a = await generateText({ model: anthropic("claude-sonnet-4-5"), prompt: "hello", maxOutputTokens: 100 });
    expect(a.text).toContain("Hello from the upstream");
    // The gateway sent its own keys upstream, never the Governor token.
    expect(stack.up.requests.map((q) => q.headers.authorization ?? q.headers["x-api-key"])).toEqual(["Bearer sk-provider-openai", "sk-provider-anthropic"]);
    const s = await session.get();
    expect(s.counters.llmCalls).toBe(2);
    expect(s.spentUsd).toBeGreaterThan(0);
  });

  it("an allowed tool runs once and is recorded; a denied one is a tool error the model sees", async () => {
    const id = await openFresh(stack, "ai-tools");
    const session = stack.agent.bind(id, { run: "r1" });
    const ran: string[] = [];
    const openai = await governedProvider(session, "openai");
    stack.up.next({ toolCalls: [{ name: "search", arguments: { q: "refund policy" } }, { name: "delete_database", arguments: { name: "prod" } }] });
    const r = await generateText({ model: openai("gpt-4o-mini"), prompt: "look it up", tools: governTools(session, tools(ran), { costUsd: { search: 0.01 } }), stopWhen: stepCountIs(3) });
    expect(ran).toEqual(["search:refund policy"]);
    const first = r.steps[0].content;
    expect(first.find((p) => p.type === "tool-result")).toMatchObject({ toolName: "search", output: "3 results for refund policy" });
    const denied = first.find((p) => p.type === "tool-error");
    expect(denied).toMatchObject({ toolName: "delete_database" });
    expect((denied as { error: unknown }).error).toBeInstanceOf(ActionDeniedError);
    expect((denied as { error: ActionDeniedError }).error).toMatchObject({ code: "policy_violation", rule: "actions.deny" });
    // The model's next turn carries both outcomes, the refusal as the tool's error text.
    const followUp = JSON.stringify(stack.up.requests[1].body.input);
    expect(followUp).toContain("3 results for refund policy");
    expect(followUp).toContain("actions.deny");
    const s = await session.get();
    expect(s.counters).toMatchObject({ actions: 2, denied: 1 });
    expect(s.spentUsd).toBeGreaterThanOrEqual(0.01);
  });

  it("a review becomes the AI SDK's approval request, answered once an operator approves from another client", async () => {
    const id = await openFresh(stack, "ai-review");
    const session = stack.agent.bind(id, { run: "r1" });
    const ran: string[] = [];
    const openai = await governedProvider(session, "openai");
    const governed = governTools(session, tools(ran));
    stack.up.next({ toolCalls: [{ name: "refund", arguments: { amount: 900 } }] });
    const messages: ModelMessage[] = [{ role: "user", content: "refund order 17" }];
    const r1 = await generateText({ model: openai("gpt-4o-mini"), messages, tools: governed, stopWhen: stepCountIs(3) });
    const request = r1.content.find((p) => p.type === "tool-approval-request");
    expect(request).toMatchObject({ toolCall: { toolName: "refund" } });
    expect(ran).toEqual([]);
    expect((await session.get()).state).toBe("awaiting-approval");

    const [answers, approvalId] = await Promise.all([awaitApprovals(session, r1), approveNext(stack, id)]);
    expect(answers).toEqual([{ role: "tool", content: [expect.objectContaining({ type: "tool-approval-response", approvalId: request!.approvalId, approved: true })] }]);
    messages.push(...r1.response.messages, ...(answers as ModelMessage[]));
    const r2 = await generateText({ model: openai("gpt-4o-mini"), messages, tools: governed, stopWhen: stepCountIs(3) });
    expect(ran).toEqual(["refund:900"]);
    expect(r2.text).toContain("Hello from the upstream");
    const s = await session.get();
    expect(s.state).toBe("active");
    expect(s.pendingApprovals).toEqual([]);
    const log = await stack.operator.exportLog(id);
    expect(log.filter((e) => e.type === "approval.granted").map((e) => e.data)).toEqual([expect.objectContaining({ approvalId, by: "alice" })]);
  });

  it("a call over the budget is refused with the AI SDK's APICallError, status 402", async () => {
    const id = await openFresh(stack, "ai-budget", { budget: { session_usd: 0.000001 } });
    const session = stack.agent.bind(id);
    const openai = await governedProvider(session, "openai");
    const e = await generateText({ model: openai("gpt-4o-mini"), prompt: "hello", maxRetries: 0 }).catch((x) => x);
    expect(APICallError.isInstance(e)).toBe(true);
    expect(e).toMatchObject({ statusCode: 402 });
    expect(String(e.responseBody)).toContain("budget_exceeded");
    expect(stack.up.requests).toHaveLength(0);
  });
});
