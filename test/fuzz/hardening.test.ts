import { execFileSync } from "node:child_process";
import http from "node:http";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WS from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_SOCKET_MESSAGE_BYTES } from "../../lib/limits";
import { MAX_EVENT_USD, MAX_SESSION_USD } from "../../lib/money";
import { auditNdjson } from "../../sdk/audit";
import { processGroupCpuMs } from "../support/cpu";
import { client, startGovernor, TOKENS, type Governor } from "../support/server";
import { Socket } from "../support/ws";

// One agent cannot hurt anyone else, and the kill switch always works: the targeted
// checks, against a real server (the random ones are in fuzz.test.ts).

let gov: Governor;
let op: ReturnType<typeof client>;
let agent: ReturnType<typeof client>;
let auditor: ReturnType<typeof client>;

beforeAll(async () => {
  gov = await startGovernor();
  op = client(gov.url, TOKENS.operator);
  agent = client(gov.url, TOKENS.agent);
  auditor = client(gov.url, TOKENS.auditor);
});
afterAll(async () => {
  await gov?.stop();
});

let n = 0;
const sid = (p: string) => `${p}-${Date.now().toString(36)}-${n++}`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function open(id: string, policy: unknown = {}) {
  const res = await op("/v1/sessions", { body: { id, policy } });
  expect(res.status).toBe(201);
}

async function seqOf(id: string): Promise<number> {
  return (await op(`/v1/sessions/${id}`)).json.seq;
}

describe("patterns cannot stall the server", () => {
  it("a nested quantifier against a long adversarial argument answers within 50 ms, and other sessions are not delayed", async () => {
    const evil = sid("redos");
    const other = sid("bystander");
    await open(evil, { actions: { rules: { "*": { "*": { pattern: "^(a+)+$" } } } } });
    await open(other);
    const arg = `${"a".repeat(40_000)}!`;
    const attack = async () => {
      const r = await agent(`/v1/sessions/${evil}/actions`, { body: { action: "search", args: { q: arg } } });
      expect(r.json).toMatchObject({ decision: "deny", rule: "actions.rules.*.*.pattern" });
    };
    // Warm-up, not measured: the first checks compile the pattern and the code paths they take.
    for (let i = 0; i < 3; i++) await attack();

    // "Answers within 50 ms" is measured as the server's CPU time per answer (workerd and
    // partykit, from /proc), averaged over 15 answers sent one at a time: a backtracking engine
    // spends seconds to minutes of CPU on this input, and CPU time is what other processes on
    // a loaded machine do not add to. Wall time there is mostly waiting for a core (at a load
    // average of 12 on two cores these answers took a median 76 ms of wall time for about 9 ms of
    // CPU; see test/support/cpu.ts); it is printed with a failure for context. No single
    // answer may take 250 ms, so one long stall cannot hide in the average.
    const cpu: number[] = [];
    const wall: number[] = [];
    for (let i = 0; i < 15; i++) {
      const [c, t] = [processGroupCpuMs(gov.pid), performance.now()];
      await attack();
      wall.push(performance.now() - t);
      cpu.push(processGroupCpuMs(gov.pid) - c);
    }
    const context = `CPU ms per answer ${cpu.join(" ")}; wall ms ${wall.map((x) => x.toFixed(0)).join(" ")}`;
    expect(cpu.reduce((a, b) => a + b, 0) / cpu.length, context).toBeLessThan(50);
    expect(Math.max(...cpu), context).toBeLessThan(250);

    // The bystander's latency alone and while the attack runs, interleaved in rounds so that the
    // machine's load, which drifts, weighs on both alike. The attack and the bystander share the
    // isolate's one thread, so taking turns with an attacker that never pauses may double a
    // request's time (on a loaded machine that doubling alone exceeded a fixed +25 ms); a
    // pattern that stalls the thread holds every other session for the whole match (~40 s in
    // the report that led to this test). A single long answer is what the CPU bound above rules out.
    const probe = async (k: number) => {
      const out: number[] = [];
      for (let i = 0; i < k; i++) {
        const t = performance.now();
        expect((await agent(`/v1/budget-check?session=${other}`)).status).toBe(200);
        out.push(performance.now() - t);
      }
      return out;
    };
    const alone: number[] = [];
    const during: number[] = [];
    for (let round = 0; round < 4; round++) {
      alone.push(...(await probe(5)));
      let attacking = true;
      const attacks = (async () => {
        while (attacking) await attack();
      })();
      during.push(...(await probe(5)));
      attacking = false;
      await attacks;
    }
    const latencies = `alone ${alone.map((x) => x.toFixed(0)).join(" ")}; during ${during.map((x) => x.toFixed(0)).join(" ")}`;
    expect(median(during), latencies).toBeLessThan(2 * median(alone) + 25);
  });

  it("a policy whose pattern RE2 cannot run is refused with 400 naming the field", async () => {
    for (const pattern of ["^(?=AB)[A-Z]+$", "(a)\\1", ".{999}.{999}"]) {
      const r = await op("/v1/sessions", { body: { id: sid("re2"), policy: { actions: { rules: { refund: { account: { pattern } } } } } } });
      expect(r.status).toBe(400);
      expect(r.json.error.field).toBe("policy.actions.rules.refund.account.pattern");
    }
  });
});

