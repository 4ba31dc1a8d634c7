import { execFile } from "node:child_process";
import { createServer, type Server } from "node:http";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey, type SigningKey } from "../../lib/checkpoint";
import { WhatIfReport } from "../../schema/whatif";
import { client, freePort, ROOT, START_TIMEOUT_MS, startGovernor, TOKENS, type Governor } from "../support/server";
import { startUpstream, type Upstream } from "../support/upstream";
import { Socket } from "../support/ws";

// A record that proves itself, against a real server: signed checkpoints at the end of
// every export and on the tail socket, the CLI proving a log with the server's key, a
// recorded runaway decided again under another policy (route and CLI agree), and spans
// arriving at a local OTLP receiver with the GenAI attributes.

const run = promisify(execFile);
let up: Upstream;
let gov: Governor;
let op: ReturnType<typeof client>;
let key: SigningKey;
let jwk: JsonWebKey;
let otlp: Server;
const posts: any[] = [];
let dir: string;

async function governorCli(...args: string[]) {
  try {
    const { stdout, stderr } = await run(process.execPath, [join(ROOT, "sdk/bin/governor.js"), "--url", gov.url, "--token", TOKENS.operator, ...args], { cwd: ROOT });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "governor-proof-"));
  ({ key, jwk } = await generateSigningKey());
  const port = await freePort();
  otlp = createServer((req, res) => {
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      posts.push({ path: req.url, type: req.headers["content-type"], auth: req.headers["x-otel-token"], body: JSON.parse(body) });
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((r) => otlp.listen(port, "127.0.0.1", r));
  up = await startUpstream();
  gov = await startGovernor({
    vars: {
      OPENAI_BASE_URL: `${up.url}/v1`,
      OPENAI_API_KEY: "sk-test",
      GOVERNOR_SIGNING_KEY: JSON.stringify(jwk),
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
      OTEL_EXPORTER_OTLP_HEADERS: "x-otel-token=secret%20one",
      OTEL_BSP_SCHEDULE_DELAY: "100",
    },
  });
  op = client(gov.url, TOKENS.operator);
});
afterAll(async () => {
  await gov?.stop();
  await up?.close();
  await new Promise((r) => otlp?.close(r));
  rmSync(dir, { recursive: true, force: true });
});

let n = 0;
async function session(policy: unknown) {
  const id = `pr-${Date.now().toString(36)}-${n++}`;
  expect((await op("/v1/sessions", { body: { id, policy, agent: "support-bot" } })).status).toBe(201);
  return id;
}
const openai = (id: string) => new OpenAI({ apiKey: TOKENS.agent, baseURL: `${gov.url}/v1/proxy/openai/v1`, maxRetries: 0, defaultHeaders: { "X-Session-ID": id, "X-User-ID": "u-7" } });
const grow = (k: number) => "context ".repeat(50 * 2 ** k);

