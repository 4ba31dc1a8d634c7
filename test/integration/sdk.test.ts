import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Governor, GovernorApiError, MessageTooLargeError, type GovernorEvent, type SessionPage, type SessionSummary, type SocketDecision } from "../../sdk/index";
import { freePort, ROOT, startGovernor, TOKENS, type Governor as Server } from "../support/server";

// The SDK and the CLI against a real `partykit dev`: HTTP routes, the session socket, an
// operator approving from the CLI while an agent waits on the socket, and log audits.

const BIN = join(ROOT, "sdk/bin/governor.js");
const run = promisify(execFile);

const POLICY = `# the agent's policy, as a user writes it
version: 1
budget:
  session_usd: 1.00
  alert_at: 0.9
actions:
  deny: [delete_database]
  rules:
    refund:
      amount: { max: 1000, require_approval_above: 500 }
`;

let server: Server;
let gov: Governor;
let agent: Governor;
let dir: string;

async function cli(...args: string[]) {
  return cliRaw("--url", server.url, "--token", TOKENS.operator, "--tenant", "acme", ...args);
}

/** The CLI as a user runs it: only the arguments given, no GOVERNOR_TENANT in the environment. */
async function cliRaw(...full: string[]) {
  return cliWith({}, ...full);
}

/** The same, with these variables added to the environment. */
async function cliWith(vars: Record<string, string>, ...full: string[]) {
  const { GOVERNOR_TENANT: _unset, ...rest } = process.env;
  const env = { ...rest, ...vars };
  try {
    const child = run(process.execPath, [BIN, ...full], { cwd: ROOT, env });
    // Nothing on stdin: a command that reads it gets an empty input, not a wait.
    child.child.stdin?.end();
    const { stdout, stderr } = await child;
    return { code: 0, stdout, stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

async function until<T>(probe: () => T | undefined, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 25));
  }
}

beforeAll(async () => {
  server = await startGovernor();
  gov = new Governor({ baseUrl: server.url, token: TOKENS.operator, tenant: "acme" });
  agent = new Governor({ baseUrl: server.url, token: TOKENS.agent, tenant: "acme" });
  dir = mkdtempSync(join(tmpdir(), "governor-sdk-"));
});

afterAll(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("Governor SDK over HTTP", () => {
  it("opens a session from YAML, idempotently", async () => {
    const s = await gov.openSession({ id: "sdk-1", policy: POLICY, agent: "bot-7", task: "refunds" });
    expect(s).toMatchObject({ tenant: "acme", session: "sdk-1", state: "active", budgetUsd: 1, spentUsd: 0, agent: "bot-7", task: "refunds" });
    const again = await gov.openSession({ id: "sdk-1", policy: POLICY });
    expect(again.seq).toBe(s.seq);
  });

  it("checks actions: allow charges, deny names the rule, budget-check agrees", async () => {
    const ok = await agent.checkAction("sdk-1", { action: "search", args: { q: "x" }, costUsd: 0.25 });
    expect(ok).toMatchObject({ decision: "allow", spentUsd: 0.25, remainingUsd: 0.75 });
    const no = await agent.checkAction("sdk-1", { action: "delete_database", costUsd: 0 });
    expect(no).toMatchObject({ decision: "deny", code: "policy_violation", rule: "actions.deny" });
    const retry = await agent.checkAction("sdk-1", { id: "same", action: "search", costUsd: 0.125 });
    expect(await agent.checkAction("sdk-1", { id: "same", action: "search", costUsd: 0.125 })).toEqual(retry);
    expect(await agent.budgetCheck("sdk-1")).toEqual({ allowed: true, state: "active", spentUsd: 0.375, reservedUsd: 0, remainingUsd: 0.625 });
  });

  it("turns error bodies into GovernorApiError with status, code and field", async () => {
    const missing = await gov.getSession("no-such").catch((e) => e);
    expect(missing).toBeInstanceOf(GovernorApiError);
    expect(missing).toMatchObject({ status: 404, code: "not_found" });
    const bad = await gov.openSession({ id: "sdk-bad", policy: { budget: { sesion_usd: 1 } } as never }).catch((e) => e);
    expect(bad).toMatchObject({ status: 400, code: "bad_request", field: expect.stringContaining("budget") });
    expect(await agent.kill("sdk-1").catch((e) => e)).toMatchObject({ status: 403, code: "forbidden" });
  });

  it("whoami: the token's own tenant, role and name, for every role, and never the token", async () => {
    expect(await gov.whoami()).toEqual({ tenant: "acme", role: "operator", name: "alice" });
    expect(await agent.whoami()).toEqual({ tenant: "acme", role: "agent", name: "agent-1" });
    expect(await new Governor({ baseUrl: server.url, token: TOKENS.auditor }).whoami()).toEqual({ tenant: "acme", role: "auditor", name: "audit" });
    expect(await new Governor({ baseUrl: server.url, token: TOKENS.foreign }).whoami()).toEqual({ tenant: "globex", role: "operator", name: "mallory" });
    const res = await fetch(`${server.url}/v1/whoami`, { headers: { authorization: `Bearer ${TOKENS.operator}` } });
    expect(res.headers.get("cache-control")).toBe("no-store");
    expect(await res.text()).not.toContain(TOKENS.operator);
    expect(await new Governor({ baseUrl: server.url, token: "tok-not-configured" }).whoami().catch((e) => e)).toMatchObject({ status: 401, code: "unauthorized" });
    const post = await fetch(`${server.url}/v1/whoami`, { method: "POST", headers: { authorization: `Bearer ${TOKENS.operator}` }, body: "{}" });
    expect(post.status).toBe(405);
    expect(((await post.json()) as { error: { message: string } }).error.message).toContain("use GET");
    const deeper = await fetch(`${server.url}/v1/whoami/else`, { headers: { authorization: `Bearer ${TOKENS.operator}` } });
    expect(deeper.status).toBe(404);
    await deeper.body?.cancel();
  });

  it("decides by failMode when the server cannot be reached", async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const closed = new Governor({ baseUrl: url, token: "x" });
    expect(await closed.checkAction("s", { action: "search" })).toMatchObject({ decision: "deny", code: "governor_unreachable" });
    const open = new Governor({ baseUrl: url, token: "x", failMode: "open" });
    expect(await open.checkAction("s", { action: "search" })).toMatchObject({ decision: "allow", code: "governor_unreachable" });
    await expect(closed.getSession("s")).rejects.toThrow();
  });
});

