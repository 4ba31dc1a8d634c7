import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { client, startGovernor, TOKENS, type Governor } from "../support/server";
import { startUpstream, type Upstream } from "../support/upstream";
import { Socket } from "../support/ws";

/** A local webhook receiver; `hold` keeps requests open until the test releases them. */
class Receiver {
  received: Array<{ path: string; body: any; at: number }> = [];
  script: Array<number | "hold"> = [];
  held: Array<(status: number) => void> = [];
  server: Server;
  url = "";
  constructor() {
    this.server = createServer((req: IncomingMessage, res: ServerResponse) => {
      let data = "";
      req.on("data", (d) => (data += d));
      req.on("end", () => {
        this.received.push({ path: req.url ?? "", body: JSON.parse(data), at: Date.now() });
        const next = this.script.shift() ?? 200;
        const answer = (status: number) => res.writeHead(status, { "content-type": "application/json" }).end("{}");
        if (next === "hold") this.held.push(answer);
        else answer(next);
      });
    });
  }
  async start() {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", () => r()));
    this.url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }
  async waitFor(n: number, path?: string) {
    for (let i = 0; i < 200; i++) {
      const got = this.received.filter((r) => !path || r.path === path);
      if (got.length >= n) return got;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`receiver got ${this.received.length} requests, wanted ${n}`);
  }
  close() {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(r));
  }
}

let gov: Governor;
let up: Upstream;
let hook: Receiver;
let op: ReturnType<typeof client>;
let agent: ReturnType<typeof client>;

beforeAll(async () => {
  hook = new Receiver();
  await hook.start();
  up = await startUpstream();
  gov = await startGovernor({
    vars: {
      OPENAI_BASE_URL: `${up.url}/v1`,
      OPENAI_API_KEY: "sk-test",
      GOVERNOR_PUBLIC_URL: "https://governor.example.com",
      GOVERNOR_DEFAULT_POLICY: "budget:\n  session_usd: 3\nlimits:\n  max_actions: 4\n",
    },
  });
  op = client(gov.url, TOKENS.operator);
  agent = client(gov.url, TOKENS.agent);
});
afterAll(async () => {
  await gov?.stop();
  await up?.close();
  await hook?.close();
});

let n = 0;
const sid = (p: string) => `${p}-${Date.now().toString(36)}-${n++}`;
async function open(policy: unknown, extra: Record<string, unknown> = {}) {
  const id = sid("pol");
  const r = await op("/v1/sessions", { body: { id, policy, ...extra } });
  expect(r.status, JSON.stringify(r.json)).toBe(201);
  return id;
}
const act = (id: string, body: unknown, query = "") => agent(`/v1/sessions/${id}/actions${query}`, { body });
const summary = async (id: string) => (await op(`/v1/sessions/${id}`)).json;

