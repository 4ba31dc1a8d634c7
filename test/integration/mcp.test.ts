import { isCheckpointLine } from "../../lib/checkpoint";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError, type CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GovernorEvent } from "../../schema/events";
import { startMcpUpstream, type McpUpstream } from "../support/mcp-upstream";
import { client, ROOT, startGovernor, TOKENS, type Governor } from "../support/server";

// A real MCP client (the official SDK's) against /v1/mcp/<server>, in front of a real
// upstream MCP server written with the same SDK.

const SECRET = "Bearer upstream-secret-4711";

let gov: Governor;
let up: McpUpstream;
let op: ReturnType<typeof client>;
let agent: ReturnType<typeof client>;
const clients: Client[] = [];

beforeAll(async () => {
  [up, gov] = await Promise.all([startMcpUpstream(), startGovernor()]);
  op = client(gov.url, TOKENS.operator);
  agent = client(gov.url, TOKENS.agent);
  const set = await op("/v1/policy", {
    method: "PUT",
    body: { mcp: { servers: { tools: { url: up.url, headers: { authorization: SECRET }, tool_costs: { search: 0.01, refund: 0.25 }, timeout: "2s" } } } },
  });
  expect(set.status).toBe(200);
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
  await Promise.all([gov?.stop(), up?.close()]);
});

let n = 0;
const sid = (p: string) => `${p}-${Date.now().toString(36)}-${n++}`;

const ALLOWED = ["mcp.tools.search", "mcp.tools.refund", "mcp.tools.fail", "mcp.tools.hang"];

async function open(id: string, policy: Record<string, unknown> = {}) {
  const res = await op("/v1/sessions", {
    body: { id, agent: "bot", policy: { actions: { allow: ALLOWED, deny: ["mcp.tools.delete_repo"], rules: { "mcp.tools.refund": { amount: { max: 1000, require_approval_above: 500 } } } }, ...policy } },
  });
  expect(res.status).toBe(201);
}

async function connect(session: string, token: string = TOKENS.agent, server = "tools"): Promise<Client> {
  const c = new Client({ name: "test-agent", version: "1.0.0" });
  await c.connect(new StreamableHTTPClientTransport(new URL(`${gov.url}/v1/mcp/${server}`), { requestInit: { headers: { authorization: `Bearer ${token}`, "x-session-id": session } } }));
  clients.push(c);
  return c;
}

async function logOf(id: string) {
  const res = await op(`/v1/sessions/${id}/log`);
  // The export ends with its signed checkpoint (lib/checkpoint.ts), which is not an event.
  return res.text.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)).filter((l) => !isCheckpointLine(l)).map((l) => GovernorEvent.parse(l));
}

const text = (r: unknown) => ((r as CallToolResult).content[0] as { text: string }).text;
const callsOf = (tool: string) => up.calls.filter((c) => c.tool === tool);