describe("listing sessions", () => {
  it("pages with a cursor and filters; allSessions walks every page once", async () => {
    const ids = ["pg-a", "pg-b", "pg-c", "pg-d", "pg-e"];
    for (const id of ids) await gov.openSession({ id, agent: "pager" });
    await gov.kill("pg-c", "paging test");
    // The paged answer is ADDENDUM item 1 (server side: the console branch). A server from
    // before it answers {sessions} only, ignoring the query; the client turns that into
    // one complete page. Whichever this server is, its answer is checked in full.
    const raw = (await (await fetch(`${server.url}/v1/sessions?limit=1`, { headers: { authorization: `Bearer ${TOKENS.operator}` } })).json()) as Record<string, unknown>;
    const paged = "nextCursor" in raw;
    const mine = (list: SessionSummary[]) => list.map((s) => s.session).filter((s) => ids.includes(s));
    const walked: SessionSummary[] = [];
    for await (const s of gov.allSessions({ agent: "pager", limit: 2 })) walked.push(s);
    expect(new Set(walked.map((s) => s.session)).size).toBe(walked.length);
    if (paged) {
      const first = await gov.listSessions({ agent: "pager", limit: 2 });
      expect(first.sessions).toHaveLength(2);
      expect(first.total).toBe(5);
      expect(first.nextCursor).toEqual(expect.any(String));
      const second = await gov.listSessions({ agent: "pager", limit: 2, cursor: first.nextCursor! });
      expect(mine([...first.sessions, ...second.sessions])).toHaveLength(4);
      expect(walked.map((s) => s.session)).toEqual([...ids].reverse());
      const killed = await gov.listSessions({ agent: "pager", state: ["killed"] });
      expect(killed).toMatchObject({ total: 1, nextCursor: null });
      expect(killed.sessions.map((s) => s.session)).toEqual(["pg-c"]);
      expect((await gov.listSessions({ agent: "pager", since: "1h" })).total).toBe(5);
      expect((await gov.listSessions({ agent: "pager", until: new Date(Date.now() - 3_600_000) })).total).toBe(0);
    } else {
      const page = await gov.listSessions({ agent: "pager", limit: 2 });
      expect(page).toMatchObject({ nextCursor: null, total: page.sessions.length });
      expect(mine(page.sessions).sort()).toEqual(ids);
      expect(mine(walked).sort()).toEqual(ids);
    }
  });
});