describe("the kill switch", () => {
  it("a kill whose reason ends in half an emoji kills, and says the reason was replaced", async () => {
    const id = sid("kill-lone");
    await open(id);
    const r = await op(`/v1/sessions/${id}/kill`, { raw: '{"reason":"runaway agent \\ud83d"}', headers: { "content-type": "application/json" } });
    expect(r.status).toBe(200);
    expect(r.json.state).toBe("killed");
    expect(r.json.killed.reason).toBe("runaway agent \ufffd");
    expect(r.json.reasonReplaced).toMatch(/surrogate/);
    expect((await agent(`/v1/sessions/${id}/actions`, { body: { action: "search" } })).json).toMatchObject({ decision: "deny", code: "session_killed" });
    const log = await op(`/v1/sessions/${id}/log`);
    const killEvent = log.text.trim().split("\n").map((l) => JSON.parse(l)).find((e) => e.type === "session.killed");
    expect(killEvent).toMatchObject({ type: "session.killed", data: { by: "alice", replaced: expect.stringMatching(/surrogate/) } });
    expect(auditNdjson(log.text).ok).toBe(true);
  });

  it("a kill with a body that is not JSON, not an object, or too large still kills", async () => {
    for (const raw of ["{not json", "[1,2]", '{"reason": 42, "extra": true}', JSON.stringify({ reason: "x".repeat(2_000_000) })]) {
      const id = sid("kill-junk");
      await open(id);
      const r = await op(`/v1/sessions/${id}/kill`, { raw, headers: { "content-type": "application/json" } });
      expect(r.status, raw.slice(0, 40)).toBe(200);
      expect(r.json.state).toBe("killed");
      expect(r.json.reasonReplaced).toBeTruthy();
    }
  });

  it("a socket kill with a lone surrogate in its reason kills", async () => {
    const id = sid("kill-ws");
    await open(id);
    const s = await Socket.open(`${gov.wsUrl}/parties/session/acme:${id}?token=${TOKENS.operator}`);
    s.send('{"type":"kill","reason":"stop \\udead now"}');
    const msgs = await s.waitFor((m) => m.some((x) => x.type === "state" && x.summary.state === "killed"));
    expect(msgs.find((x) => x.type === "state" && x.summary.state === "killed").summary.killed.reason).toBe("stop \ufffd now");
    s.close();
  });
});

describe("malformed requests get a 4xx", () => {
  it("malformed percent-encoding, unknown methods, compressed and non-UTF-8 bodies", async () => {
    expect((await op("/v1/sessions/%E0%A4%A")).status).toBe(400);
    expect((await op("/v1/sessions/%E0%A4%A")).json.error.field).toBe("path");
    expect((await op("/v1/sessions/%E0%A4%A/log")).status).toBe(400);
    expect((await op("/v1/sessions", { method: "DELETE" })).status).toBe(405);
    expect((await op("/v1/policy", { method: "PATCH", raw: "{}" })).status).toBe(405);
    expect((await op("/party/anything")).status).toBe(404);
    expect((await op("/v1/sessions/x/log/extra/segments")).status).toBe(404);
    const gz = await fetch(`${gov.url}/v1/sessions`, { method: "POST", headers: { authorization: `Bearer ${TOKENS.operator}`, "content-encoding": "gzip" }, body: new Uint8Array([0x1f, 0x8b, 8, 0]) });
    expect(gz.status).toBe(415);
    const latin1 = await fetch(`${gov.url}/v1/sessions`, { method: "POST", headers: { authorization: `Bearer ${TOKENS.operator}` }, body: new Uint8Array([0x7b, 0x22, 0x69, 0x64, 0x22, 0x3a, 0x22, 0xe9, 0x22, 0x7d]) });
    expect(latin1.status).toBe(400);
    expect(((await latin1.json()) as any).error.message).toMatch(/UTF-8/);
  });

  it("a lone surrogate anywhere in a body or a too-long attribution header is a 400 naming it, and leaves the log as it was", async () => {
    const id = sid("text");
    await open(id);
    const before = await seqOf(id);
    const r = await agent(`/v1/sessions/${id}/actions`, { raw: '{"action":"search","args":{"note":{"deep":["ok","half \\ud83d"]}}}', headers: { "content-type": "application/json" } });
    expect(r.status).toBe(400);
    expect(r.json.error.field).toBe("args.note.deep.1");
    const h = await agent(`/v1/sessions/${id}/actions`, { body: { action: "search" }, headers: { "x-user-id": "u".repeat(2000) } });
    expect(h.status).toBe(400);
    expect(h.json.error.field).toBe("X-User-ID");
    const y = await op("/v1/sessions", { raw: 'id: yaml-bad\nagent: "a\\ud800"\n', headers: { "content-type": "application/yaml" } });
    expect(y.status).toBe(400);
    expect(y.json.error.field).toBe("agent");
    const p = await op("/v1/policy", { method: "PUT", raw: '{"actions":{"deny":["x\\udfff"]}}', headers: { "content-type": "application/json" } });
    expect(p.status).toBe(400);
    expect(await seqOf(id)).toBe(before);
  });

  it("a keep-alive client gets a 401 and then a 200 on the same connection", async () => {
    const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const request = (token: string, body: string) =>
      new Promise<{ status: number; reused: boolean }>((ok, fail) => {
        const req = http.request(`${gov.url}/v1/sessions`, { method: "POST", agent: keepAlive, headers: { authorization: `Bearer ${token}`, "content-type": "application/json" } }, (res) => {
          res.resume();
          res.on("end", () => ok({ status: res.statusCode!, reused: req.reusedSocket }));
        });
        req.on("error", fail);
        req.end(body);
      });
    try {
      const id = sid("keepalive");
      const refused = await request("not-a-token", JSON.stringify({ id, pad: "x".repeat(100_000) }));
      expect(refused.status).toBe(401);
      const accepted = await request(TOKENS.operator, JSON.stringify({ id }));
      expect(accepted.status).toBe(201);
      expect(accepted.reused).toBe(true);
    } finally {
      keepAlive.destroy();
    }
  });
});

