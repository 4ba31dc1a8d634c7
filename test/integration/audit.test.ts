import { importPublicKey, isCheckpointLine, verifyCheckpoint } from "../../lib/checkpoint";
import { reveal } from "../../lib/pii";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Worker } from "node:worker_threads";
import { parse as parseCsv } from "csv-parse/sync";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase } from "../../audit/db";
import { CSV_COLUMNS } from "../../audit/export";
import { eventPage } from "../../audit/query";
import { serve } from "../../audit/serve";
import { checkpointsOf } from "../../audit/checkpoints";
import { AuditStore } from "../../audit/store";
import { TenantSync, type Problem } from "../../audit/sync";
import { verifyChain, type Hashable } from "../../lib/chain";
import type { GovernorEvent } from "../../schema/events";
import type { SessionSummary } from "../../schema/protocol";
import { freshStoreDir } from "../support/audit-template";
import { auditService, caughtUp } from "../support/audit-service";
import { startPostgres } from "../support/postgres";
import { client, freePort, ROOT, startGovernor, TOKENS, type Governor } from "../support/server";
import { startTamperProxy } from "../support/tamper";
import { startUpstream, type Upstream } from "../support/upstream";

// The audit store against a real Governor: the audit service (`npm run audit -- serve`, as
// npm start runs it) follows tenant acme while 50 sessions are driven over HTTP and the
// proxy; it is killed mid-way and restarted; the gateway's /v1/audit routes answer.

// The server's audit CLI, as npm start runs it.
const AUDIT_CLI = ["--import", "tsx", join(ROOT, "audit/cli.ts")];
const SECRET = randomBytes(16).toString("hex");
const run = promisify(execFile);
const SESSIONS = 50;
const ACTIONS = 5;

let up: Upstream;
let gov: Governor;
let auditPort: number;
let auditDir: string;
let storeDir: string;
const op = () => client(gov.url, TOKENS.operator);
const auditor = () => client(gov.url, TOKENS.auditor);

let govUrl: string;
const audit = auditService(() => [...AUDIT_CLI, "--url", govUrl, "--token", TOKENS.auditor, "--tenant", "acme", "serve", "--port", String(auditPort), "--dir", storeDir], { GOVERNOR_AUDIT_SECRET: SECRET });

beforeAll(async () => {
  up = await startUpstream();
  auditPort = await freePort();
  const port = await freePort();
  govUrl = `http://127.0.0.1:${port}`;
  auditDir = mkdtempSync(join(tmpdir(), "governor-audit-"));
  // Side by side: the audit service waits for Governor on its own.
  [gov] = await Promise.all([
    startGovernor({
      port,
      vars: {
        OPENAI_BASE_URL: `${up.url}/v1`,
        OPENAI_API_KEY: "sk-provider-secret",
        GOVERNOR_AUDIT_URL: `http://127.0.0.1:${auditPort}`,
        GOVERNOR_AUDIT_SECRET: SECRET,
      },
    }),
    freshStoreDir(auditDir).then((dir) => {
      storeDir = dir;
      return audit.start();
    }),
  ]);
});

afterAll(async () => {
  await audit.stop();
  await gov?.stop();
  await up?.close();
  if (auditDir) rmSync(auditDir, { recursive: true, force: true });
});

const ids = Array.from({ length: SESSIONS }, (_, i) => `au-${i}`);
const userOf = (i: number) => `user-${i % 5}`;
const agentOf = (i: number) => `agent-${i % 3}`;
const logs = new Map<string, GovernorEvent[]>();
const summaries = new Map<string, SessionSummary>();

async function fullLog(id: string): Promise<GovernorEvent[]> {
  const res = await op()(`/v1/sessions/${id}/log?limit=10000`);
  expect(res.status).toBe(200);
  // The export ends with its signed checkpoint (lib/checkpoint.ts), which is not an event.
  return res.text.trim().split("\n").map((l) => JSON.parse(l)).filter((l) => !isCheckpointLine(l));
}

async function storedEvents(query: string, token: string = TOKENS.auditor): Promise<any[]> {
  const out: any[] = [];
  let cursor = "";
  for (;;) {
    const res = await client(gov.url, token)(`/v1/audit/events?${query}&limit=1000${cursor ? `&cursor=${cursor}` : ""}`);
    expect(res.status, res.text).toBe(200);
    out.push(...res.json.events);
    if (!res.json.nextCursor) return out;
    cursor = res.json.nextCursor;
  }
}