describe("SessionHandle", () => {
  it("receives every state and event in order", async () => {
    await gov.openSession({ id: "sdk-2", policy: { budget: { session_usd: 10 } } });
    const h = gov.session("sdk-2");
    expect(gov.session("sdk-2")).toBe(h);
    const states: SessionSummary[] = [];
    const events: GovernorEvent[] = [];
    h.onState((s) => states.push(s));
    h.onEvent((e) => events.push(e));
    const first = await h.ready();
    for (let i = 1; i <= 5; i++) await agent.checkAction("sdk-2", { action: "search", costUsd: i / 10 });
    const final = await gov.getSession("sdk-2");
    await until(() => (h.state?.seq === final.seq ? true : undefined));
    const seqs = states.map((s) => s.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(seqs.at(-1)).toBe(final.seq);
    expect(states.map((s) => s.seq).filter((s) => s > first.seq)).toEqual(Array.from({ length: final.seq - first.seq }, (_, i) => first.seq + i + 1));
    expect(h.state?.spentUsd).toBe(1.5);
    await until(() => (events.at(-1)?.seq === final.seq ? true : undefined));
    expect(events.map((e) => e.seq)).toEqual(Array.from({ length: final.seq - first.seq }, (_, i) => first.seq + i + 1));
    h.close();
  });

  it("refuses a socket message over the server's 256 KiB before sending it, with a typed error naming the size and the limit", async () => {
    await gov.openSession({ id: "sdk-big", policy: { budget: { session_usd: 10 } } });
    const h = agent.session("sdk-big");
    await h.ready();
    const ascii = await h.check({ action: "search", args: { pad: "x".repeat(300 * 1024) } }).catch((e) => e);
    expect(ascii).toBeInstanceOf(MessageTooLargeError);
    expect(ascii).toBeInstanceOf(GovernorApiError);
    expect(ascii).toMatchObject({ status: 413, code: "payload_too_large", field: "message", limit: 262_144 });
    expect(ascii.bytes).toBeGreaterThan(300 * 1024);
    expect(ascii.message).toContain(`${ascii.bytes} bytes`);
    expect(ascii.message).toContain("262144 bytes (256 KiB)");
    // Bytes, not characters: 90,000 euro signs are 270,000 bytes of UTF-8.
    const euros = await h.check({ action: "search", args: { pad: "€".repeat(90_000) } }).catch((e) => e);
    expect(euros).toBeInstanceOf(MessageTooLargeError);
    expect(euros.bytes).toBeGreaterThan(270_000);
    // Nothing was sent, the socket stays open, and a normal check still goes through it.
    expect(await h.check({ action: "search", args: { q: "small" }, costUsd: 0.5 })).toMatchObject({ decision: "allow", final: true });
    const s = await gov.getSession("sdk-big");
    expect(s.counters.actions).toBe(1);
    expect(s.spentUsd).toBe(0.5);
    h.close();
  });

  it("a check needing approval resolves when an operator approves from the CLI", async () => {
    const h = agent.session("sdk-1");
    await h.ready();
    let review: SocketDecision | undefined;
    let approved: Promise<{ code: number; stdout: string; stderr: string }> | undefined;
    const decision = await h.check(
      { action: "refund", args: { amount: 600 }, costUsd: 0.5 },
      {
        onReview: (d) => {
          review = d;
          approved = cli("approve", "sdk-1", d.approvalId!, "--note", "checked the ticket");
        },
      },
    );
    expect(review).toMatchObject({ decision: "review", final: false, rule: "actions.rules.refund.amount.require_approval_above" });
    expect(decision).toMatchObject({ id: review!.id, decision: "allow", final: true, approvalId: review!.approvalId, spentUsd: 0.875 });
    const r = await approved!;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`approved ${review!.approvalId}`);
    await until(() => (h.state?.spentUsd === 0.875 ? true : undefined));
    h.close();
  });

  it("a review decided while the socket was down still resolves after the reconnect", async () => {
    await gov.openSession({ id: "sdk-3", policy: POLICY });
    const h = agent.session("sdk-3");
    await h.ready();
    // Reach inside to lose the broadcast deterministically, as a dropped connection would.
    const inner = h as unknown as { onMessage: (d: unknown) => void; socket: { reconnect(): void } };
    const deliver = inner.onMessage.bind(h);
    let deaf = false;
    inner.onMessage = (d) => {
      if (!deaf) deliver(d);
    };
    const decision = h.check(
      { action: "refund", args: { amount: 700 }, costUsd: 0 },
      {
        onReview: (d) => {
          deaf = true;
          void gov.deny("sdk-3", d.approvalId!, "not this one").then(() => {
            deaf = false;
            inner.socket.reconnect();
          });
        },
      },
    );
    expect(await decision).toMatchObject({ decision: "deny", final: true, code: "policy_violation" });
    h.close();
  });
});

