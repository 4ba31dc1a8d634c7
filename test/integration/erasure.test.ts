import { execFile, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { parse as parseCsv } from "csv-parse/sync";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseNdjson } from "../../lib/audit";
import { replayReport, type ReplayOk } from "../../lib/replay";
import { importPublicKey } from "../../lib/checkpoint";
import type { SessionSummary } from "../../schema/protocol";
import { freshStoreDir } from "../support/audit-template";
import { auditService, caughtUp } from "../support/audit-service";
import { client, freePort, ROOT, startGovernor, TOKEN_MAP, TOKENS, type Governor } from "../support/server";
import { startUpstream, type Upstream } from "../support/upstream";
import { Socket } from "../support/ws";

// Erasure (GDPR Art. 17) against a real Governor and its audit service: a person's id and
// kept raw text leave the actors' logs (NDJSON and socket tail), the index, the audit
// store and its exports; every touched session still replays with a verified chain and
// checkpoint to the same state and spend, and records who erased whom (a keyed digest)
// and when; erasing again changes nothing; a restarted service (on a restored backup too)
// does not bring the person back; events written before commitments are reported. The
// state starts from a --persist folder written before commitments existed (tenant globex).

const run = promisify(execFile);
const X = "xavier-4417";
const SECRET_URL_TOKEN = `hook-secret-${randomBytes(6).toString("hex")}`;
const AUDIT_SECRET = randomBytes(16).toString("hex");

let up: Upstream;
let gov: Governor;
let hooks: Server;
let hookPort: number;
let acceptHooks = false;
const delivered: string[] = [];
let auditPort: number;
let scratch: string;
let storeDir: string;

const op = () => client(gov.url, TOKENS.operator);
const auditor = () => client(gov.url, TOKENS.auditor);
const agent = () => client(gov.url, TOKENS.agent);
const globex = () => client(gov.url, TOKENS.foreign);

// Every tenant of the token map, as npm start runs it: the repository's own `governor audit serve`.
const audit = auditService(() => [join(ROOT, "scripts/governor.js"), "audit", "--url", gov.url, "serve", "--port", String(auditPort), "--dir", storeDir], {
  GOVERNOR_AUDIT_SECRET: AUDIT_SECRET,
  GOVERNOR_TOKENS: JSON.stringify(TOKEN_MAP),
});

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), "governor-erasure-"));
  const persist = join(scratch, "state");
  cpSync(join(ROOT, "test/fixtures/pre-issue-8"), join(scratch, "fixture"), { recursive: true });
  execFileSync("mkdir", ["-p", persist]);
  execFileSync("tar", ["-xzf", join(scratch, "fixture/old-state.tgz"), "-C", persist]);
  hooks = createServer((req, res) => {
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      if (!acceptHooks) return res.writeHead(503).end();
      delivered.push(body);
      res.writeHead(200).end();
    });
  });
  hookPort = await freePort();
  await new Promise<void>((r) => hooks.listen(hookPort, "127.0.0.1", r));
  up = await startUpstream();
  auditPort = await freePort();
  const port = await freePort();
  [gov, storeDir] = await Promise.all([
    startGovernor({
      port,
      persist,
      vars: { OPENAI_BASE_URL: `${up.url}/v1`, OPENAI_API_KEY: "sk-test", GOVERNOR_AUDIT_URL: `http://127.0.0.1:${auditPort}`, GOVERNOR_AUDIT_SECRET: AUDIT_SECRET },
    }),
    freshStoreDir(scratch),
  ]);
  await audit.start();
}, 120_000);