async function drive(i: number, onStep: () => void) {
  const id = ids[i];
  const o = op();
  const agent = client(gov.url, TOKENS.agent);
  const policy = { budget: { session_usd: i % 7 === 0 ? 0.05 : 5 } };
  expect((await o("/v1/sessions", { body: { id, policy, user: userOf(i), agent: agentOf(i) } })).status).toBe(201);
  for (let k = 0; k < ACTIONS; k++) {
    // Every fourth action is a guest's, inside this user's session.
    const body = { action: k % 2 ? "search" : "read_file", costUsd: 0.01 * (1 + (k % 3)), ...(k % 4 === 3 && { user: "guest" }) };
    expect((await agent(`/v1/sessions/${id}/actions`, { body })).status).toBe(200);
    onStep();
    if (k === 2) {
      const headers = { "x-session-id": id, "content-type": "application/json", ...(i % 2 && { "x-user-id": "caller" }) };
      const res = await agent("/v1/proxy/openai/v1/chat/completions", { headers, raw: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: `hello ${i}` }], max_tokens: 20 }) });
      expect([200, 402]).toContain(res.status);
      onStep();
    }
  }
  expect((await agent(`/v1/sessions/${id}/events`, { body: { type: "cost", usd: 0.003 } })).status).toBe(201);
  if (i % 5 === 0) await o(`/v1/sessions/${id}/kill`, { body: { reason: "test over" } });
  if (i % 5 === 1) await o(`/v1/sessions/${id}/close`, { body: {} });
}