describe("money is bounded", () => {
  it("refuses costs past the per-event maximum and sessions past the per-session maximum; numbers stay numbers", async () => {
    const id = sid("money");
    await open(id);
    const huge = await agent(`/v1/sessions/${id}/actions`, { body: { action: "a", costUsd: 1e300 } });
    expect(huge.status).toBe(400);
    expect(huge.json.error.field).toBe("costUsd");
    expect((await agent(`/v1/sessions/${id}/events`, { body: { type: "cost", usd: 1e300 } })).status).toBe(400);
    for (let i = 0; i < MAX_SESSION_USD / MAX_EVENT_USD; i++) {
      expect((await agent(`/v1/sessions/${id}/actions`, { body: { action: "a", costUsd: MAX_EVENT_USD } })).json.decision).toBe("allow");
    }
    const over = await agent(`/v1/sessions/${id}/actions`, { body: { action: "a", costUsd: 0.01 } });
    expect(over.json).toMatchObject({ decision: "deny", code: "budget_exceeded", rule: "max_session_usd" });
    const report = await agent(`/v1/sessions/${id}/events`, { body: { type: "cost", usd: 1 } });
    expect(report.status).toBe(400);
    const s = (await op(`/v1/sessions/${id}`)).json;
    expect(s.spentUsd).toBe(MAX_SESSION_USD);
    expect(s.remainingUsd).toBeNull(); // no budget set: unlimited, by the policy
  });
});