async function settled(id: string) {
  for (let i = 0; i < 100; i++) {
    const s = (await op(`/v1/sessions/${id}`)).json;
    if (!s.reservations.length) return s;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("reservations never settled");
}

function spansOf(session: string) {
  const out: any[] = [];
  for (const p of posts) for (const rs of p.body.resourceSpans) for (const ss of rs.scopeSpans) for (const s of ss.spans) {
    const attrs = Object.fromEntries(s.attributes.map((a: any) => [a.key, Object.values(a.value)[0]]));
    if (attrs["gen_ai.conversation.id"] === session) out.push({ ...s, attrs, resource: Object.fromEntries(rs.resource.attributes.map((a: any) => [a.key, Object.values(a.value)[0]])) });
  }
  return out;
}

async function waitSpans(session: string, pred: (spans: any[]) => boolean) {
  for (let i = 0; i < 100; i++) {
    const s = spansOf(session);
    if (pred(s)) return s;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`spans never arrived: ${JSON.stringify(spansOf(session).map((s) => s.name))}`);
}

describe("signed checkpoints", () => {
  it("the log export ends with the signed head; the key route serves the key it verifies with; the CLI proves it", async () => {
    const id = await session({ budget: { session_usd: 1 } });
    for (let i = 0; i < 3; i++) await op(`/v1/sessions/${id}/actions`, { body: { action: "search", costUsd: 0.1 } });
    const k = await op("/v1/checkpoints/key");
    expect(k.status).toBe(200);
    expect(k.json).toMatchObject({ alg: "Ed25519", kid: key.kid, x: key.x, source: "env", jwk: { kty: "OKP", crv: "Ed25519", x: key.x } });
    // Any valid token may read the public key; none may not.
    expect((await client(gov.url, TOKENS.agent)("/v1/checkpoints/key")).status).toBe(200);
    expect((await client(gov.url, "nope-nope-nope")("/v1/checkpoints/key")).status).toBe(401);

    const lines = (await op(`/v1/sessions/${id}/log`)).text.trim().split("\n").map((l) => JSON.parse(l));
    const last = lines.at(-1);
    expect(last).toMatchObject({ checkpoint: { tenant: "acme", session: id, seq: lines.length - 1, hash: lines.at(-2).hash }, alg: "Ed25519", kid: key.kid });
    expect(lines[0].data.signingKid).toBe(key.kid);
    // A page that does not reach the head carries no checkpoint.
    expect((await op(`/v1/sessions/${id}/log?limit=2`)).text.trim().split("\n").map((l) => JSON.parse(l)).every((l) => l.type)).toBe(true);

    const cli = await governorCli("--json", "replay", "--session", id);
    expect(cli.code, cli.stderr).toBe(0);
    expect(JSON.parse(cli.stdout)).toMatchObject({ ok: true, checkpoint: { seq: lines.length - 1, kid: key.kid }, warnings: [] });
    // The same export as a file, cut short: the signed head names the missing tail.
    const file = join(dir, "cut.ndjson");
    writeFileSync(file, `${[...lines.slice(0, -2), last].map((l) => JSON.stringify(l)).join("\n")}\n`);
    const cut = await governorCli("replay", file);
    expect(cut.code).toBe(1);
    expect(cut.stdout).toMatch(new RegExp(`missing tail after seq ${lines.length - 2}`));
  });

  it("tail subscribers get checkpoints: after a backfill, and when the session ends", async () => {
    const id = await session({});
    await op(`/v1/sessions/${id}/actions`, { body: { action: "search" } });
    await op(`/v1/sessions/${id}/log`); // an export signs the head
    const ws = await Socket.open(`${gov.wsUrl}/parties/session/acme:${id}?token=${TOKENS.auditor}&after=0`);
    try {
      await ws.waitFor((m) => m.some((x) => x.type === "checkpoint"));
      expect(ws.of("checkpoint")[0]).toMatchObject({ checkpoint: { session: id, seq: 2 }, kid: key.kid });
      await op(`/v1/sessions/${id}/kill`, { body: { reason: "enough" } });
      await ws.waitFor((m) => m.filter((x) => x.type === "checkpoint").length === 2);
      expect(ws.of("checkpoint")[1]).toMatchObject({ checkpoint: { seq: 3, hash: ws.of("event").at(-1).event.hash } });
    } finally {
      ws.close();
    }
  });

  it("a busy session is signed at least every 256 events, without an export or an end", async () => {
    const id = await session({});
    const ws = await Socket.open(`${gov.wsUrl}/parties/session/acme:${id}?token=${TOKENS.operator}&tail=1`);
    try {
      for (let i = 0; i < 260; i++) ws.send({ type: "check", id: `c${i}`, action: "search" });
      await ws.waitFor((m) => m.some((x) => x.type === "checkpoint"), 20_000);
      const [c] = ws.of("checkpoint");
      expect(c.checkpoint.seq).toBeGreaterThanOrEqual(256);
      expect(c.checkpoint.hash).toBe(ws.of("event").find((x) => x.event.seq === c.checkpoint.seq).event.hash);
    } finally {
      ws.close();
    }
  });
});

describe("what-if replay of a recorded runaway", () => {
  it("under runaway.on_detect: kill it names the call that would have killed it and the dollars saved; under its own policy, nothing differs", async () => {
    const id = await session({ budget: { session_usd: 20 } });
    const c = openai(id);
    for (let k = 0; k < 6; k++) await c.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: grow(k) }], max_tokens: 20 });
    const s = await settled(id);
    expect(s.state).toBe("alerting");
    const log = (await op(`/v1/sessions/${id}/log`)).text.trim().split("\n").map((l) => JSON.parse(l));
    const calls = log.filter((e) => e.type === "request.reserved");
    const cost = (rid: string) => log.filter((e) => e.type === "request.settled" && e.data.requestId === rid).reduce((a, e) => a + e.data.costUsd, 0);
    const saved = calls.slice(3).reduce((a, e) => a + cost(e.data.requestId), 0);

    const res = await op(`/v1/sessions/${id}/what-if`, { raw: "runaway:\n  on_detect: kill\n", headers: { "content-type": "application/yaml" } });
    expect(res.status, res.text).toBe(200);
    expect(res.json).toMatchObject({ ok: true, checkpoint: { kid: key.kid } });
    const w = WhatIfReport.parse(res.json.whatIf);
    expect(w.whatIf.killed).toMatchObject({ seq: calls[3].seq, requestId: calls[3].data.requestId, rule: "runaway", subject: "openai gpt-4o-mini" });
    expect(w.savedUsd).toBeCloseTo(saved, 9);
    expect(w.whatIf.spentUsd + w.savedUsd).toBeCloseTo(s.spentUsd, 9);
    expect(w.differences.map((d) => d.requestId)).toEqual(calls.slice(3).map((e) => e.data.requestId));

    // The CLI prints the same JSON the route answers.
    const file = join(dir, "kill.yaml");
    writeFileSync(file, "runaway:\n  on_detect: kill\n");
    const cli = await governorCli("--json", "replay", "--session", id, "--policy", file);
    expect(cli.code, cli.stderr).toBe(0);
    expect(JSON.parse(cli.stdout)).toEqual(res.json);
    const human = await governorCli("replay", "--session", id, "--policy", file);
    expect(human.stdout).toMatch(new RegExp(`what-if:\\s+killed, killed at seq ${calls[3].seq} \\(${calls[3].data.requestId}, openai gpt-4o-mini\\) by policy, rule runaway`));
    expect(human.stdout).toMatch(/: saved \$0\.\d+/);

    const own = await op(`/v1/sessions/${id}/what-if`, { body: {} });
    expect(own.json.whatIf).toMatchObject({ differences: [], unknown: [], savedUsd: 0, whatIf: { state: "alerting" } });
  });

  it("the route checks its caller, its mode and its policy", async () => {
    const id = await session({});
    expect((await client(gov.url, TOKENS.agent)(`/v1/sessions/${id}/what-if`, { body: {} })).status).toBe(403);
    expect((await client(gov.url, TOKENS.auditor)(`/v1/sessions/${id}/what-if`, { body: {} })).status).toBe(200);
    const bad = await op(`/v1/sessions/${id}/what-if`, { body: { runaway: { on_detect: "explode" } } });
    expect(bad.status).toBe(400);
    expect(bad.json.error.field).toBe("policy.runaway.on_detect");
    expect((await op(`/v1/sessions/${id}/what-if?mode=sideways`, { body: {} })).json.error.field).toBe("mode");
    expect((await op(`/v1/sessions/nope-${n}/what-if`, { body: {} })).status).toBe(404);
    expect((await op(`/v1/sessions/${id}/what-if`, { method: "POST" })).status).toBe(400);
    expect((await op(`/v1/sessions/${id}/what-if`, { method: "GET" })).status).toBe(405);
  });
});