describe("audit store following a live Governor", () => {
  it("stores 50 sessions with traffic running, through a crash and a restart: every event once, chains verified", async () => {
    let steps = 0;
    const total = SESSIONS * (ACTIONS + 1);
    let crashed: Promise<void> | undefined;
    const onStep = () => {
      // Half-way through the traffic, the audit service dies without warning.
      if (++steps === Math.floor(total / 2)) {
        crashed = (async () => {
          await audit.stop("SIGKILL");
          await new Promise((r) => setTimeout(r, 300));
          await audit.start();
        })();
      }
    };
    await Promise.all(ids.map((_, i) => drive(i, onStep)));
    expect(crashed).toBeDefined();
    await crashed;
    await caughtUp(auditor());

    for (const s of (await op()("/v1/sessions")).json.sessions as SessionSummary[]) summaries.set(s.session, s);
    for (const id of ids) {
      const log = await fullLog(id);
      logs.set(id, log);
      const stored = await storedEvents(`session=${id}`);
      expect(stored.map((e) => e.seq)).toEqual(log.map((e) => e.seq));
      expect(stored.map((e) => e.event)).toEqual(log);
      expect(verifyChain(stored.map((e) => e.event as Hashable & { hash: string }))).toBeUndefined();
    }
    expect([...logs.values()].reduce((n, l) => n + l.length, 0)).toBeGreaterThan(SESSIONS * (ACTIONS + 2));
  }, 120_000);

  it("has an appended event queryable within a second", async () => {
    const id = ids[3];
    const lags: number[] = [];
    for (let k = 0; k < 3; k++) {
      const res = await client(gov.url, TOKENS.agent)(`/v1/sessions/${id}/actions`, { body: { id: `live-${k}`, action: "search", costUsd: 0 } });
      expect(res.status).toBe(200);
      const appended = Date.now();
      for (;;) {
        const page = await auditor()(`/v1/audit/events?session=${id}&type=action.checked&since=${appended - 60_000}&limit=1000`);
        if (page.json.events.some((e: any) => e.event.data.requestId === `live-${k}`)) break;
        expect(Date.now() - appended).toBeLessThan(1000);
        await new Promise((r) => setTimeout(r, 20));
      }
      lags.push(Date.now() - appended);
    }
    expect(Math.max(...lags)).toBeLessThan(1000);
    logs.set(id, await fullLog(id));
    await caughtUp(auditor());
  });

  it("answers queries by user, agent and time with exactly the matching events", async () => {
    const all = ids.flatMap((id, i) => attributed(logs.get(id)!, userOf(i), agentOf(i)).map((x) => ({ ...x, session: id })));
    const keys = (xs: Array<{ session: string; seq: number }>) => xs.map((x) => `${x.session}#${x.seq}`).sort();
    for (const user of ["user-1", "guest", "caller"]) {
      const want = all.filter((x) => x.user === user);
      expect(want.length).toBeGreaterThan(0);
      expect(keys(await storedEvents(`user=${user}`))).toEqual(keys(want));
    }
    const want = all.filter((x) => x.agent === "agent-2");
    expect(keys(await storedEvents("agent=agent-2"))).toEqual(keys(want));
    const times = all.map((x) => x.ts).sort((a, b) => a - b);
    const since = times[Math.floor(times.length / 4)];
    const until = times[Math.floor((times.length * 3) / 4)];
    const inWindow = all.filter((x) => x.ts >= since && x.ts < until && x.user === "user-2");
    expect(keys(await storedEvents(`user=user-2&since=${since}&until=${until}`))).toEqual(keys(inWindow));
    expect(keys(await storedEvents("user=user-2&since=30d"))).toEqual(keys(all.filter((x) => x.user === "user-2")));
  });

  it("rolls spend up to the sessions' own totals", async () => {
    const spendBy = async (by: string) => (await auditor()(`/v1/audit/spend?by=${by}&since=1d`)).json.rows as Array<{ key: string; spentUsd: number; calls: number }>;
    const bySession = Object.fromEntries((await spendBy("session")).map((r) => [r.key, r.spentUsd]));
    const nanos = (usd: number) => Math.round(usd * 1e9);
    let total = 0;
    for (const id of ids) {
      const s = (await op()(`/v1/sessions/${id}`)).json as SessionSummary;
      expect(nanos(bySession[id] ?? 0)).toBe(nanos(s.spentUsd));
      total += nanos(s.spentUsd);
    }
    for (const by of ["user", "agent", "model", "day"]) {
      expect((await spendBy(by)).reduce((n, r) => n + nanos(r.spentUsd), 0)).toBe(total);
    }
    const models = await spendBy("model");
    expect(models.find((r) => r.key === "gpt-4o-mini")?.spentUsd).toBeGreaterThan(0);
  });

  it("exports CSV that parses back to the NDJSON export's rows", async () => {
    const csvRes = await fetch(`${gov.url}/v1/audit/export?format=csv&user=user-1`, { headers: { authorization: `Bearer ${TOKENS.auditor}` } });
    expect(csvRes.status).toBe(200);
    expect(csvRes.headers.get("content-type")).toMatch(/text\/csv/);
    const records = parseCsv(await csvRes.text(), { columns: true }) as Array<Record<string, string>>;
    const nd = (await auditor()("/v1/audit/export?format=ndjson&user=user-1")).text.trim().split("\n").map((l) => JSON.parse(l));
    expect(records.length).toBe(nd.length);
    expect(Object.keys(records[0])).toEqual([...CSV_COLUMNS]);
    records.forEach((r, i) => {
      expect([r.session, Number(r.seq), Number(r.ts), r.type, r.user, r.hash]).toEqual([nd[i].session, nd[i].seq, nd[i].ts, nd[i].type, nd[i].user, nd[i].hash]);
      expect(Number(r.cost_usd)).toBe(nd[i].costUsd);
      // The data as a person reads it: personal values in place of their commitments.
      expect(JSON.parse(r.data)).toEqual(reveal(nd[i].event.data, nd[i].event.pii));
    });
    const json = (await op()("/v1/audit/export?format=json&user=user-1")).json;
    expect(json).toEqual(nd);
  });

  it("keeps the signed checkpoints it read, verified, and exports them after the events", async () => {
    const id = ids[0];
    const key = await importPublicKey((await auditor()("/v1/checkpoints/key")).text);
    const lines = (await auditor()(`/v1/audit/export?format=ndjson&session=${id}&checkpoints=true`)).text.trim().split("\n").map((l) => JSON.parse(l));
    const checkpoints = lines.filter((l) => isCheckpointLine(l));
    expect(lines.length - checkpoints.length).toBe(logs.get(id)!.length);
    expect(checkpoints.length).toBeGreaterThan(0);
    // The signed lines as the log gave them: each verifies with the deployment's key, the last covers the head.
    for (const c of checkpoints) expect(await verifyCheckpoint(c, key)).toBe(true);
    expect(checkpoints.at(-1).checkpoint).toMatchObject({ tenant: "acme", session: id, seq: logs.get(id)!.length, hash: logs.get(id)!.at(-1)!.hash });
    // Without asking: events only.
    expect((await auditor()(`/v1/audit/export?format=ndjson&session=${id}`)).text.trim().split("\n").every((l) => !isCheckpointLine(JSON.parse(l)))).toBe(true);
    const csv = parseCsv((await auditor()(`/v1/audit/export?format=csv&session=${id}&checkpoints=1`)).text, { columns: true }) as Array<Record<string, string>>;
    expect(csv.filter((r) => r.type === "checkpoint").map((r) => JSON.parse(r.data))).toEqual(checkpoints);
  });

  it("answers the same questions through the governor CLI", async () => {
    const cli = (...args: string[]) => run(process.execPath, [join(ROOT, "sdk/bin/governor.js"), "--url", gov.url, "--token", TOKENS.auditor, "audit", ...args]);
    const page = JSON.parse((await cli("query", "--user", "user-1", "--since", "30d", "--limit", "1000", "--json")).stdout);
    expect(page.events.map((e: any) => `${e.session}#${e.seq}`)).toEqual((await storedEvents("user=user-1&since=30d")).map((e) => `${e.session}#${e.seq}`));
    const file = join(auditDir, "user-1.csv");
    await cli("export", "--format", "csv", "--user", "user-1", "-o", file);
    expect(readFileSync(file, "utf8")).toBe((await auditor()("/v1/audit/export?format=csv&user=user-1")).text);
    const bad = await cli("query", "--since", "yesterday").catch((e) => e);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/since/);
  });

  it("rolls spend up by hour and by minute through the governor CLI, as the console charts it", async () => {
    const cli = (...args: string[]) => run(process.execPath, [join(ROOT, "sdk/bin/governor.js"), "--url", gov.url, "--token", TOKENS.auditor, "audit", ...args]);
    for (const by of ["hour", "minute"]) {
      const rows = JSON.parse((await cli("spend", "--by", by, "--since", "1d", "--json")).stdout);
      expect(rows).toEqual((await auditor()(`/v1/audit/spend?by=${by}&since=1d`)).json);
      expect(rows.rows.length).toBeGreaterThan(0);
      expect(rows.rows.every((r: { key: string }) => new Date(r.key).getTime() % (by === "hour" ? 3_600_000 : 60_000) === 0)).toBe(true);
    }
    const human = (await cli("spend", "--by", "minute", "--since", "1d")).stdout;
    expect(human).toMatch(/^MINUTE\s+SPENT\s+CALLS\n\d{4}-\d\d-\d\dT\d\d:\d\d:00\.000Z\s+\$/);
  });

  it("shows another tenant nothing, refuses agents and anyone without the gateway's secret", async () => {
    const foreign = client(gov.url, TOKENS.foreign);
    for (const path of ["/v1/audit/events", "/v1/audit/events?user=user-1", `/v1/audit/events?session=${ids[0]}`]) {
      const r = await foreign(path);
      expect(r.status).toBe(200);
      expect(r.json.events).toEqual([]);
    }
    expect((await foreign("/v1/audit/spend?by=user")).json.rows).toEqual([]);
    expect((await foreign("/v1/audit/sessions")).json.sessions).toEqual([]);
    expect((await foreign("/v1/audit/export?format=csv")).text.trim()).toBe(CSV_COLUMNS.join(","));
    expect((await foreign("/v1/audit/export?format=ndjson")).text).toBe("");

    const agent = client(gov.url, TOKENS.agent);
    for (const path of ["/v1/audit/events", "/v1/audit/spend?by=user", "/v1/audit/export", "/v1/audit/sessions"]) {
      expect((await agent(path)).status).toBe(403);
      expect((await client(gov.url, "no-such-token")(path)).status).toBe(401);
    }
    expect((await op()("/v1/audit/events?since=yesterday")).json.error).toMatchObject({ code: "bad_request", field: "since" });
    expect((await op()("/v1/audit/events", { method: "DELETE" })).status).toBe(405);

    // The service itself: nothing without the secret, and the tenant comes from the gateway.
    const direct = `http://127.0.0.1:${auditPort}/v1/audit/events`;
    expect((await fetch(direct)).status).toBe(401);
    expect((await fetch(direct, { headers: { "x-governor-audit-secret": "guess", "x-governor-tenant": "acme", "x-governor-role": "auditor" } })).status).toBe(401);
    expect((await fetch(direct, { headers: { "x-governor-audit-secret": SECRET, "x-governor-tenant": "acme", "x-governor-role": "agent" } })).status).toBe(403);
  });

  it("refuses and reports a forged event, stores nothing from it on, and keeps syncing the other sessions", { timeout: 60_000 }, async () => {
    const victim = ids[2];
    // And another session's signed checkpoint with one letter of its signature changed.
    const signedVictim = ids[6];
    const flip = (c: Record<string, unknown>) => {
      const sig = c.sig as string;
      c.sig = `${sig[0] === "A" ? "B" : "A"}${sig.slice(1)}`;
    };
    const proxy = await startTamperProxy(gov.url, { session: victim, seq: 4, edit: (e) => ((e.data as { costUsd: number }).costUsd = 0) }, { session: signedVictim, edit: flip });
    // On Postgres when one can be had: the sync's other engine.
    const pg = await startPostgres();
    if ("skip" in pg) console.warn(`[audit] forged-event sync runs on PGlite only: ${pg.skip}`);
    const scratch = mkdtempSync(join(tmpdir(), "governor-audit-forged-"));
    const store = new AuditStore(await openDatabase("skip" in pg ? { dir: await freshStoreDir(scratch) } : { databaseUrl: await pg.database("forged") }));
    const problems: Problem[] = [];
    // Pages of 3: a session's next page is verified while its previous one is stored, so
    // the forged event (seq 4) arrives while seq 1-3 are being stored.
    const sync = new TenantSync({ store, url: proxy.url, token: TOKENS.auditor, tenant: "acme", pageSize: 3, onProblem: (p) => problems.push(p) });
    try {
      await sync.start();
      await sync.idle();
      const headOf = logs.get(signedVictim)!.length;
      const forgedCheckpoint = { session: signedVictim, seq: headOf, reason: `checkpoint refused: the signature for seq ${headOf} is not valid` };
      expect(problems.sort((a, b) => a.session.localeCompare(b.session))).toEqual([{ session: victim, seq: 4, reason: "hash does not match the event's content" }, forgedCheckpoint].sort((a, b) => a.session.localeCompare(b.session)));
      expect(sync.status().broken).toContainEqual({ session: victim, seq: 4, reason: "hash does not match the event's content" });
      expect(sync.status().broken).toContainEqual(forgedCheckpoint);
      // Its events verified and are stored; the forged checkpoint is not.
      expect((await eventPage(store.db, "acme", { session: signedVictim, limit: 1000 })).events.length).toBe(headOf);
      const kept: unknown[] = [];
      for await (const c of checkpointsOf(store.db, "acme", [signedVictim])) kept.push(c);
      expect(kept).toEqual([]);
      const stored = (await eventPage(store.db, "acme", { session: victim, limit: 1000 })).events.map((e) => e.seq);
      expect(stored).toEqual([1, 2, 3]);
      expect(await store.session("acme", victim)).toMatchObject({ seq: 3, problemSeq: 4, problem: "hash does not match the event's content" });
      for (const id of ids.filter((x) => x !== victim && x !== signedVictim)) {
        const row = await store.session("acme", id);
        expect(row?.seq, id).toBe(logs.get(id)!.length);
        expect(row?.problemSeq).toBeNull();
      }
    } finally {
      await sync.stop();
      await store.close();
      await proxy.close();
      if (!("skip" in pg)) await pg.stop();
      rmSync(scratch, { recursive: true, force: true });
    }
  });

  it("stops following when the store's database thread dies: says why once, no retry loop, idle() rejects instead of waiting forever", { timeout: 60_000 }, async () => {
    const scratch = mkdtempSync(join(tmpdir(), "governor-audit-dead-"));
    const store = new AuditStore(await openDatabase({ dir: await freshStoreDir(scratch) }));
    const logged: string[] = [];
    const failures: Error[] = [];
    const sync = new TenantSync({ store, url: gov.url, token: TOKENS.auditor, tenant: "acme", pageSize: 3, log: (m) => logged.push(m), onFailure: (e) => failures.push(e) });
    try {
      await sync.start();
      const known = sync.status().sessions;
      // The thread ends as a crash inside it would (an abort in PGlite's WebAssembly, out of memory).
      await (store.db as unknown as { $client: { worker: Worker } }).$client.worker.terminate();
      // A session with events to store, whatever the backfill had done before the crash.
      const id = "au-dead-store";
      expect((await op()("/v1/sessions", { body: { id, policy: { budget: { session_usd: 1 } } } })).status).toBe(201);
      expect((await client(gov.url, TOKENS.agent)(`/v1/sessions/${id}/actions`, { body: { action: "search" } })).status).toBe(200);
      for (const end = Date.now() + 10_000; sync.status().sessions === known && Date.now() < end; ) await new Promise((r) => setTimeout(r, 25));
      const outcome = await Promise.race([
        sync.idle().then(
          () => "idle",
          (e: Error) => e,
        ),
        new Promise((r) => setTimeout(() => r("still waiting after 20 s"), 20_000)),
      ]);
      expect(outcome).toBeInstanceOf(Error);
      expect((outcome as { code?: string }).code).toBe("audit_db_thread_stopped");
      expect(failures).toEqual([outcome]);
      // Nothing more is tried: the log stays as it is.
      const said = logged.length;
      await new Promise((r) => setTimeout(r, 1500));
      expect(logged.slice(said)).toEqual([]);
      expect(logged.filter((l) => /retrying/.test(l) && /database thread/.test(l))).toEqual([]);
    } finally {
      await sync.stop();
      await store.close();
      rmSync(scratch, { recursive: true, force: true });
    }
  });

  it("the audit service (serve) reports a store whose database thread died, so its process ends instead of answering errors", { timeout: 60_000 }, async () => {
    const scratch = mkdtempSync(join(tmpdir(), "governor-audit-dead-serve-"));
    const running = await serve({ url: gov.url, targets: [{ tenant: "acme", token: TOKENS.auditor }], secret: SECRET, port: 0, dir: await freshStoreDir(scratch) });
    try {
      await (running.store.db as unknown as { $client: { worker: Worker } }).$client.worker.terminate();
      // Something for its sync to store.
      const id = "au-dead-serve";
      expect((await op()("/v1/sessions", { body: { id, policy: { budget: { session_usd: 1 } } } })).status).toBe(201);
      const outcome = await Promise.race([running.failed, new Promise((r) => setTimeout(() => r("not reported after 20 s"), 20_000))]);
      expect((outcome as { code?: string }).code).toBe("audit_db_thread_stopped");
    } finally {
      await running.stop();
      rmSync(scratch, { recursive: true, force: true });
    }
  });

  it("a service with nothing to write still reports its dead store at once (it answers queries from it)", { timeout: 30_000 }, async () => {
    const scratch = mkdtempSync(join(tmpdir(), "governor-audit-dead-idle-"));
    const running = await serve({ url: gov.url, targets: [], secret: SECRET, port: 0, dir: await freshStoreDir(scratch) });
    try {
      await (running.store.db as unknown as { $client: { worker: Worker } }).$client.worker.terminate();
      const outcome = await Promise.race([running.failed, new Promise((r) => setTimeout(() => r("not reported after 5 s"), 5_000))]);
      expect((outcome as { code?: string }).code).toBe("audit_db_thread_stopped");
    } finally {
      await running.stop();
      rmSync(scratch, { recursive: true, force: true });
    }
  });
});

/** Who each event belongs to, by the documented rules: its own attribution, else its call's, else the session's. */
function attributed(log: GovernorEvent[], sessionUser: string, sessionAgent: string) {
  const calls = new Map<string, { user?: string; agent?: string }>();
  return log.map((e) => {
    // The attribution as the log reveals it (commitments inside the event, values beside it).
    const d = reveal(e.data, e.pii) as { requestId?: string; attribution?: { user?: string; agent?: string } };
    if (e.type === "request.reserved" && d.requestId) calls.set(d.requestId, d.attribution ?? {});
    const own = e.type === "request.settled" && d.requestId ? { ...calls.get(d.requestId), ...stripEmpty(d.attribution) } : d.attribution ?? {};
    return { seq: e.seq, ts: e.ts, user: own.user ?? sessionUser, agent: own.agent ?? sessionAgent };
  });
}

function stripEmpty(a: { user?: string; agent?: string } | undefined) {
  return Object.fromEntries(Object.entries(a ?? {}).filter(([, v]) => v !== undefined));
}
