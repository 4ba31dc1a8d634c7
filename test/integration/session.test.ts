import { isCheckpointLine } from "../../lib/checkpoint";
import { rmSync } from "node:fs";
import { auditEvents } from "../../lib/audit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyChain } from "../../lib/chain";
import { replay, stateOf } from "../../machines/session";
import { summarize } from "../../machines/summary";
import { GovernorEvent } from "../../schema/events";
import { client, START_TIMEOUT_MS, startGovernor, TOKENS, type Governor } from "../support/server";
import { Socket } from "../support/ws";

let gov: Governor;
let op: ReturnType<typeof client>;
let agent: ReturnType<typeof client>;
let auditor: ReturnType<typeof client>;
let foreign: ReturnType<typeof client>;

beforeAll(async () => {
  gov = await startGovernor();
  op = client(gov.url, TOKENS.operator);
  agent = client(gov.url, TOKENS.agent);
  auditor = client(gov.url, TOKENS.auditor);
  foreign = client(gov.url, TOKENS.foreign);
});
afterAll(async () => {
  await gov?.stop();
});

let n = 0;
const sid = (p: string) => `${p}-${Date.now().toString(36)}-${n++}`;

async function open(id: string, policy: unknown = { budget: { session_usd: 1 } }) {
  const res = await op("/v1/sessions", { body: { id, policy, agent: "bot", user: "u1" } });
  expect(res.status).toBe(201);
  return res.json;
}

async function logOf(id: string) {
  const res = await op(`/v1/sessions/${id}/log`);
  expect(res.status).toBe(200);
  // The export ends with its signed checkpoint (lib/checkpoint.ts), which is not an event.
  return res.text.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)).filter((l) => !isCheckpointLine(l)).map((l) => GovernorEvent.parse(l));
}