describe("governor CLI against the server", () => {
  it("sessions and show", async () => {
    const list = await cli("--json", "sessions");
    expect(list.code, list.stderr).toBe(0);
    const page = JSON.parse(list.stdout) as SessionPage;
    expect(page.sessions.map((s) => s.session)).toEqual(expect.arrayContaining(["sdk-1"]));
    expect(page).toMatchObject({ nextCursor: null, total: page.sessions.length });
    const human = await cli("sessions", "--all");
    expect(human.stdout).toMatch(/^SESSION\s+STATE/);
    expect(human.stdout).toMatch(new RegExp(`${page.total} of ${page.total} sessions`));
    const bad = await cli("sessions", "--limit", "0");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("1 to 500");
    const show = await cli("show", "sdk-1");
    expect(show.stdout).toMatch(/state\s+(active|alerting)/);
    // The decisions line adds up, both sides, and agrees with the session's counters.
    const s = await gov.getSession("sdk-1");
    const m = /decisions\s+(\d+): (\d+) llm calls? \+ (\d+) actions? = (\d+) allowed \+ (\d+) denied(?: \+ (\d+) awaiting approval)?/.exec(show.stdout);
    expect(m, show.stdout).not.toBeNull();
    const [total, llm, actions, allowed, denied, waiting] = m!.slice(1).map((x) => Number(x ?? 0));
    expect([llm, actions, allowed, denied, waiting]).toEqual([s.counters.llmCalls, s.counters.actions, s.counters.allowed, s.counters.denied, s.pendingApprovals.length]);
    expect(llm + actions).toBe(total);
    expect(allowed + denied + waiting).toBe(total);
  });

  it("show, kill and log of a session that does not exist name it and the tenant, and say how sessions are opened (not an HTTP route)", async () => {
    for (const args of [["show", "nope"], ["kill", "nope"], ["log", "nope"], ["approve", "nope", "a1"]]) {
      const r = await cliRaw("--url", server.url, "--token", TOKENS.operator, ...args);
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.stderr).toContain('no such session "nope" in tenant acme');
      expect(r.stderr).toContain("governor sessions");
      expect(r.stderr).toContain("gov.openSession");
      expect(r.stderr).not.toContain("POST /v1/sessions");
    }
    const json = await cli("--json", "show", "nope");
    expect(JSON.parse(json.stderr)).toMatchObject({ error: { status: 404, code: "not_found", field: "session" } });
  });

  it("whoami takes the tenant from the token; a --tenant that disagrees is named, exit 1", async () => {
    const who = await cliRaw("--url", server.url, "--token", TOKENS.auditor, "whoami");
    expect(who.code, who.stderr).toBe(0);
    expect(who.stdout.trim()).toBe("audit: auditor of tenant acme");
    const wrong = await cliRaw("--url", server.url, "--token", TOKENS.foreign, "--tenant", "acme", "--json", "whoami");
    expect(wrong.code).toBe(1);
    expect(JSON.parse(wrong.stdout)).toEqual({ tenant: "globex", role: "operator", name: "mallory" });
    expect(wrong.stderr).toContain("--tenant acme is not this token's tenant (globex)");
  });

  it("--token-file reads the token from a file, so it is not in the process list; with --token it is a usage error", async () => {
    const dir = mkdtempSync(join(tmpdir(), "gov-token-"));
    try {
      const file = join(dir, "token");
      writeFileSync(file, `${TOKENS.auditor}\n`, { mode: 0o600 });
      const who = await cliRaw("--url", server.url, "--token-file", file, "whoami");
      expect(who.code, who.stderr).toBe(0);
      expect(who.stdout.trim()).toBe("audit: auditor of tenant acme");
      const both = await cliRaw("--url", server.url, "--token", TOKENS.operator, "--token-file", file, "whoami");
      expect(both.code).toBe(2);
      expect(both.stderr).toContain("--token and --token-file");
      const missing = await cliRaw("--url", server.url, "--token-file", join(dir, "absent"), "whoami");
      expect(missing.code).toBe(2);
      expect(missing.stderr).toContain("no such file");
      writeFileSync(file, "\n");
      const empty = await cliRaw("--url", server.url, "--token-file", file, "whoami");
      expect(empty.code).toBe(2);
      expect(empty.stderr).toContain("first line is empty");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("--token-file: an explicit --token wins over GOVERNOR_TOKEN_FILE; a line that cannot be a token is refused unshown; stdin is read once", async () => {
    const dir = mkdtempSync(join(tmpdir(), "gov-token-"));
    try {
      const file = join(dir, "token");
      writeFileSync(file, `${TOKENS.auditor}\n`, { mode: 0o600 });
      // The variable set in a profile, a token given for one command: the command's.
      const flag = await cliWith({ GOVERNOR_TOKEN_FILE: file }, "--url", server.url, "--token", TOKENS.operator, "whoami");
      expect(flag.code, flag.stderr).toBe(0);
      expect(flag.stdout.trim()).toBe("alice: operator of tenant acme");
      const env = await cliWith({ GOVERNOR_TOKEN_FILE: file }, "--url", server.url, "whoami");
      expect(env.stdout.trim()).toBe("audit: auditor of tenant acme");
      // A file that is not a token (binary, or another secret with a control character in
      // its first line): refused before anything is sent, and its text is not printed.
      const secret = "s3cret-not-a-token";
      writeFileSync(file, `${secret}\u0000more\n`);
      const bad = await cliRaw("--url", server.url, "--token-file", file, "whoami");
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain(`--token-file ${file}: `);
      expect(bad.stdout + bad.stderr).not.toContain(secret);
      // A device or a huge file with no line end: refused at once, not read whole.
      const zero = await cliRaw("--url", server.url, "--token-file", "/dev/zero", "whoami");
      expect(zero.code).toBe(2);
      expect(zero.stderr).toContain("--token-file /dev/zero: ");
      // Only the first line is read: a token file may go on (a comment, other settings).
      writeFileSync(file, `${TOKENS.auditor}\n${"x".repeat(1 << 20)}`);
      const first = await cliRaw("--url", server.url, "--token-file", file, "whoami");
      expect(first.stdout.trim()).toBe("audit: auditor of tenant acme");
      // Both from stdin: one of them would read nothing.
      const twice = await cliRaw("--url", server.url, "--token-file", "-", "replay", "-");
      expect(twice.code).toBe(2);
      expect(twice.stderr).toContain("stdin");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("replay --session prints the spend getSession reports", async () => {
    const s = await gov.getSession("sdk-1");
    const r = await cli("--json", "replay", "--session", "sdk-1");
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ ok: true, spentUsd: s.spentUsd, state: s.state, events: s.seq, head: { seq: s.seq } });
    const human = await cli("replay", "--session", "sdk-1");
    expect(human.stdout).toMatch(/spent\s+\$0\.875 of \$1\.00/);
  });

  it("an exported log verifies, and a one-byte edit is caught at its seq", async () => {
    // The export as a file: the events and the signed checkpoint that ends them.
    const { events, checkpoint } = await gov.exportSigned("sdk-1");
    const lines = [...events, checkpoint].map((e) => JSON.stringify(e));
    const path = join(dir, "sdk-1.ndjson");
    writeFileSync(path, `${lines.join("\n")}\n`);
    expect((await cli("replay", path)).code).toBe(0);

    const target = events.find((e) => e.type === "action.checked" && e.data.costUsd === 0.25)!;
    const i = lines.findIndex((l) => l.includes(`"seq":${target.seq},`));
    lines[i] = lines[i].replace('"costUsd":0.25', '"costUsd":0.35');
    writeFileSync(path, `${lines.join("\n")}\n`);
    const r = await cli("replay", path);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`seq ${target.seq}\\b`));
  });

  it("log pages through NDJSON after a seq; kill ends the session", async () => {
    const all = await gov.exportLog("sdk-1", { pageSize: 2 });
    expect(all.map((e) => e.seq)).toEqual(Array.from({ length: all.length }, (_, i) => i + 1));
    const r = await cli("log", "sdk-1", "--after", "2");
    expect(r.stdout.trim().split("\n").map((l) => JSON.parse(l).seq)[0]).toBe(3);
    const k = await cli("kill", "sdk-2", "--reason", "done testing");
    expect(k.code, k.stderr).toBe(0);
    expect(await gov.checkAction("sdk-2", { action: "search" })).toMatchObject({ decision: "deny", code: "session_killed" });
  });
});
