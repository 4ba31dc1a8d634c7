import { describe, expect, it } from "vitest";
import { ActionDeniedError, Governor, guard, type ActionDecision } from "../../sdk/index";
import { freePort, TOKENS } from "../support/server";
import { approveNext, openFresh, useStack } from "../support/stack";

// guard() against a real Governor: allow runs the tool, deny throws with the rule, a review
// waits for an operator on another client, failures and late costs become facts, and the
// fail mode (option, client, policy) decides when Governor cannot be reached.

const stack = useStack();

describe("guard()", () => {
  it("runs allowed sync and async tools, charging their declared cost with the run's attribution", async () => {
    const id = await openFresh(stack, "g-allow");
    const session = stack.agent.bind(id, { agent: "bot-1", run: "run-9" });
    const add = guard(session, "add", (a: number, b: number) => a + b, { costUsd: 0.01 });
    const search = guard(session, "search", async ({ q }: { q: string }) => `results for ${q}`, { costUsd: ({ q }) => q.length / 100 });
    expect(await add(2, 3)).toBe(5);
    expect(await search({ q: "abcd" })).toBe("results for abcd");
    const s = await session.get();
    expect(s.spentUsd).toBe(0.05);
    const checked = (await stack.operator.exportLog(id)).filter((e) => e.type === "action.checked").map((e) => e.data);
    expect(checked).toEqual([
      expect.objectContaining({ action: "add", decision: "allow", costUsd: 0.01, attribution: expect.objectContaining({ agent: "bot-1", run: "run-9", action: "add" }) }),
      expect.objectContaining({ action: "search", decision: "allow", costUsd: 0.04 }),
    ]);
  });

  it("a denied tool does not run and throws ActionDeniedError naming the rule", async () => {
    const id = await openFresh(stack, "g-deny", { budget: { session_usd: 0.1 }, actions: { deny: ["delete_database"] } });
    const session = stack.agent.bind(id);
    let ran = 0;
    const drop = guard(session, "delete_database", () => ran++);
    const e = await drop().catch((x) => x);
    expect(e).toBeInstanceOf(ActionDeniedError);
    expect(e).toMatchObject({ action: "delete_database", code: "policy_violation", rule: "actions.deny", message: expect.stringContaining("deny list") });
    const costly = guard(session, "search", () => ran++, { costUsd: 0.25 });
    expect(await costly().catch((x) => x)).toMatchObject({ code: "budget_exceeded", rule: "budget.session_usd" });
    expect(ran).toBe(0);
  });

  it("the tool's own exception reaches the caller unchanged and leaves an error fact; a late cost is reported", async () => {
    const id = await openFresh(stack, "g-fail");
    const session = stack.agent.bind(id, { run: "r1" });
    const boom = Object.assign(new Error("card declined for ACME-99"), { code: "card_declined" });
    const pay = guard(session, "pay", async () => {
      throw boom;
    });
    expect(await pay().catch((x) => x)).toBe(boom);
    const llm = guard(session, "summarize", async (text: string) => ({ summary: text.slice(0, 3), usd: 0.07 }), { cost: (r) => r.usd });
    expect(await llm("hello")).toEqual({ summary: "hel", usd: 0.07 });
    const s = await session.get();
    expect(s.counters.errors).toBe(1);
    expect(s.spentUsd).toBe(0.07);
    const log = await stack.operator.exportLog(id);
    const err = log.find((e) => e.type === "error.recorded")!;
    expect(err.data).toMatchObject({ source: "tool", action: "pay", code: "card_declined", signature: expect.stringMatching(/^[0-9a-f]{64}$/) });
    // Without keep_raw only the signature of the message is kept.
    expect(JSON.stringify(err)).not.toContain("ACME-99");
    expect(log.find((e) => e.type === "request.settled" && e.data.outcome === "reported")?.data).toMatchObject({ costUsd: 0.07, attribution: { action: "summarize", run: "r1" } });
  });

  it("a review waits until an operator approves from another client; a denial throws", async () => {
    const id = await openFresh(stack, "g-review");
    const session = stack.agent.bind(id);
    const ran: number[] = [];
    const reviews: ActionDecision[] = [];
    const refund = guard(session, "refund", ({ amount }: { amount: number }) => (ran.push(amount), `refunded ${amount}`), { costUsd: 0.02, onReview: (d) => reviews.push(d) });
    const [result, approvalId] = await Promise.all([refund({ amount: 900 }), approveNext(stack, id)]);
    expect(result).toBe("refunded 900");
    expect(reviews).toEqual([expect.objectContaining({ decision: "review", approvalId, rule: "actions.rules.refund.amount.require_approval_above" })]);
    const [denied] = await Promise.all([refund({ amount: 950 }).catch((x) => x), approveNext(stack, id, "deny")]);
    expect(denied).toMatchObject({ name: "ActionDeniedError", rule: "approval", reason: expect.stringContaining("no by test") });
    expect(ran).toEqual([900]);
    expect((await session.get()).spentUsd).toBe(0.02);
  });

  it("one id is one decision and one charge, however often it is retried", async () => {
    const id = await openFresh(stack, "g-idem");
    const session = stack.agent.bind(id);
    const search = guard(session, "search", (q: string) => q, { costUsd: 0.03, id: (q) => `search-${q}` });
    await search("a");
    await search("a");
    await search("b");
    expect((await session.get()).spentUsd).toBe(0.06);
  });

  it("when Governor cannot be reached: the option, then the client's choice, then the policy's fail_mode decide", async () => {
    const id = await openFresh(stack, "g-fail-open", { fail_mode: "open" });
    let down = false;
    // A network outage as fetch reports it: the request never reaches a server.
    const flaky: typeof fetch = (...a) => (down ? Promise.reject(new TypeError("fetch failed", { cause: { code: "ECONNREFUSED" } })) : fetch(...a));
    const policyOnly = new Governor({ baseUrl: stack.server.url, token: TOKENS.agent, fetch: flaky }).bind(id);
    const strict = new Governor({ baseUrl: stack.server.url, token: TOKENS.agent, fetch: flaky, failMode: "closed" }).bind(id);
    const tool = (s: typeof strict, failMode?: "open" | "closed") => guard(s, "search", () => "ran", { failMode });
    expect(await tool(policyOnly)()).toBe("ran");
    expect(await tool(strict)()).toBe("ran");
    down = true;
    expect(await tool(policyOnly)()).toBe("ran");
    expect(await tool(strict)().catch((x) => x)).toMatchObject({ name: "ActionDeniedError", code: "governor_unreachable", rule: "fail_mode" });
    expect(await tool(strict, "open")()).toBe("ran");
    expect(await tool(policyOnly, "closed")().catch((x) => x)).toMatchObject({ code: "governor_unreachable" });

    // Nothing listening at all, no policy seen: closed.
    const nowhere = new Governor({ baseUrl: `http://127.0.0.1:${await freePort()}`, token: "x" }).bind("s");
    expect(await tool(nowhere)().catch((x) => x)).toMatchObject({ code: "governor_unreachable" });
  });
});
