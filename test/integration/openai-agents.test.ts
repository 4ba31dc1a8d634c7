import { Agent, InputGuardrailTripwireTriggered, Runner, setTracingDisabled } from "@openai/agents";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { awaitApprovals, governedModelProvider, governedTool, governorGuardrail } from "../../sdk/integrations/openai-agents";
import type { BoundSession } from "../../sdk/index";
import { approveNext, openFresh, useStack } from "../support/stack";

// The OpenAI Agents SDK against a real Governor and the provider stand-in: the model
// through the proxy (Responses API), governed tools whose needsApproval asks Governor, and
// the input guardrail that refuses a run in a killed or spent session.

setTracingDisabled(true);
const stack = useStack();

async function agentFor(session: BoundSession, ran: string[]) {
  const tools = [
    governedTool(session, { name: "search", description: "search the docs", parameters: z.object({ q: z.string() }), execute: async ({ q }: { q: string }) => (ran.push(`search:${q}`), `3 results for ${q}`) }, { costUsd: 0.01 }),
    governedTool(session, { name: "delete_database", description: "drop everything", parameters: z.object({ name: z.string() }), execute: async ({ name }: { name: string }) => (ran.push(`delete:${name}`), "gone") }),
    governedTool(session, { name: "refund", description: "refund a customer", parameters: z.object({ amount: z.number() }), execute: async ({ amount }: { amount: number }) => (ran.push(`refund:${amount}`), `refunded ${amount}`) }),
  ];
  const agent = new Agent({ name: "support", instructions: "help the customer", model: "gpt-4o-mini", tools, inputGuardrails: [governorGuardrail(session)] });
  const runner = new Runner({ modelProvider: await governedModelProvider(session), tracingDisabled: true });
  return { agent, runner };
}

describe("OpenAI Agents SDK", () => {
  it("a plain run goes through the proxy as the session", async () => {
    const id = await openFresh(stack, "ag-plain");
    const session = stack.agent.bind(id, { agent: "support", run: "r1" });
    const { agent, runner } = await agentFor(session, []);
    const r = await runner.run(agent, "hello");
    expect(r.finalOutput).toContain("Hello from the upstream");
    expect(stack.up.requests.map((q) => q.path)).toEqual(["/v1/responses"]);
    expect(stack.up.requests[0].headers.authorization).toBe("Bearer sk-provider-openai");
    const s = await session.get();
    expect(s.counters.llmCalls).toBe(1);
    expect(s.spentUsd).toBeGreaterThan(0);
  });

  it("an allowed tool runs; a denied one reaches the model as the tool's error", async () => {
    const id = await openFresh(stack, "ag-tools");
    const session = stack.agent.bind(id, { run: "r1" });
    const ran: string[] = [];
    const { agent, runner } = await agentFor(session, ran);
    stack.up.next({ toolCalls: [{ name: "search", arguments: { q: "refunds" } }, { name: "delete_database", arguments: { name: "prod" } }] });
    const r = await runner.run(agent, "do things");
    expect(ran).toEqual(["search:refunds"]);
    expect(r.finalOutput).toContain("Hello from the upstream");
    const outputs = (stack.up.requests[1].body.input as Array<{ type: string; output?: unknown }>).filter((i) => i.type === "function_call_output").map((i) => JSON.stringify(i.output));
    expect(outputs).toHaveLength(2);
    expect(outputs[0]).toContain("3 results for refunds");
    expect(outputs[1]).toContain("actions.deny");
    const s = await session.get();
    expect(s.counters).toMatchObject({ actions: 2, denied: 1, llmCalls: 2 });
  });

  it("a review interrupts the run; an operator approves from another client and the run resumes", async () => {
    const id = await openFresh(stack, "ag-review");
    const session = stack.agent.bind(id, { run: "r1" });
    const ran: string[] = [];
    const { agent, runner } = await agentFor(session, ran);
    stack.up.next({ toolCalls: [{ name: "refund", arguments: { amount: 900 } }] });
    const first = await runner.run(agent, "refund order 17");
    expect(first.interruptions).toHaveLength(1);
    expect(first.interruptions[0].name).toBe("refund");
    expect(ran).toEqual([]);
    const [decided] = await Promise.all([awaitApprovals(session, first), approveNext(stack, id)]);
    expect(decided).toBe(1);
    const resumed = await runner.run(agent, first.state);
    expect(ran).toEqual(["refund:900"]);
    expect(resumed.finalOutput).toContain("Hello from the upstream");
    expect((await session.get()).pendingApprovals).toEqual([]);
  });

  it("the guardrail refuses a run in a killed session before any model call; a call over budget is refused by the proxy", async () => {
    const killed = await openFresh(stack, "ag-killed");
    await stack.operator.kill(killed, "stop this agent");
    const s1 = stack.agent.bind(killed);
    const a = await agentFor(s1, []);
    await expect(a.runner.run(a.agent, "hello")).rejects.toBeInstanceOf(InputGuardrailTripwireTriggered);
    expect(stack.up.requests).toHaveLength(0);

    const poor = await openFresh(stack, "ag-budget", { budget: { session_usd: 0.000001 } });
    const s2 = stack.agent.bind(poor);
    const b = await agentFor(s2, []);
    const e = await b.runner.run(b.agent, "hello").catch((x) => x);
    expect(e).toMatchObject({ status: 402 });
    expect(stack.up.requests).toHaveLength(0);
  });
});