describe("policies as code", () => {
  it("accepts YAML, with durations and decimal dollars", async () => {
    const id = sid("yaml");
    const yaml = `id: ${id}\nagent: planner\npolicy:\n  budget:\n    session_usd: 0.50\n  limits:\n    max_duration: 30m\n  approval:\n    timeout: 90s\n`;
    const r = await op("/v1/sessions", { raw: yaml, headers: { "content-type": "application/yaml" } });
    expect(r.status).toBe(201);
    expect(r.json).toMatchObject({ session: id, budgetUsd: 0.5, agent: "planner" });
    // The whole body may also be the policy itself, with the id beside it.
    const id2 = sid("yaml");
    const r2 = await op("/v1/sessions", { raw: `id: ${id2}\nversion: 1\nbudget: { session_usd: 2.25 }\n`, headers: { "content-type": "application/yaml" } });
    expect(r2.status).toBe(201);
    expect(r2.json.budgetUsd).toBe(2.25);
  });

  it("refuses a bad policy with the path of the bad field and why", async () => {
    const bad: Array<[unknown, string]> = [
      [{ budget: { session_usd: "five" } }, "policy.budget.session_usd"],
      [{ budget: { session_usd: -1 } }, "policy.budget.session_usd"],
      [{ budget: { on_exceed: "explode" } }, "policy.budget.on_exceed"],
      [{ limits: { max_duration: "30 minutes" } }, "policy.limits.max_duration"],
      [{ limits: { rate: [{ per: "session", max: 0, window: "1m" }] } }, "policy.limits.rate.0.max"],
      [{ actions: { rules: { refund: { account: { pattern: "([" } } } } }, "policy.actions.rules.refund.account.pattern"],
      [{ runaway: { growth_ratio: 0.5 } }, "policy.runaway.growth_ratio"],
      [{ notify: [{ slack: "not a url" }] }, "policy.notify.0"],
      [{ budgett: {} }, "policy"],
      [{ pricing: { "gpt-5.4-mini": { input: 0.75, output: 4.5 } } }, "policy.pricing.gpt-5.4-mini"],
      [{ pricing: { "openai/gpt-5.4-mini": { input: 0.75, output: 4.5, cached_input: 0.0751 } } }, "policy.pricing.openai/gpt-5.4-mini.cached_input"],
      [{ pricing: { "anthropic/claude-x": { input: 1, output: 5000 } } }, "policy.pricing.anthropic/claude-x.output"],
    ];
    for (const [policy, path] of bad) {
      const r = await op("/v1/sessions", { body: { id: sid("bad"), policy } });
      expect(r.status, JSON.stringify(policy)).toBe(400);
      expect(r.json.error.code).toBe("bad_request");
      expect(r.json.error.field, JSON.stringify(policy)).toContain(path);
      expect(r.json.error.message).toContain(path);
    }
    const yaml = await op("/v1/sessions", { raw: "id: x\npolicy: [unclosed", headers: { "content-type": "application/yaml" } });
    expect(yaml.status).toBe(400);
    expect(yaml.json.error.message).toMatch(/YAML/);
  });

  it("a tenant default applies when a session has no policy, and is overridden field by field", async () => {
    // From GOVERNOR_DEFAULT_POLICY until an operator sets one.
    const fromEnv = await open(undefined);
    expect((await summary(fromEnv)).budgetUsd).toBe(3);
    expect((await op("/v1/policy")).json).toMatchObject({ source: "env", policy: { budget: { session_usd: 3 } } });

    expect((await agent("/v1/policy", { method: "PUT", body: { budget: { session_usd: 5, alert_at: 0.5 } } })).status).toBe(403);
    const bad = await op("/v1/policy", { method: "PUT", body: { budget: { alert_at: 7 } } });
    expect(bad.status).toBe(400);
    expect(bad.json.error.field).toBe("policy.budget.alert_at");
    expect((await op("/v1/policy", { method: "PUT", body: { budget: { session_usd: 5, alert_at: 0.5 }, actions: { deny: ["rm"] } } })).status).toBe(200);
    expect((await agent("/v1/policy")).json).toMatchObject({ source: "tenant", policy: { budget: { session_usd: 5 } } });

    const inherits = await open(undefined);
    expect((await summary(inherits)).budgetUsd).toBe(5);
    expect((await act(inherits, { action: "rm" })).json).toMatchObject({ decision: "deny", rule: "actions.deny" });

    const own = await open({ budget: { session_usd: 2 } });
    expect((await summary(own)).budgetUsd).toBe(2);
    await act(own, { action: "t", costUsd: 1 });
    // alert_at 0.5 came from the default: $1 of $2 alerts.
    expect((await summary(own)).state).toBe("alerting");
    expect((await act(own, { action: "rm" })).json.decision).toBe("deny");
    await op("/v1/policy", { method: "PUT", body: {} });
  });

  it("every decision names its rule, and the log says why", async () => {
    const id = await open({ actions: { allow: ["search"] } });
    const r = await act(id, { action: "shell", args: { cmd: "ls" } });
    expect(r.json).toMatchObject({ decision: "deny", code: "policy_violation", rule: "actions.allow" });
    expect(r.json.reason).toContain("shell");
    // The last event: the line after it is the export's signed checkpoint.
    const log = (await op(`/v1/sessions/${id}/log`)).text.trim().split("\n").map((l) => JSON.parse(l)).filter((l) => l.type);
    expect(log.at(-1)).toMatchObject({ type: "action.checked", data: { decision: "deny", rule: "actions.allow", code: "policy_violation" } });
    // Arguments are kept as a hash unless the policy asks for raw text.
    expect(JSON.stringify(log.at(-1))).not.toContain('"ls"');
    const keep = await open({ keep_raw: true });
    await act(keep, { action: "shell", args: { cmd: "ls" } });
    expect((await op(`/v1/sessions/${keep}/log`)).text).toContain('"cmd":"ls"');
  });
});