describe("OpenTelemetry", () => {
  it("proxied calls, action checks, approvals and kills arrive as GenAI spans at the OTLP endpoint", async () => {
    const id = await session({ budget: { session_usd: 5 }, actions: { deny: ["drop_db"], rules: { refund: { amount: { require_approval_above: 100 } } } } });
    const data = await openai(id).chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hello there" }], max_tokens: 20 });
    await settled(id);
    await op(`/v1/sessions/${id}/actions`, { body: { action: "search", costUsd: 0.01 } });
    await op(`/v1/sessions/${id}/actions`, { body: { action: "drop_db" } });
    const review = (await op(`/v1/sessions/${id}/actions`, { body: { action: "refund", args: { amount: 500 }, costUsd: 0.5 } })).json;
    expect(review.decision).toBe("review");
    await op(`/v1/sessions/${id}/approvals/${review.approvalId}`, { body: { decision: "approve", note: "ok" } });
    await op(`/v1/sessions/${id}/kill`, { body: { reason: "test over" } });

    const spans = await waitSpans(id, (s) => s.some((x) => x.name.startsWith("invoke_agent")));
    expect(posts[0]).toMatchObject({ path: "/v1/traces", type: "application/json", auth: "secret one" });
    const byName = (name: string) => spans.filter((s) => s.name === name);
    const traceIds = new Set(spans.map((s) => s.traceId));
    expect(traceIds.size).toBe(1);
    expect([...traceIds][0]).toMatch(/^[0-9a-f]{32}$/);

    const [chat] = byName("chat gpt-4o-mini");
    expect(chat.kind).toBe(3);
    expect(chat.attrs).toMatchObject({
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": "openai",
      "gen_ai.request.model": "gpt-4o-mini",
      "gen_ai.request.max_tokens": "20",
      "gen_ai.usage.input_tokens": String(data.usage!.prompt_tokens),
      "gen_ai.usage.output_tokens": String(data.usage!.completion_tokens),
      "gen_ai.conversation.id": id,
      "governor.decision": "allow",
      "governor.outcome": "completed",
      "governor.user": "u-7",
    });
    expect(chat.attrs["governor.cost_usd"]).toBeGreaterThan(0);
    expect(BigInt(chat.endTimeUnixNano)).toBeGreaterThanOrEqual(BigInt(chat.startTimeUnixNano));
    expect(chat.resource["service.name"]).toBe("governor");

    const [search] = byName("execute_tool search");
    expect(search.kind).toBe(1);
    expect(search.attrs).toMatchObject({ "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search", "governor.decision": "allow", "governor.cost_usd": 0.01 });
    const [dropped] = byName("execute_tool drop_db");
    expect(dropped.attrs).toMatchObject({ "governor.decision": "deny", "governor.rule": "actions.deny", "governor.code": "policy_violation", "error.type": "policy_violation" });
    expect(dropped.status).toMatchObject({ code: 2 });
    const [refund] = byName("execute_tool refund");
    expect(refund.attrs).toMatchObject({ "governor.decision": "review", "governor.rule": "actions.rules.refund.amount.require_approval_above" });
    const [approval] = byName("approval refund");
    expect(approval.parentSpanId).toBe(refund.spanId);
    expect(approval.attrs).toMatchObject({ "governor.decision": "approved", "governor.decided_by": "alice", "governor.cost_usd": 0.5 });
    const [kill] = byName(`kill ${id}`);
    expect(kill.attrs).toMatchObject({ "governor.decision": "kill", "governor.reason": "test over", "governor.decided_by": "alice" });
    const [root] = byName("invoke_agent support-bot");
    expect(root.attrs).toMatchObject({ "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support-bot", "governor.state": "killed" });
    for (const s of [chat, search, dropped, refund, kill]) expect(s.parentSpanId).toBe(root.spanId);
  });
});