describe("MCP endpoint", () => {
  it("lists only the tools the session's allow and deny lists let through, under mcp.<server>.<tool>", async () => {
    const id = sid("list");
    await open(id);
    const c = await connect(id);
    expect(c.getServerVersion()?.name).toBe("governor/tools");
    expect(c.getInstructions()).toBe("Tools for the Governor tests.");
    // Nothing is pushed outside a request's answer, so no list changes are promised.
    expect(c.getServerCapabilities()).toMatchObject({ tools: { listChanged: false }, resources: { listChanged: false, subscribe: false }, prompts: { listChanged: false } });
    const { tools } = await c.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual([...ALLOWED].sort());
    expect(tools.find((t) => t.name === "mcp.tools.search")?.inputSchema.properties).toHaveProperty("query");
  });

  it("an allowed call returns the upstream's result, charged its tool cost; credentials go upstream, the agent's token does not", async () => {
    const id = sid("allow");
    await open(id);
    const c = await connect(id);
    const before = up.calls.length;
    const r = await c.callTool({ name: "mcp.tools.search", arguments: { query: "governor" } });
    expect(r.isError).toBeFalsy();
    expect(text(r)).toBe("results for governor");
    const seen = up.calls.slice(before);
    expect(seen).toHaveLength(1);
    expect(seen[0].headers.authorization).toBe(SECRET);
    // Nothing the agent sent reaches the upstream.
    for (const h of up.headers) expect(JSON.stringify(h)).not.toContain(TOKENS.agent);
    expect(seen[0].headers["x-session-id"]).toBeUndefined();

    const s = await agent(`/v1/sessions/${id}`);
    expect(s.json.spentUsd).toBeCloseTo(0.01, 9);
    const checked = (await logOf(id)).filter((e) => e.type === "action.checked");
    expect(checked.map((e) => e.data)).toMatchObject([{ action: "mcp.tools.search", decision: "allow", costUsd: 0.01, source: "mcp" }]);

    // The credentials are the operators' alone: masked for agents, absent from the session's log.
    const shown = await agent("/v1/policy");
    expect(shown.text).not.toContain("upstream-secret");
    expect(shown.json.policy.mcp.servers.tools.headers.authorization).toBe("***");
    expect((await op("/v1/policy")).text).toContain("upstream-secret");
    expect((await op(`/v1/sessions/${id}/log`)).text).not.toContain("upstream-secret");

    // `governor show` lists it like any action, with its source.
    const { stdout } = await promisify(execFile)(process.execPath, [join(ROOT, "sdk/bin/governor.js"), "--url", gov.url, "--token", TOKENS.operator, "show", id], { cwd: ROOT });
    expect(stdout).toMatch(/recent actions:\n.*ACTION\s+SOURCE\s+DECISION[^\n]*\n[^\n]*mcp\.tools\.search\s+mcp\s+allow\s+\$0\.01/);
  });

  it("a denied call is a tool error naming the rule, and the upstream never sees it", async () => {
    const id = sid("deny");
    await open(id);
    const c = await connect(id);
    const r = await c.callTool({ name: "mcp.tools.delete_repo", arguments: { name: "prod" } });
    expect(r.isError).toBe(true);
    expect(text(r)).toContain("rule actions.deny");
    expect(r._meta?.governor).toMatchObject({ decision: "deny", code: "policy_violation", rule: "actions.deny" });
    const over = await c.callTool({ name: "mcp.tools.refund", arguments: { amount: 5000, account: "AC1" } });
    expect(over.isError).toBe(true);
    expect(text(over)).toContain("actions.rules.mcp.tools.refund.amount.max");
    expect(callsOf("delete_repo")).toHaveLength(0);
    expect(callsOf("refund").filter((c) => c.args.amount === 5000)).toHaveLength(0);
  });

  it("a call needing approval waits, telling the agent, and proceeds when an operator approves", async () => {
    const id = sid("review");
    await open(id);
    const c = await connect(id);
    const progress: string[] = [];
    const pending = c.callTool({ name: "mcp.tools.refund", arguments: { amount: 700, account: "AC7" } }, undefined, {
      onprogress: (p) => progress.push(p.message ?? ""),
      resetTimeoutOnProgress: true,
    });
    let approvalId: string | undefined;
    for (let i = 0; i < 100 && !approvalId; i++) {
      approvalId = (await op(`/v1/sessions/${id}`)).json.pendingApprovals[0]?.approvalId;
      if (!approvalId) await new Promise((r) => setTimeout(r, 50));
    }
    expect(approvalId).toBeDefined();
    expect(callsOf("refund").filter((x) => x.args.account === "AC7")).toHaveLength(0);
    const decided = await op(`/v1/sessions/${id}/approvals/${approvalId}`, { body: { decision: "approve", note: "ok" } });
    expect(decided.status).toBe(200);
    const r = await pending;
    expect(r.isError).toBeFalsy();
    expect(text(r)).toBe("refunded 700 to AC7");
    expect(callsOf("refund").filter((x) => x.args.account === "AC7")).toHaveLength(1);
    expect(progress.some((m) => m.includes(approvalId!))).toBe(true);
    expect((await op(`/v1/sessions/${id}`)).json.spentUsd).toBeCloseTo(0.25, 9);
  });

  it("a call the agent stops waiting for is withdrawn: never approved, charged or sent upstream", async () => {
    const id = sid("withdraw");
    await open(id);
    const c = await connect(id);
    const stop = new AbortController();
    const pending = c.callTool({ name: "mcp.tools.refund", arguments: { amount: 800, account: "AC8" } }, undefined, { signal: stop.signal });
    let approvalId: string | undefined;
    for (let i = 0; i < 100 && !approvalId; i++) {
      approvalId = (await op(`/v1/sessions/${id}`)).json.pendingApprovals[0]?.approvalId;
      if (!approvalId) await new Promise((r) => setTimeout(r, 50));
    }
    expect(approvalId).toBeDefined();
    stop.abort();
    await expect(pending).rejects.toThrow();
    let left = 1;
    for (let i = 0; i < 100 && left; i++) {
      left = (await op(`/v1/sessions/${id}`)).json.pendingApprovals.length;
      if (left) await new Promise((r) => setTimeout(r, 50));
    }
    expect(left).toBe(0);
    const denied = (await logOf(id)).find((e) => e.type === "approval.denied");
    expect(denied?.data).toMatchObject({ approvalId, by: "agent-1", note: expect.stringContaining("withdrawn") });
    // An operator who approves afterwards gets the decision that stands.
    expect((await op(`/v1/sessions/${id}/approvals/${approvalId}`, { body: { decision: "approve" } })).json).toMatchObject({ decision: "deny" });
    expect(callsOf("refund").filter((x) => x.args.account === "AC8")).toHaveLength(0);
    expect((await op(`/v1/sessions/${id}`)).json.spentUsd).toBe(0);
  });

  it("the 5th identical call trips same_call: 5, and the kill stops the next call before the upstream", async () => {
    const id = sid("loop");
    await open(id, { runaway: { repeat: { same_call: 5, on_detect: "kill" } } });
    const c = await connect(id);
    const query = `loop-${id}`;
    const results = [];
    for (let i = 0; i < 5; i++) results.push(await c.callTool({ name: "mcp.tools.search", arguments: { query } }));
    expect(results.slice(0, 4).every((r) => !r.isError)).toBe(true);
    expect(results[4].isError).toBe(true);
    expect(text(results[4])).toContain("runaway.repeat.same_call");
    const next = await c.callTool({ name: "mcp.tools.search", arguments: { query: "something else" } });
    expect(next.isError).toBe(true);
    expect(next._meta?.governor).toMatchObject({ code: "session_killed", rule: "session.killed" });
    expect(callsOf("search").filter((x) => x.args.query === query)).toHaveLength(4);
    expect(callsOf("search").filter((x) => x.args.query === "something else")).toHaveLength(0);
    const log = await logOf(id);
    expect(log.find((e) => e.type === "anomaly.detected")?.data).toMatchObject({ kind: "repeat_call", rule: "runaway.repeat.same_call", onDetect: "kill", action: "mcp.tools.search", count: 5 });
    expect(log.at(-1)?.type).not.toBe("request.reserved");
    expect((await op(`/v1/sessions/${id}`)).json.state).toBe("killed");
  });

  it("another tenant cannot reach this tenant's servers or sessions", async () => {
    const id = sid("tenant");
    await open(id);
    const foreign = client(gov.url, TOKENS.foreign);
    // globex has no server named "tools"...
    await expect(connect(id, TOKENS.foreign)).rejects.toThrow(/404|no MCP server/);
    // ...and with one of its own by that name, this tenant's session is still out of reach.
    expect((await foreign("/v1/policy", { method: "PUT", body: { mcp: { servers: { tools: { url: up.url } } } } })).status).toBe(200);
    await expect(connect(id, TOKENS.foreign)).rejects.toThrow(/404|no such session/);
    const raw = await foreign("/v1/mcp/tools", {
      headers: { "x-session-id": id, accept: "application/json, text/event-stream" },
      body: { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "mcp.tools.search", arguments: { query: "x" } } },
    });
    const answer = JSON.parse(/^data: (.*)$/m.exec(raw.text)![1]);
    expect(answer.error).toMatchObject({ data: { code: "not_found" } });
    expect(answer.error.message).toMatch(/no such session/);
    expect(callsOf("search").filter((x) => x.args.query === "x")).toHaveLength(0);
  });
});