describe("rate limits", () => {
  it("per session, exact under concurrency", async () => {
    const id = await open({ limits: { rate: [{ per: "session", max: 7, window: "1m" }] } });
    const rs = await Promise.all(Array.from({ length: 20 }, () => act(id, { action: "t" })));
    expect(rs.filter((r) => r.json.decision === "allow")).toHaveLength(7);
    const limited = rs.filter((r) => r.json.code === "rate_limited");
    expect(limited).toHaveLength(13);
    expect(limited[0].json.retryAfter).toBeGreaterThan(0);
  });

  it("per user across two sessions, exact under concurrency, held by the tenant actor", async () => {
    const policy = { limits: { rate: [{ per: "user", max: 5, window: "1m" }] } };
    const a = await open(policy, { user: "carol" });
    const b = await open(policy, { user: "carol" });
    const other = await open(policy, { user: "dave" });
    const rs = await Promise.all(Array.from({ length: 16 }, (_, i) => act(i % 2 ? a : b, { action: "t" })));
    expect(rs.filter((r) => r.json.decision === "allow")).toHaveLength(5);
    expect(rs.filter((r) => r.json.code === "rate_limited")).toHaveLength(11);
    expect(rs.find((r) => r.json.code === "rate_limited")!.json.rule).toBe("limits.rate[per=user]");
    expect((await act(other, { action: "t" })).json.decision).toBe("allow");
  });

  it("a rate-limited proxied call is a 429 with Retry-After", async () => {
    const id = await open({ limits: { rate: [{ per: "agent", max: 2, window: "1h" }] } }, { agent: "loop-bot" });
    const ai = new OpenAI({ apiKey: TOKENS.agent, baseURL: `${gov.url}/v1/proxy/openai/v1`, maxRetries: 0, defaultHeaders: { "X-Session-ID": id } });
    await ai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "a" }], max_tokens: 5 });
    await ai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "b" }], max_tokens: 5 });
    const e = await ai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "c" }], max_tokens: 5 }).catch((x) => x);
    expect(e).toBeInstanceOf(OpenAI.RateLimitError);
    expect(e.code).toBe("rate_limited");
    expect(Number(e.headers.get("retry-after"))).toBeGreaterThan(3000);
  });
});

describe("violations", () => {
  it("a kind reaching its threshold kills at once, and subscribers see killed with the reason", async () => {
    const id = await open({ violations: { thresholds: { pii_blocked: 2, scope_violation: 1 } } });
    const s = await Socket.open(`${gov.wsUrl}/parties/session/acme:${id}?token=${TOKENS.operator}`);
    await agent(`/v1/sessions/${id}/events`, { body: { type: "violation", kind: "pii_blocked", detail: "email in prompt" } });
    expect((await summary(id)).state).toBe("active");
    await agent(`/v1/sessions/${id}/events`, { body: { type: "violation", kind: "pii_blocked" } });
    const msgs = await s.waitFor((m) => m.some((x) => x.type === "state" && x.summary.state === "killed"));
    const killed = msgs.find((x) => x.type === "state" && x.summary.state === "killed");
    expect(killed.summary.killed).toMatchObject({ by: "policy", rule: "violations.thresholds.pii_blocked" });
    expect(killed.summary.killed.reason).toContain("pii_blocked");
    expect((await act(id, { action: "t" })).json.code).toBe("session_killed");
    s.close();
  });
});