describe("sockets", () => {
  it("an oversized message gets an error naming the limit, and the socket stays usable", async () => {
    const id = sid("big-msg");
    await open(id);
    const s = await Socket.open(`${gov.wsUrl}/parties/session/acme:${id}?token=${TOKENS.agent}`);
    s.send({ type: "check", id: "big", action: "a", args: { pad: "x".repeat(MAX_SOCKET_MESSAGE_BYTES) } });
    const err = (await s.waitFor((m) => m.some((x) => x.type === "error"))).find((x) => x.type === "error");
    expect(err).toMatchObject({ code: "payload_too_large", field: "message" });
    expect(err.message).toContain(String(MAX_SOCKET_MESSAGE_BYTES));
    s.send({ type: "check", id: "small", action: "a" });
    expect((await s.waitFor((m) => m.some((x) => x.type === "decision"))).find((x) => x.type === "decision")).toMatchObject({ id: "small", decision: "allow" });
    expect(s.closed).toBe(false);
    s.close();
  });

  it("past 1 MiB the runtime itself closes the socket (1009), naming its limit", async () => {
    const id = sid("huge-msg");
    await open(id);
    const ws = new WS(`${gov.wsUrl}/parties/session/acme:${id}?token=${TOKENS.agent}`);
    await new Promise((r) => ws.once("open", r));
    ws.send(JSON.stringify({ type: "check", id: "x", action: "a", args: { pad: "x".repeat(1_100_000) } }));
    // The close frame arrives at once (the TCP close only after ws's own timeout, so poll).
    const deadline = Date.now() + 5000;
    while (ws.readyState === WS.OPEN && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(ws.readyState).not.toBe(WS.OPEN);
    ws.terminate();
    const said = /1009[\s\S]*Message is too large: \d+ > 1048576/;
    for (let i = 0; i < 50 && !said.test(gov.output()); i++) await new Promise((r) => setTimeout(r, 50));
    expect(gov.output()).toMatch(said);
  });
});

describe("secrets in policies", () => {
  it("agents and auditors see notification URLs masked; operators see them", async () => {
    const secret = "hook-secret-4711";
    const put = await op("/v1/policy", { method: "PUT", body: { notify: [{ webhook: `http://127.0.0.1:9/hook?token=${secret}` }, { slack: `https://hooks.slack.com/services/T/B/${secret}` }] } });
    expect(put.status).toBe(200);
    try {
      expect((await op("/v1/policy")).text).toContain(secret);
      for (const who of [agent, auditor]) {
        const r = await who("/v1/policy");
        expect(r.status).toBe(200);
        expect(r.text).not.toContain(secret);
        expect(r.json.policy.notify[1].slack).toBe("https://hooks.slack.com/***");
      }
      // A kill notifies: the delivery record names its URL, masked for the auditor.
      const id = sid("deliveries");
      await open(id);
      await op(`/v1/sessions/${id}/kill`, { body: { reason: "notify" } });
      let deliveries: any[] = [];
      for (let i = 0; i < 50 && deliveries.length === 0; i++) {
        deliveries = (await op(`/v1/sessions/${id}/deliveries`)).json.deliveries;
        if (!deliveries.length) await new Promise((r) => setTimeout(r, 100));
      }
      expect(JSON.stringify(deliveries)).toContain(secret);
      const seen = await auditor(`/v1/sessions/${id}/deliveries`);
      expect(seen.status).toBe(200);
      expect(seen.json.deliveries.length).toBe(deliveries.length);
      expect(seen.text).not.toContain(secret);
    } finally {
      await op("/v1/policy", { method: "PUT", body: {} });
    }
  });
});

describe("data stored before these rules", () => {
  let old: Governor;
  beforeAll(async () => {
    // A --persist folder written by the code before this change: tenant acme's default
    // holds a lone surrogate and a JavaScript-only pattern; globex has sessions with costs
    // of 1e300 (old-1, killed) and 1e299 (old-2, still open).
    const persist = mkdtempSync(join(tmpdir(), "governor-old-"));
    execFileSync("tar", ["-xzf", join(import.meta.dirname, "../fixtures/pre-issue-8/old-state.tgz"), "-C", persist]);
    old = await startGovernor({ persist });
  });
  afterAll(async () => {
    await old?.stop({ keepStorage: false });
  });

  it("reads, replays and kills still work, and every number is a number", async () => {
    const g = client(old.url, TOKENS.foreign);
    for (const id of ["old-1", "old-2", "old-3"]) {
      const s = await g(`/v1/sessions/${id}`);
      expect(s.status).toBe(200);
      for (const k of ["spentUsd", "reservedUsd"]) expect(Number.isFinite(s.json[k]), `${id}.${k}`).toBe(true);
    }
    const killed = await g("/v1/sessions/old-2/kill", { raw: '{"reason":"cleanup \\ud800"}', headers: { "content-type": "application/json" } });
    expect(killed.status).toBe(200);
    expect(killed.json.state).toBe("killed");
    for (const id of ["old-1", "old-2", "old-3"]) {
      const audit = auditNdjson((await g(`/v1/sessions/${id}/log`)).text);
      if (!audit.ok) throw new Error(`${id}: ${audit.reason}`);
      expect(Number.isFinite(audit.summary.spentUsd)).toBe(true);
    }
    // The old session's JavaScript-only pattern fails closed; the session still answers.
    expect((await g("/v1/sessions/old-3/actions", { body: { action: "x", costUsd: 1 } })).json).toMatchObject({ decision: "allow", spentUsd: 2 });
  });

  it("a stored default that no longer validates is shown, and refuses opens with 409 until an operator replaces it", async () => {
    const o = client(old.url, TOKENS.operator);
    const a = client(old.url, TOKENS.agent);
    const shown = await a("/v1/policy");
    expect(shown.status).toBe(200);
    expect(shown.text).not.toContain("s3cr3t");
    const refused = await a("/v1/sessions", { body: { id: "after-fix" } });
    expect(refused.status).toBe(409);
    expect(refused.json.error.message).toMatch(/default policy/);
    expect((await o("/v1/policy", { method: "PUT", body: { budget: { session_usd: 2 } } })).status).toBe(200);
    expect((await a("/v1/sessions", { body: { id: "after-fix" } })).status).toBe(201);
  });
});