describe("MCP upstream failures", () => {
  it("passes a tool error through, records it, and catches the same error repeated", async () => {
    const id = sid("errors");
    await open(id, { runaway: { repeat: { same_error: 3, on_detect: "alert" } } });
    const c = await connect(id);
    for (let i = 0; i < 3; i++) {
      const r = await c.callTool({ name: "mcp.tools.fail", arguments: {} });
      expect(r.isError).toBe(true);
      expect(text(r)).toBe("backend exploded");
    }
    const log = await logOf(id);
    const errors = log.filter((e) => e.type === "error.recorded");
    expect(errors).toHaveLength(3);
    expect(errors[0].data).toMatchObject({ source: "tool", action: "mcp.tools.fail", code: "tool_error" });
    expect(JSON.stringify(errors)).not.toContain("backend exploded");
    expect(log.find((e) => e.type === "anomaly.detected")?.data).toMatchObject({ kind: "repeat_error", rule: "runaway.repeat.same_error", onDetect: "alert", count: 3 });
    expect((await op(`/v1/sessions/${id}`)).json.state).toBe("alerting");
  });

  it("a hung upstream times out as an MCP error, not a 500", async () => {
    const id = sid("hang");
    await open(id);
    const c = await connect(id);
    const t0 = Date.now();
    const err = await c.callTool({ name: "mcp.tools.hang", arguments: {} }).catch((e) => e);
    expect(err).toBeInstanceOf(McpError);
    expect(err.message).toMatch(/^MCP error -32001: upstream MCP server "tools" did not answer within 2000 ms/);
    expect(err.message.match(/MCP error/g)).toHaveLength(1);
    expect(Date.now() - t0).toBeLessThan(10_000);
    const log = await logOf(id);
    expect(log.find((e) => e.type === "error.recorded")?.data).toMatchObject({ code: "upstream_timeout", action: "mcp.tools.hang" });
  });

  it("an unreachable upstream is an MCP error at the handshake, recorded, and an agent hammering it is caught by same_error", async () => {
    const id = sid("down");
    await open(id, { runaway: { repeat: { same_error: 3, on_detect: "kill" } } });
    const put = await op("/v1/policy", {
      method: "PUT",
      body: { mcp: { servers: { tools: { url: up.url, headers: { authorization: SECRET }, tool_costs: { search: 0.01, refund: 0.25 }, timeout: "2s" }, down: { url: "http://127.0.0.1:9/mcp", timeout: "2s" } } } },
    });
    expect(put.status).toBe(200);
    const err = await connect(id, TOKENS.agent, "down").catch((e) => e);
    expect(err).toBeInstanceOf(McpError);
    expect(err.message).toMatch(/^MCP error -32603: upstream MCP server "down" is unreachable/);
    expect(err.message.match(/MCP error/g)).toHaveLength(1);
    const first = (await logOf(id)).filter((e) => e.type === "error.recorded");
    expect(first.map((e) => e.data)).toMatchObject([{ source: "tool", action: "mcp.down", code: "upstream_error" }]);

    // An agent that keeps calling the dead server's tool: each call is a JSON-RPC error and
    // an error fact; the third identical one in a row trips same_error and kills the session.
    const call = (k: number) =>
      agent("/v1/mcp/down", {
        headers: { "x-session-id": id, accept: "application/json, text/event-stream" },
        body: { jsonrpc: "2.0", id: k, method: "tools/call", params: { name: "mcp.down.search", arguments: { query: "x" } } },
      });
    for (let k = 1; k <= 3; k++) {
      const r = await call(k);
      expect(r.status).toBe(200);
      expect(r.json).toMatchObject({ jsonrpc: "2.0", id: k, error: { code: -32603, data: { code: "upstream_error", server: "down" } } });
      expect(r.json.error.message).toMatch(/^upstream MCP server "down" is unreachable/);
    }
    const log = await logOf(id);
    expect(log.filter((e) => e.type === "error.recorded").map((e) => e.data)).toMatchObject([
      { action: "mcp.down" },
      ...[1, 2, 3].map(() => ({ source: "tool", action: "mcp.down.search", code: "upstream_error" })),
    ]);
    expect(log.find((e) => e.type === "anomaly.detected")?.data).toMatchObject({ kind: "repeat_error", rule: "runaway.repeat.same_error", onDetect: "kill", count: 3 });
    expect((await op(`/v1/sessions/${id}`)).json.state).toBe("killed");
    // From now on the call is refused as the killed session's, not blamed on the server.
    const after = await call(4);
    expect(after.json.result).toMatchObject({ isError: true, _meta: { governor: { code: "session_killed", rule: "session.killed" } } });
    expect((await logOf(id)).filter((e) => e.type === "error.recorded")).toHaveLength(4);
  });

  it("an error the endpoint itself answers reads 'MCP error <code>: ...' once", async () => {
    const id = sid("prefix");
    await open(id);
    const c = await connect(id);
    const err = await c.callTool({ name: "search", arguments: {} }).catch((e) => e);
    expect(err).toBeInstanceOf(McpError);
    expect(err.message).toMatch(/^MCP error -32602: unknown tool "search": the tools of this endpoint are named mcp\.tools\.<tool>$/);
  });
});