describe("sessions over HTTP", () => {
  it("opens, acts until the budget refuses, and kills", async () => {
    const id = sid("tour");
    const opened = await open(id);
    expect(opened).toMatchObject({ session: id, state: "active", spentUsd: 0, budgetUsd: 1, remainingUsd: 1 });

    const again = await op("/v1/sessions", { body: { id, policy: { budget: { session_usd: 99 } } } });
    expect(again.status).toBe(200);
    expect(again.json.budgetUsd).toBe(1);

    const decisions = [];
    for (let i = 0; i < 5; i++) {
      const r = await agent(`/v1/sessions/${id}/actions`, { body: { action: "search", costUsd: 0.3 } });
      expect(r.status).toBe(200);
      decisions.push(r.json.decision);
    }
    expect(decisions).toEqual(["allow", "allow", "allow", "deny", "deny"]);
    const refused = await agent(`/v1/sessions/${id}/actions`, { body: { action: "search", costUsd: 0.3 } });
    expect(refused.json).toMatchObject({ decision: "deny", code: "budget_exceeded", rule: "budget.session_usd" });
    expect(refused.json.spentUsd).toBeCloseTo(0.9, 9);

    const check = await agent(`/v1/budget-check?session=${id}`);
    expect(check.json).toMatchObject({ allowed: true, state: "alerting", reservedUsd: 0 });
    expect(check.json.remainingUsd).toBeCloseTo(0.1, 9);

    const killed = await op(`/v1/sessions/${id}/kill`, { body: { reason: "enough" } });
    expect(killed.status).toBe(200);
    expect(killed.json.state).toBe("killed");
    const after = await agent(`/v1/sessions/${id}/actions`, { body: { action: "search", costUsd: 0 } });
    expect(after.json).toMatchObject({ decision: "deny", code: "session_killed" });
    expect((await agent(`/v1/budget-check?session=${id}`)).json.allowed).toBe(false);
  });

  it("an agent closes its session as a normal end; a closed session refuses everything", async () => {
    const id = sid("close");
    await open(id);
    const closed = await agent(`/v1/sessions/${id}/close`, { body: { reason: "task done" } });
    expect(closed.status).toBe(200);
    expect(closed.json.state).toBe("closed");
    expect((await agent(`/v1/sessions/${id}/actions`, { body: { action: "a" } })).json).toMatchObject({ decision: "deny", code: "session_closed" });
    expect((await auditor(`/v1/sessions/${id}/close`, { body: {} })).status).toBe(403);
  });

  it("lists the tenant's sessions with live summaries", async () => {
    const id = sid("listed");
    await open(id);
    await agent(`/v1/sessions/${id}/actions`, { body: { action: "a", costUsd: 0.2 } });
    let found: any;
    for (let i = 0; i < 50 && found?.spentUsd !== 0.2; i++) {
      found = (await op("/v1/sessions")).json.sessions.find((s: any) => s.session === id);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(found).toMatchObject({ session: id, spentUsd: 0.2, agent: "bot", user: "u1", state: "active" });
    expect((await agent("/v1/sessions")).status).toBe(403);
  });

  it("50 concurrent $0.10 actions against $1.00 allow exactly 10", async () => {
    const id = sid("race");
    await open(id);
    const results = await Promise.all(
      Array.from({ length: 50 }, () => agent(`/v1/sessions/${id}/actions`, { body: { action: "t", costUsd: 0.1 } })),
    );
    expect(results.filter((r) => r.json.decision === "allow")).toHaveLength(10);
    expect(results.filter((r) => r.json.code === "budget_exceeded")).toHaveLength(40);
    const s = await op(`/v1/sessions/${id}`);
    expect(s.json.spentUsd).toBe(1);
  });

  it("a retry with the same id is charged once, even when it races the first", async () => {
    const id = sid("idem");
    await open(id);
    const body = { id: "charge-1", action: "t", costUsd: 0.25 };
    const [a, b] = await Promise.all([agent(`/v1/sessions/${id}/actions`, { body }), agent(`/v1/sessions/${id}/actions`, { body })]);
    const c = await agent(`/v1/sessions/${id}/actions`, { body });
    expect([a.json.decision, b.json.decision, c.json.decision]).toEqual(["allow", "allow", "allow"]);
    expect((await op(`/v1/sessions/${id}`)).json.spentUsd).toBe(0.25);
    const cost = { id: "bill-7", type: "cost", usd: 0.05 };
    await agent(`/v1/sessions/${id}/events`, { body: cost });
    await agent(`/v1/sessions/${id}/events`, { body: cost });
    expect((await op(`/v1/sessions/${id}`)).json.spentUsd).toBe(0.3);
  });

  it("exports the log as NDJSON, paged by after=; replay equals the live state", async () => {
    const id = sid("audit");
    await open(id, { budget: { session_usd: 2, alert_at: 0.5 } });
    for (let i = 0; i < 7; i++) await agent(`/v1/sessions/${id}/actions`, { body: { action: "t", costUsd: 0.2 } });
    await agent(`/v1/sessions/${id}/events`, { body: { type: "violation", kind: "pii_blocked" } });
    const events = await logOf(id);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    expect(verifyChain(events)).toBeUndefined();
    const live = (await op(`/v1/sessions/${id}`)).json;
    // The verified replay: its summary shows the personal values the log carries beside it, as the live one does.
    const replayed = auditEvents(events);
    if (!replayed.ok) throw new Error(replayed.reason);
    expect(replayed.summary).toEqual(live);
    // The machine alone folds the commitments: the same state and money either way.
    const folded = summarize(replay(events));
    expect({ ...folded, user: undefined }).toEqual({ ...live, user: undefined });
    expect(folded.user).toMatch(/^c:[0-9a-f]{64}$/);

    const page1 = await auditor(`/v1/sessions/${id}/log?after=0&limit=3`);
    expect(page1.text.trim().split("\n")).toHaveLength(3);
    expect(page1.headers.get("x-governor-next-after")).toBe("3");
    const page2 = await auditor(`/v1/sessions/${id}/log?after=3&limit=1000`);
    expect(JSON.parse(page2.text.split("\n")[0]).seq).toBe(4);
    expect(page2.headers.get("x-governor-next-after")).toBeNull();
    expect((await agent(`/v1/sessions/${id}/log`)).status).toBe(403);

    // One byte changed anywhere in the exported log breaks the chain at that event.
    const lines = (await op(`/v1/sessions/${id}/log`)).text.trim().split("\n");
    const edited = lines.map((l, i) => (i === 4 ? l.replace('"costUsd":0.2', '"costUsd":0.1') : l));
    expect(edited[4]).not.toBe(lines[4]);
    expect(verifyChain(edited.map((l) => JSON.parse(l)))?.seq).toBe(5);
  });

  it("refuses bad input with 400/413 naming the problem, and leaves the log unchanged", async () => {
    const id = sid("bad");
    await open(id);
    const before = (await logOf(id)).length;
    const cases: Array<[string, { raw?: string; body?: unknown; headers?: Record<string, string> }, number, string | RegExp]> = [
      [`/v1/sessions/${id}/actions`, { raw: "{not json", headers: { "content-type": "application/json" } }, 400, /not valid JSON/],
      [`/v1/sessions/${id}/actions`, { body: { action: 42 } }, 400, "action"],
      [`/v1/sessions/${id}/actions`, { body: { action: "a", costUsd: "lots" } }, 400, "costUsd"],
      [`/v1/sessions/${id}/actions`, { body: { action: "a", costUsd: -1 } }, 400, "costUsd"],
      [`/v1/sessions/${id}/events`, { body: { type: "mystery" } }, 400, "type"],
      [`/v1/sessions/${id}/events`, { body: { type: "cost" } }, 400, "usd"],
      [`/v1/sessions/${id}/actions`, { raw: JSON.stringify({ action: "a", args: { blob: "x".repeat(1024 * 1024 + 10) } }), headers: { "content-type": "application/json" } }, 413, /larger than/],
      ["/v1/sessions", { body: { id: "x", policy: { budget: { sesion_usd: 5 } } } }, 400, "policy.budget"],
      ["/v1/sessions", { body: { id: "has:colon" } }, 400, "id"],
    ];
    for (const [path, init, status, field] of cases) {
      const r = await op(path, init);
      expect(r.status, `${path} ${init.raw?.slice(0, 40) ?? JSON.stringify(init.body)}`).toBe(status);
      if (typeof field === "string") expect(r.json.error.field).toContain(field);
      else expect(r.json.error.message).toMatch(field);
    }
    expect(await logOf(id)).toHaveLength(before);
    const missing = await agent(`/v1/sessions/nope-${n++}/actions`, { body: { action: "a" } });
    expect(missing.status).toBe(404);
  });

  it("a foreign tenant's token is refused on every route and socket", async () => {
    const id = sid("private");
    await open(id);
    const routes: Array<[string, unknown?]> = [
      [`/v1/sessions/${id}`],
      [`/v1/budget-check?session=${id}`],
      [`/v1/sessions/${id}/log`],
      [`/v1/sessions/${id}/actions`, { action: "a", costUsd: 0 }],
      [`/v1/sessions/${id}/events`, { type: "cost", usd: 1 }],
      [`/v1/sessions/${id}/kill`, { reason: "x" }],
      [`/v1/sessions/${id}/approvals/apr_1`, { decision: "approve" }],
    ];
    for (const [path, body] of routes) {
      const r = await foreign(path, body === undefined ? {} : { body });
      // The foreign token only ever names its own tenant's rooms: the session is not there.
      expect([403, 404], path).toContain(r.status);
    }
    const listed = await foreign("/v1/sessions");
    expect(listed.json.sessions.some((s: any) => s.session === id)).toBe(false);
    expect((await op(`/v1/sessions/${id}`)).json.spentUsd).toBe(0);
    expect((await op(`/v1/sessions/${id}`)).json.counters.actions).toBe(0);

    await expect(Socket.open(`${gov.wsUrl}/parties/session/acme:${id}?token=${TOKENS.foreign}`)).rejects.toMatchObject({ status: 403 });
    await expect(Socket.open(`${gov.wsUrl}/parties/tenant/acme?token=${TOKENS.foreign}`)).rejects.toMatchObject({ status: 403 });
    await expect(Socket.open(`${gov.wsUrl}/parties/session/acme:${id}?token=wrong-token`)).rejects.toMatchObject({ status: 401 });
    // Extra path segments do not change which room a token may open.
    const sneaky = await Socket.open(`${gov.wsUrl}/parties/session/acme:${id}/globex:x?token=${TOKENS.foreign}`).catch((e) => e);
    expect(sneaky.status).toBe(403);
    const sneakyIndex = await Socket.open(`${gov.wsUrl}/parties/tenant/acme/globex?token=${TOKENS.foreign}`).catch((e) => e);
    expect(sneakyIndex.status).toBe(403);
    // Tokens travel in headers over HTTP; ?token= is for sockets only.
    expect((await fetch(`${gov.url}/v1/sessions/${id}?token=${TOKENS.operator}`)).status).toBe(401);
    const direct = await fetch(`${gov.url}/parties/session/acme:${id}`, { method: "POST", headers: { "x-governor-tenant": "acme" }, body: "{}" });
    expect(direct.status).toBe(404);
    expect((await client(gov.url, "nope")(`/v1/sessions/${id}`)).status).toBe(401);
    expect((await fetch(`${gov.url}/v1/sessions/${id}`)).status).toBe(401);
  });

  it("roles: auditors read but cannot act; agents cannot approve, kill, set a policy or read the tail", async () => {
    const id = sid("roles");
    await open(id);
    expect((await agent("/v1/sessions", { body: { id: sid("agent-open"), policy: { budget: { session_usd: 1e9 } } } })).status).toBe(403);
    expect((await agent("/v1/sessions", { body: { id: sid("agent-open") } })).status).toBe(201);
    const tail = await Socket.open(`${gov.wsUrl}/parties/session/acme:${id}?token=${TOKENS.agent}&after=0`);
    await tail.waitFor((m) => m.some((x) => x.type === "state"));
    expect(tail.of("error")[0]?.code).toBe("forbidden");
    expect(tail.of("event")).toHaveLength(0);
    tail.close();
    expect((await auditor(`/v1/sessions/${id}`)).status).toBe(200);
    expect((await auditor(`/v1/sessions/${id}/actions`, { body: { action: "a" } })).status).toBe(403);
    expect((await agent(`/v1/sessions/${id}/kill`, { body: {} })).status).toBe(403);
    expect((await agent(`/v1/sessions/${id}/approvals/apr_1`, { body: { decision: "approve" } })).status).toBe(403);
  });
});

describe("sessions over WebSocket", () => {
  it("every subscriber receives every state change in order", async () => {
    const id = sid("ws");
    await open(id, { budget: { session_usd: 1, alert_at: 0.5 } });
    const a = await Socket.open(`${gov.wsUrl}/parties/session/acme:${id}?token=${TOKENS.operator}`);
    const b = await Socket.open(`${gov.wsUrl}/parties/session/acme:${id}?token=${TOKENS.auditor}&tail=1`);
    await a.waitFor((m) => m.some((x) => x.type === "state"));
    await b.waitFor((m) => m.some((x) => x.type === "state"));
    for (let i = 0; i < 6; i++) await agent(`/v1/sessions/${id}/actions`, { body: { action: "t", costUsd: 0.1 } });
    await op(`/v1/sessions/${id}/kill`, { body: { reason: "done" } });
    for (const s of [a, b]) {
      await s.waitFor((m) => m.some((x) => x.type === "state" && x.summary.state === "killed"));
      const states = s.of("state");
      const seqs = states.map((x) => x.seq);
      expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
      expect(new Set(seqs).size).toBe(seqs.length);
      expect(states.map((x) => x.summary.state)).toEqual(["active", "active", "active", "active", "active", "active", "alerting", "alerting", "killed"]);
    }
    expect(b.of("event").map((x) => x.event.type)).toContain("alert.raised");
    expect(a.of("event")).toHaveLength(0);
    a.close();
    b.close();
  });

  it("a bad message gets an error message, not a dropped connection; checks are answered", async () => {
    const id = sid("wsbad");
    await open(id);
    const s = await Socket.open(`${gov.wsUrl}/parties/session/acme:${id}?token=${TOKENS.agent}`);
    s.send("{nope");
    s.send({ type: "warp" });
    s.send({ type: "check", id: "c1", action: 5 });
    s.send({ type: "kill", reason: "agent tries" });
    s.send({ type: "check", id: "c2", action: "search", costUsd: 0.5 });
    await s.waitFor((m) => m.some((x) => x.type === "decision"));
    const errors = s.of("error");
    expect(errors).toHaveLength(4);
    expect(errors[0].message).toMatch(/JSON/);
    expect(errors[1].field).toBe("type");
    expect(errors[2]).toMatchObject({ field: "action", id: "c1" });
    expect(errors[3].code).toBe("forbidden");
    expect(s.of("decision")[0]).toMatchObject({ id: "c2", decision: "allow", spentUsd: 0.5, final: true });
    expect(s.closed).toBe(false);
    s.close();
  });
});

describe("durability", () => {
  // Two server starts in the test body, each budgeted like a hook's (START_TIMEOUT_MS).
  it("a restarted server on the same storage keeps every acknowledged event and the same state", { timeout: 30_000 + 2 * START_TIMEOUT_MS }, async () => {
    const g = await startGovernor();
    let again: Governor | undefined;
    try {
      const c = client(g.url, TOKENS.operator);
      const id = sid("restart");
      await c("/v1/sessions", { body: { id, policy: { budget: { session_usd: 100 } } } });
      // More than one snapshot interval, so the wake-up uses snapshot + tail.
      const acks = await Promise.all(Array.from({ length: 300 }, (_, i) => c(`/v1/sessions/${id}/actions`, { body: { id: `a${i}`, action: "t", costUsd: 0.01 } })));
      expect(acks.every((r) => r.json.decision === "allow")).toBe(true);
      const before = (await c(`/v1/sessions/${id}`)).json;
      const logBefore = (await c(`/v1/sessions/${id}/log?limit=10000`)).text;
      await g.stop({ keepStorage: true });

      again = await startGovernor({ persist: g.persist });
      const c2 = client(again.url, TOKENS.operator);
      const after = (await c2(`/v1/sessions/${id}`)).json;
      expect(after).toEqual(before);
      expect(after.spentUsd).toBe(3);
      expect((await c2(`/v1/sessions/${id}/log?limit=10000`)).text).toBe(logBefore);
      // A retry after the restart gets the first answer back and is not charged again.
      const retry = await c2(`/v1/sessions/${id}/actions`, { body: { id: "a0", action: "t", costUsd: 0.01 } });
      expect(retry.json).toEqual(acks[0].json);
      expect((await c2(`/v1/sessions/${id}`)).json.spentUsd).toBe(3);
      const fresh = await c2(`/v1/sessions/${id}/actions`, { body: { action: "t", costUsd: 0.01 } });
      expect(fresh.json.spentUsd).toBe(3.01);
      const events = (await c2(`/v1/sessions/${id}/log?limit=10000`)).text.trim().split("\n").map((l) => JSON.parse(l)).filter((l) => !isCheckpointLine(l)).map((l) => GovernorEvent.parse(l));
      expect(verifyChain(events)).toBeUndefined();
      expect(stateOf(replay(events))).toBe("active");
    } finally {
      // Whatever failed, both servers stop (they run detached) and the storage goes.
      await again?.stop();
      await g.stop();
      rmSync(g.persist, { recursive: true, force: true });
    }
  });
});