afterAll(async () => {
  await audit.stop();
  await gov?.stop();
  await up?.close();
  await new Promise((r) => hooks?.close(r));
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

async function replayed(id: string): Promise<ReplayOk> {
  const text = (await op()(`/v1/sessions/${id}/log?limit=10000`)).text;
  const key = await importPublicKey((await op()("/v1/checkpoints/key")).text);
  const r = await replayReport(parseNdjson(text), { keys: [key], from: "the server" });
  if (!r.ok) throw new Error(`${id}: ${r.problem}: ${r.reason}`);
  return r;
}

async function tail(id: string, token: string): Promise<string> {
  const s = await Socket.open(`${gov.wsUrl}/parties/session/acme:${id}?token=${token}&after=0`);
  const head = ((await op()(`/v1/sessions/${id}`)).json as SessionSummary).seq;
  const deadline = Date.now() + 10_000;
  while (!s.of("event").some((m) => m.event.seq === head) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  s.ws.close();
  return JSON.stringify(s.messages);
}

const SESSIONS = ["x-main", "y-side", "z-none", "x-held"];
const before = new Map<string, ReplayOk>();

describe("erasure of a person", () => {
  it("sets the scene: the person in logs, index, tail and store; the webhook URL only for operators", async () => {
    expect((await op()("/v1/policy", { method: "PUT", body: { budget: { session_usd: 5 } } })).status).toBe(200);
    const policy = {
      keep_raw: true,
      notify: [{ webhook: `http://127.0.0.1:${hookPort}/hook?token=${SECRET_URL_TOKEN}` }],
      actions: { rules: { refund: { amount: { require_approval_above: 100 } } } },
      limits: { rate: [{ per: "user", max: 3, window: "1h" }] },
    };
    expect((await op()("/v1/sessions", { body: { id: "x-main", user: X, task: `ticket 88 for ${X}`, agent: "support-bot", policy } })).status).toBe(201);
    expect((await op()("/v1/sessions", { body: { id: "y-side", user: "yolanda", agent: "support-bot", policy: { keep_raw: true } } })).status).toBe(201);
    expect((await op()("/v1/sessions", { body: { id: "z-none", user: "zoe", agent: "support-bot" } })).status).toBe(201);
    // Arguments of a pending approval are held whole beside the log (keep_raw off), naming the person.
    expect((await op()("/v1/sessions", { body: { id: "x-held", user: X, policy: { actions: { rules: { refund: { amount: { require_approval_above: 100 } } } } } } })).status).toBe(201);

    const a = agent();
    expect((await a("/v1/sessions/x-main/actions", { body: { action: "search", args: { q: `orders of ${X}` }, costUsd: 0.01 } })).json.decision).toBe("allow");
    // Over the approval threshold: the notification (with the person in it) cannot be delivered yet.
    const review = await a("/v1/sessions/x-main/actions", { body: { action: "refund", args: { amount: 500, account: `${X}@mail.example` }, costUsd: 0.02 } });
    expect(review.json.decision).toBe("review");
    expect((await op()(`/v1/sessions/x-main/approvals/${review.json.approvalId}`, { body: { decision: "approve", note: "ok" } })).status).toBe(200);
    // The per-user rate (3 an hour, across sessions) is reached by the person's third counted call.
    const chat = (id: string, user: string) =>
      a("/v1/proxy/openai/v1/chat/completions", { headers: { "x-session-id": id, "x-user-id": user, "content-type": "application/json" }, raw: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }], max_tokens: 10 }) });
    expect((await chat("x-main", X)).status).toBe(200);
    expect((await chat("x-main", "yolanda")).status).toBe(200);
    expect((await a("/v1/sessions/x-main/actions", { body: { action: "search", args: { q: "more" }, costUsd: 0.01 } })).json.code).toBe("rate_limited");
    expect((await a("/v1/sessions/x-main/events", { body: { type: "error", action: "search", code: "E1", message: `lookup failed for ${X}` } })).status).toBe(201);
    expect((await a("/v1/sessions/x-main/events", { body: { type: "violation", kind: "pii_blocked", detail: `${X}'s phone number` } })).status).toBe(201);
    // The person acts in someone else's session; someone else in the person's session.
    expect((await a("/v1/sessions/y-side/actions", { body: { action: "search", user: X, args: { q: "x asks" }, costUsd: 0.01 } })).json.decision).toBe("allow");
    expect((await a("/v1/sessions/y-side/actions", { body: { action: "search", args: { q: "y asks" }, costUsd: 0.01 } })).json.decision).toBe("allow");
    expect((await a("/v1/sessions/z-none/actions", { body: { action: "search", args: { q: "z asks" }, costUsd: 0.01 } })).json.decision).toBe("allow");
    expect((await a("/v1/sessions/x-held/actions", { body: { action: "refund", args: { amount: 700, account: `${X}@bank.example` }, costUsd: 0 } })).json.decision).toBe("review");
    expect(JSON.stringify((await auditor()("/v1/sessions/x-held")).json.pendingApprovals)).toContain(`${X}@bank.example`);

    // Operators see the webhook URL beside the log; auditors, in the log and on the tail, do not.
    expect((await op()("/v1/sessions/x-main/log")).text).toContain(SECRET_URL_TOKEN);
    for (const text of [(await auditor()("/v1/sessions/x-main/log")).text, await tail("x-main", TOKENS.auditor)]) {
      expect(text).not.toContain(SECRET_URL_TOKEN);
      expect(text).toContain(X);
    }
    expect(await tail("x-main", TOKENS.operator)).toContain(SECRET_URL_TOKEN);

    await caughtUp(auditor());
    expect((await auditor()(`/v1/audit/events?user=${X}`)).json.events.length).toBeGreaterThan(3);
    expect((await auditor()("/v1/audit/export?format=ndjson")).text).not.toContain(SECRET_URL_TOKEN);
    // A backup of the store, taken while the person is in it.
    await audit.stop();
    cpSync(storeDir, join(scratch, "backup"), { recursive: true });
    await audit.start();
  }, 90_000);

  it("only an operator of the tenant may erase", async () => {
    for (const who of [auditor(), agent()]) expect((await who("/v1/audit/erasures", { body: { user: X } })).status).toBe(403);
    expect((await op()("/v1/audit/erasures", { body: { name: X } })).json.error).toMatchObject({ code: "bad_request" });
    // Another tenant's operator erases "X" in its own tenant: nothing of acme's is touched.
    const elsewhere = await globex()("/v1/audit/erasures", { body: { user: X } });
    expect(elsewhere.status).toBe(200);
    expect(elsewhere.json.values).toBe(0);
    expect((await op()("/v1/sessions/x-main/log")).text).toContain(X);
  });

  let erasure: any;
  it("erases the person from every actor log, the index and the store; the logs still prove themselves", async () => {
    // The kill's notification names the person; the webhook refuses it for now, so it waits in the outbox.
    expect((await op()("/v1/sessions/x-main/kill", { body: { reason: "done" } })).status).toBe(200);
    for (const id of SESSIONS) before.set(id, await replayed(id));
    const res = await op()("/v1/audit/erasures", { body: { user: X } });
    expect(res.status, res.text).toBe(200);
    erasure = res.json;
    expect(erasure.subject).toMatch(/^hmac-sha256:[0-9a-f]{64}$/);
    expect(JSON.stringify(erasure)).not.toContain(X);
    expect(erasure.sessions.map((s: { session: string }) => s.session).sort()).toEqual(["x-held", "x-main", "y-side"]);
    expect(erasure.kept).toEqual([]);
    expect(erasure.store.erasure).toMatchObject({ subject: erasure.subject, requestedBy: "alice", status: "completed" });

    for (const id of SESSIONS) {
      for (const token of [TOKENS.operator, TOKENS.auditor]) expect((await client(gov.url, token)(`/v1/sessions/${id}/log`)).text).not.toContain(X);
      expect(await tail(id, TOKENS.auditor)).not.toContain(X);
      for (const token of [TOKENS.operator, TOKENS.auditor, TOKENS.agent]) expect(JSON.stringify((await client(gov.url, token)(`/v1/sessions/${id}`)).json)).not.toContain(X);
      const now = await replayed(id);
      const was = before.get(id)!;
      expect([now.state, now.spentUsd, now.checkpoint !== null]).toEqual([was.state, was.spentUsd, true]);
      if (id === "z-none") {
        expect(now.events).toBe(was.events);
        continue;
      }
      // Said so in the log, by whom and about whom (the digest), and when.
      expect(now.personal.redactions).toEqual([expect.objectContaining({ subject: erasure.subject, by: "alice", erasure: erasure.erasure })]);
      expect(now.personal.erased.length).toBeGreaterThan(0);
      expect(now.personal.plain).toEqual([]);
    }
    // Someone else's values in the person's session, and the session owner's in the other, stay.
    expect((await op()("/v1/sessions/x-main/log")).text).toContain("yolanda");
    expect((await op()("/v1/sessions/y-side/log")).text).toContain("y asks");
    // The approval still waits, now without the person's arguments.
    expect(((await op()("/v1/sessions/x-held")).json as SessionSummary).pendingApprovals).toHaveLength(1);
    // The webhook URL is no person's: operators still see it.
    expect((await op()("/v1/sessions/x-main/log")).text).toContain(SECRET_URL_TOKEN);

    const index = await op()("/v1/sessions?limit=500");
    expect(index.text).not.toContain(X);
    expect((await op()(`/v1/sessions?user=${X}`)).json.total).toBe(0);

    // The kill's notification, held back until now, goes out without the person in it.
    acceptHooks = true;
    const deadline = Date.now() + 15_000;
    while (!delivered.some((b) => b.includes("session.killed")) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(delivered.some((b) => b.includes("session.killed"))).toBe(true);
    for (const body of delivered) expect(body).not.toContain(X);
  }, 60_000);

  it("leaves no trace in the audit store or any export, and another tenant sees none of it", async () => {
    await caughtUp(auditor());
    for (const format of ["ndjson", "json", "csv"]) {
      const text = (await auditor()(`/v1/audit/export?format=${format}&checkpoints=true`)).text;
      expect(text).not.toContain(X);
      expect(text.length).toBeGreaterThan(100);
    }
    expect((await auditor()(`/v1/audit/events?user=${X}`)).json.events).toEqual([]);
    expect((await auditor()("/v1/audit/sessions")).text).not.toContain(X);
    const recorded = (await auditor()("/v1/audit/erasures")).json.erasures;
    expect(recorded).toEqual([expect.objectContaining({ subject: erasure.subject, requestedBy: "alice" })]);
    const csv = parseCsv((await auditor()("/v1/audit/export?format=csv&type=subject.redacted")).text, { columns: true }) as Array<Record<string, string>>;
    expect(csv.map((r) => r.session).sort()).toEqual(["x-held", "x-main", "y-side"]);

    const foreign = globex();
    for (const path of ["/v1/audit/erasures", `/v1/audit/events?type=subject.redacted`, "/v1/audit/export?format=ndjson&session=x-main"]) {
      const r = await foreign(path);
      expect(r.status).toBe(200);
      expect(r.text).not.toContain(erasure.subject);
      expect(r.text).not.toContain("x-main");
    }
  });

  it("is idempotent: erasing again adds no event and changes nothing", async () => {
    const heads = await Promise.all(SESSIONS.map(async (id) => ((await op()(`/v1/sessions/${id}`)).json as SessionSummary).seq));
    const again = await op()("/v1/audit/erasures", { body: { user: X } });
    expect(again.status).toBe(200);
    expect(again.json).toMatchObject({ subject: erasure.subject, values: 0, sessions: [] });
    expect(await Promise.all(SESSIONS.map(async (id) => ((await op()(`/v1/sessions/${id}`)).json as SessionSummary).seq))).toEqual(heads);
    expect((await auditor()("/v1/audit/erasures")).json.erasures).toHaveLength(1);
  });

  it("a restarted audit service, even on a backup from before the erasure, does not bring the person back", async () => {
    await audit.stop();
    rmSync(storeDir, { recursive: true, force: true });
    cpSync(join(scratch, "backup"), storeDir, { recursive: true });
    await audit.start();
    await caughtUp(auditor());
    for (const format of ["ndjson", "csv"]) expect((await auditor()(`/v1/audit/export?format=${format}`)).text).not.toContain(X);
    expect((await auditor()(`/v1/audit/events?user=${X}`)).json.events).toEqual([]);
  }, 60_000);

  it("reports what was written before commitments (inside the hash) instead of touching it, from the CLI too", async () => {
    // Tenant globex's sessions were written before this change: user "u1" opened old-1.
    const cli = await run(process.execPath, [join(ROOT, "scripts/governor.js"), "--url", gov.url, "--token", TOKENS.foreign, "audit", "erase", "--user", "u1"], { cwd: ROOT });
    expect(cli.stdout).toMatch(/kept: events written before commitments/);
    expect(cli.stdout).toMatch(/old-1 seq 1\b/);
    const json = JSON.parse((await run(process.execPath, [join(ROOT, "scripts/governor.js"), "--url", gov.url, "--token", TOKENS.foreign, "--json", "audit", "erase", "--user", "u1"], { cwd: ROOT })).stdout);
    // old-1 was opened by u1 (seq 1: user, task) and kept raw arguments and a scanner detail (4, 5, 8).
    expect(json.kept).toContainEqual({ session: "old-1", seqs: [1, 4, 5, 8] });
    // The old log still replays; the replay names the values it holds in plain text.
    const text = (await globex()("/v1/sessions/old-1/log")).text;
    const r = await replayReport(parseNdjson(text), { keys: [await importPublicKey((await globex()("/v1/checkpoints/key")).text)], from: "server" });
    if (!r.ok) throw new Error(r.reason);
    expect(r.personal.plain).toContainEqual({ seq: 1, pointer: "/user" });
    expect(r.personal.redactions).toHaveLength(1);
    // The SDK's own `governor audit sync` says where sync runs.
    const sdk = await run(process.execPath, [join(ROOT, "sdk/bin/governor.js"), "audit", "sync"], { cwd: ROOT }).catch((e) => e);
    expect(sdk.code).toBe(2);
    expect(sdk.stderr).toMatch(/runs where the Governor server is.*npx governor audit sync/);
  });

  it("forgot the person's cross-session rate counts (their keys held the id)", async () => {
    // Before the erasure the person had used their 3 calls an hour; the count starts again.
    const policy = { limits: { rate: [{ per: "user", max: 3, window: "1h" }] } };
    expect((await op()("/v1/sessions", { body: { id: "x-again", policy } })).status).toBe(201);
    expect((await agent()("/v1/sessions/x-again/actions", { body: { action: "search", user: X, costUsd: 0 } })).json.decision).toBe("allow");
  });
});