describe("MCP pass-through and bad requests", () => {
  it("relays resources, prompts and ping", async () => {
    const id = sid("pass");
    await open(id);
    const c = await connect(id);
    expect((await c.listResources()).resources.map((r) => r.uri)).toEqual(["doc://readme"]);
    expect((await c.readResource({ uri: "doc://readme" })).contents[0]).toMatchObject({ text: "hello from the upstream" });
    expect((await c.getPrompt({ name: "greet", arguments: { name: "Ada" } })).messages[0].content).toMatchObject({ text: "Hello, Ada" });
    await expect(c.ping()).resolves.toBeDefined();
  });

  it("initializes the upstream once and reuses its session; a session the upstream forgot is replaced without the agent noticing", async () => {
    const id = sid("reuse");
    await open(id);
    const c = await connect(id);
    await c.callTool({ name: "mcp.tools.search", arguments: { query: "warm" } });
    const opened = up.sessionsOpened;
    for (let i = 0; i < 4; i++) await c.callTool({ name: "mcp.tools.search", arguments: { query: `reuse-${i}` } });
    expect(up.sessionsOpened).toBe(opened);
    up.forgetSessions();
    const r = await c.callTool({ name: "mcp.tools.search", arguments: { query: "after-restart" } });
    expect(text(r)).toBe("results for after-restart");
    expect(up.sessionsOpened).toBe(opened + 1);
    expect(callsOf("search").filter((x) => x.args.query === "after-restart")).toHaveLength(1);
  });

  it("names what is wrong: no session, a session never opened, GET, an unknown server, the wrong role", async () => {
    const init = { jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "x", version: "1" } } };
    const accept = { accept: "application/json, text/event-stream" };
    const noSession = await agent("/v1/mcp/tools", { headers: accept, body: init });
    expect(noSession.status).toBe(400);
    expect(noSession.json.error).toMatchObject({ code: -32000, data: { code: "bad_request", field: "X-Session-ID" } });
    const never = await agent("/v1/mcp/tools?session=never-opened", { headers: accept, body: init });
    expect(never.status).toBe(404);
    const get = await agent("/v1/mcp/tools", { headers: { ...accept, "x-session-id": "x" } });
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("POST");
    const unknown = await agent("/v1/mcp/nope", { headers: { ...accept, "x-session-id": "x" }, body: init });
    expect(unknown.status).toBe(404);
    expect(unknown.json.error.message).toContain('no MCP server "nope"');
    const auditor = await client(gov.url, TOKENS.auditor)("/v1/mcp/tools", { headers: { ...accept, "x-session-id": "x" }, body: init });
    expect(auditor.status).toBe(403);
    const badToken = await client(gov.url, "not-a-token")("/v1/mcp/tools", { headers: accept, body: init });
    expect(badToken.status).toBe(401);
    expect(badToken.json.jsonrpc).toBe("2.0");
  });

  it("a session's own policy may not name MCP servers", async () => {
    const res = await op("/v1/sessions", { body: { id: sid("own"), policy: { mcp: { servers: { x: { url: "http://127.0.0.1:1/" } } } } } });
    expect(res.status).toBe(400);
    expect(res.json.error.field).toBe("policy.mcp");
  });
});