describe("human approval", () => {
  const policy = { budget: { session_usd: 10 }, actions: { rules: { refund: { amount: { max: 1000, require_approval_above: 500 } } } } };

  it("approve: the held request returns the decision as soon as an operator on a socket makes it", async () => {
    const id = await open(policy);
    const opSock = await Socket.open(`${gov.wsUrl}/parties/session/acme:${id}?token=${TOKENS.operator}`);
    const held = act(id, { id: "refund-1", action: "refund", args: { amount: 900 }, costUsd: 0.5 }, "?wait=20");
    const msgs = await opSock.waitFor((m) => m.some((x) => x.type === "state" && x.summary.state === "awaiting-approval"));
    const pending = msgs.find((x) => x.type === "state" && x.summary.state === "awaiting-approval").summary.pendingApprovals[0];
    // The approver sees the argument the rule checked, though arguments are otherwise hashed.
    expect(pending).toMatchObject({ action: "refund", requestId: "refund-1", rule: "actions.rules.refund.amount.require_approval_above", args: { amount: 900 } });
    opSock.send({ type: "approve", approvalId: pending.approvalId, note: "ok by finance" });
    const r = await held;
    expect(r.json).toMatchObject({ decision: "allow", approvalId: pending.approvalId, spentUsd: 0.5 });
    const s = await summary(id);
    expect(s).toMatchObject({ state: "active", pendingApprovals: [] });
    // A retry of the same action id gets the decision, not the stale review.
    expect((await act(id, { id: "refund-1", action: "refund", args: { amount: 900 }, costUsd: 0.5 })).json.decision).toBe("allow");
    expect((await summary(id)).spentUsd).toBe(0.5);
    opSock.close();
  });

  it("deny over a socket check: the agent's socket gets review, then the final decision", async () => {
    const id = await open(policy);
    const agentSock = await Socket.open(`${gov.wsUrl}/parties/session/acme:${id}?token=${TOKENS.agent}`);
    agentSock.send({ type: "check", id: "c-1", action: "refund", args: { amount: 700 }, costUsd: 1 });
    const [review] = (await agentSock.waitFor((m) => m.some((x) => x.type === "decision"))).filter((x) => x.type === "decision");
    expect(review).toMatchObject({ id: "c-1", decision: "review", final: false });
    const denied = await op(`/v1/sessions/${id}/approvals/${review.approvalId}`, { body: { decision: "deny", note: "too much" } });
    expect(denied.status).toBe(200);
    const final = (await agentSock.waitFor((m) => m.filter((x) => x.type === "decision").length >= 2)).filter((x) => x.type === "decision")[1];
    expect(final).toMatchObject({ id: "c-1", decision: "deny", final: true });
    expect(final.reason).toContain("too much");
    expect((await summary(id))).toMatchObject({ state: "active", spentUsd: 0 });
    const again = await op(`/v1/sessions/${id}/approvals/${review.approvalId}`, { body: { decision: "approve" } });
    expect(again.status).toBe(200);
    expect(again.json.decision).toBe("deny");
    expect((await op(`/v1/sessions/${id}/approvals/apr_nope`, { body: { decision: "approve" } })).status).toBe(404);
    agentSock.close();
  });

  it("no decision within the timeout: denied by the actor's alarm (fail-closed)", async () => {
    const id = await open({ ...policy, approval: { timeout: "1s" } });
    const r = await act(id, { action: "refund", args: { amount: 800 } });
    expect(r.json.decision).toBe("review");
    let s = await summary(id);
    for (let i = 0; i < 60 && s.state === "awaiting-approval"; i++) {
      await new Promise((x) => setTimeout(x, 100));
      s = await summary(id);
    }
    expect(s.state).toBe("active");
    const log = (await op(`/v1/sessions/${id}/log`)).text;
    expect(log).toContain('"timedOut":true');
  });

  it("while an approval is pending, proxied calls are refused (409) or held, per policy", async () => {
    const ai = (id: string) => new OpenAI({ apiKey: TOKENS.agent, baseURL: `${gov.url}/v1/proxy/openai/v1`, maxRetries: 0, defaultHeaders: { "X-Session-ID": id } });
    const refuse = await open(policy);
    await act(refuse, { action: "refund", args: { amount: 600 } });
    const e = await ai(refuse).chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], max_tokens: 5 }).catch((x) => x);
    expect(e.status).toBe(409);
    expect(e.code).toBe("awaiting_approval");

    const hold = await open({ ...policy, approval: { while_pending: "hold", timeout: "30s" } });
    const review = (await act(hold, { action: "refund", args: { amount: 600 } })).json;
    let answered = false;
    const call = ai(hold)
      .chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], max_tokens: 5 })
      .finally(() => (answered = true));
    await new Promise((r) => setTimeout(r, 300));
    expect(answered).toBe(false);
    expect(up.requests.filter((r) => r.body.messages?.[0]?.content === "x")).toHaveLength(0);
    await op(`/v1/sessions/${hold}/approvals/${review.approvalId}`, { body: { decision: "approve" } });
    const done = await call;
    expect(done.choices).toHaveLength(1);
  });
});