describe("a local key", () => {
  // Two server starts in the test body, each budgeted like a hook's (START_TIMEOUT_MS).
  it("is made on the first start, kept with the state across a restart, and verifies logs signed before it", { timeout: 30_000 + 2 * START_TIMEOUT_MS }, async () => {
    const local = await startGovernor();
    let restarted: Governor | undefined;
    try {
      const lop = client(local.url, TOKENS.operator);
      const k1 = (await lop("/v1/checkpoints/key")).json;
      expect(k1).toMatchObject({ alg: "Ed25519", source: "generated" });
      expect(local.output()).toContain(`made a checkpoint signing key, kept with the state (kid ${k1.kid})`);
      expect((await lop("/v1/sessions", { body: { id: "keep", policy: {} } })).status).toBe(201);
      const exported = (await lop("/v1/sessions/keep/log")).text;
      await local.stop({ keepStorage: true });
      restarted = await startGovernor({ persist: local.persist, port: local.port });
      const k2 = (await client(restarted.url, TOKENS.operator)("/v1/checkpoints/key")).json;
      expect(k2.kid).toBe(k1.kid);
      const file = join(dir, "before-restart.ndjson");
      writeFileSync(file, exported);
      const r = await run(process.execPath, [join(ROOT, "sdk/bin/governor.js"), "--url", restarted.url, "--token", TOKENS.operator, "replay", file], { cwd: ROOT });
      expect(r.stdout).toMatch(new RegExp(`signed head seq 1 \\(key ${k1.kid}`));
    } finally {
      await restarted?.stop();
      await local.stop();
      rmSync(local.persist, { recursive: true, force: true });
    }
  });
});