describe("alerts", () => {
  it("sends Slack and webhook notifications with the session's facts and a console link", async () => {
    hook.received = [];
    const id = await open({ budget: { session_usd: 1, alert_at: 0.5 }, notify: [{ slack: `${hook.url}/slack` }, { webhook: `${hook.url}/hook` }] }, { agent: "bot-9", user: "erin" });
    await act(id, { action: "t", costUsd: 0.6 });
    const [slack] = await hook.waitFor(1, "/slack");
    const [web] = await hook.waitFor(1, "/hook");
    expect(web.body).toMatchObject({ type: "alert.raised", session: id, tenant: "acme", agent: "bot-9", user: "erin", spentUsd: 0.6, budgetUsd: 1, state: "alerting" });
    expect(web.body.reason).toContain("50%");
    expect(web.body.consoleUrl).toContain("https://governor.example.com/");
    const text = JSON.stringify(slack.body.blocks);
    for (const part of [id, "bot-9", "erin", "$0.6000 of $1", "50%"]) expect(text).toContain(part);
    expect(slack.body.blocks.at(-1).elements[0].url).toBe(web.body.consoleUrl);
    expect(slack.body.text).toContain("Alert");
  });

  it("a failing receiver is retried with backoff without delaying calls, and outcomes are recorded", async () => {
    hook.received = [];
    hook.script = ["hold", 500];
    const id = await open({ notify: [{ webhook: `${hook.url}/flaky` }] });
    const kill = await op(`/v1/sessions/${id}/kill`, { body: { reason: "test" } });
    expect(kill.json.state).toBe("killed");
    await hook.waitFor(1, "/flaky");
    // The first delivery is still held open by the receiver, yet the next call is answered.
    const r = await act(id, { action: "t" });
    expect(r.json.code).toBe("session_killed");
    expect(hook.held).toHaveLength(1);
    hook.held[0](503);
    const got = await hook.waitFor(3, "/flaky");
    expect(got.map((g) => g.body.type)).toEqual(["session.killed", "session.killed", "session.killed"]);
    let deliveries: any[] = [];
    for (let i = 0; i < 50; i++) {
      deliveries = (await op(`/v1/sessions/${id}/deliveries`)).json.deliveries;
      if (deliveries[0]?.done) break;
      await new Promise((x) => setTimeout(x, 100));
    }
    expect(deliveries[0]).toMatchObject({ eventType: "session.killed", target: "webhook", attempts: 3, ok: true, status: 200, done: true });
    // Delivery records name the webhook URLs: operators and auditors only.
    expect((await agent(`/v1/sessions/${id}/deliveries`)).status).toBe(403);
  });
});
