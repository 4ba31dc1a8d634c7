import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { parse as parseCsv } from "csv-parse/sync";
import OpenAI from "openai";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CSV_COLUMNS } from "../../audit/export";
import { serve, type Running } from "../../audit/serve";
import { freshStoreDir } from "../support/audit-template";
import { caughtUp } from "../support/audit-service";
import { startMcpUpstream, type McpUpstream } from "../support/mcp-upstream";
import { client, freePort, startGovernor, TOKENS, type Governor } from "../support/server";
import { until } from "../support/until";
import { chartsFit, consoleBrowser, needConsoleBuild, overflowing, SHOTS, tablesFit } from "../support/console-page";
import { startUpstream, type Upstream } from "../support/upstream";

// The console's second half in a real headless Chromium, against a real `partykit dev`
// with the audit service beside it (the same `serve` npm start runs, here in this process,
// storing into PGlite) and live traffic from the official OpenAI client, an MCP client and
// plain HTTP: approvals with every argument, the audit search and its CSV, what-if replay,
// the overview's history, the session page's tools and loops, and the new views at 390 px.

const SECRET = randomBytes(16).toString("hex");
/** Element screenshots scroll; the sticky top bar would cover what they show. */
const UNSTICK = ".topbar { position: static !important; }";

let gov: Governor;
let up: Upstream;
let mcpUp: McpUpstream;
let audit: Running | undefined;
let auditDir: string;
let op: ReturnType<typeof client>;
let agent: ReturnType<typeof client>;
const run = Date.now().toString(36);
const startedAt = Date.now();
let n = 0;
const sid = (name: string) => `${name}-${run}-${n++}`;

const chrome = consoleBrowser(() => gov.url);
const { problems, open: openConsole } = chrome;

async function openSession(policy: unknown, extra: Record<string, unknown>, name: string) {
  const id = sid(name);
  const r = await op("/v1/sessions", { body: { id, policy, ...extra } });
  expect(r.status, r.text).toBe(201);
  return id;
}

const openai = (session: string, user?: string) =>
  new OpenAI({ apiKey: TOKENS.agent, baseURL: `${gov.url}/v1/proxy/openai/v1`, maxRetries: 0, defaultHeaders: { "X-Session-ID": session, ...(user && { "X-User-ID": user }) } });
const chat = (session: string, words = 50) => openai(session).chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "tell me more ".repeat(words) }], max_tokens: 100 });

const nanos = (usd: number) => Math.round(usd * 1e9);
async function summaries(): Promise<Array<{ session: string; seq: number; spentUsd: number; agent?: string; user?: string }>> {
  return (await op("/v1/sessions?limit=500")).json.sessions;
}
const total = (list: Array<{ spentUsd: number }>) => list.reduce((t, s) => t + nanos(s.spentUsd), 0) / 1e9;

/** Nothing sideways, no table wider than its card, no chart label cut off. */
async function fits(page: Page, what: string) {
  expect(await overflowing(page), what).toEqual([]);
  const tables = await tablesFit(page);
  expect(tables.bad, what).toEqual([]);
  expect(tables.tables, what).toBeGreaterThan(0);
  expect((await chartsFit(page)).bad, what).toEqual([]);
}

/** The cells of these rows (cards on a phone): wide enough to read, none clipping its text. */
async function cellsFit(page: Page, rows: string, minWidth = 60) {
  const cells = await page.locator(`${rows} td`).evaluateAll((tds) =>
    tds.filter((td) => getComputedStyle(td).display !== "none").map((td) => ({ label: td.getAttribute("data-label"), width: td.getBoundingClientRect().width, clipped: td.scrollWidth > td.clientWidth + 1 })),
  );
  expect(cells.length).toBeGreaterThan(0);
  for (const c of cells) {
    expect(c.clipped, `${rows} ${c.label}`).toBe(false);
    expect(c.width, `${rows} ${c.label}`).toBeGreaterThanOrEqual(minWidth);
  }
}

// The history: traffic before any console is open.
let histId: string;
let loopId: string;

describe("web console: approvals, audit, what-if, history", () => {
  beforeAll(async () => {
    needConsoleBuild();
    const auditPort = await freePort();
    const port = await freePort();
    auditDir = mkdtempSync(join(tmpdir(), "governor-console-audit-"));
    [up, mcpUp] = await Promise.all([startUpstream(), startMcpUpstream()]);
    [gov, audit] = await Promise.all([
      startGovernor({ port, vars: { OPENAI_BASE_URL: `${up.url}/v1`, OPENAI_API_KEY: "sk-provider-secret", GOVERNOR_AUDIT_URL: `http://127.0.0.1:${auditPort}`, GOVERNOR_AUDIT_SECRET: SECRET } }),
      // The service waits for Governor on its own, as under npm start.
      freshStoreDir(auditDir).then((dir) => serve({ dir, url: `http://127.0.0.1:${port}`, targets: [{ tenant: "acme", token: TOKENS.auditor }], secret: SECRET, port: auditPort })),
    ]);
    op = client(gov.url, TOKENS.operator);
    agent = client(gov.url, TOKENS.agent);
    expect((await op("/v1/policy", { method: "PUT", body: { mcp: { servers: { tools: { url: mcpUp.url, tool_costs: { search: 0.01 } } } } } })).status).toBe(200);
    await chrome.launch();

    // History: an agent that searches and calls the model for user ivy, and a runaway
    // whose prompt doubles every call (recorded under runaway detection that only alerts).
    histId = await openSession({ budget: { session_usd: 5 } }, { agent: "hist-bot", user: "ivy" }, "hist");
    for (let i = 0; i < 3; i++) {
      expect((await agent(`/v1/sessions/${histId}/actions`, { body: { action: "search", args: { q: `invoices ${i}` }, costUsd: 0.05 } })).json.decision).toBe("allow");
      await chat(histId, 30);
    }
    loopId = await openSession({ budget: { session_usd: 20 }, runaway: { growth_ratio: 1.4, consecutive: 3, window: 5, on_detect: "alert" } }, { agent: "loop-bot", user: "jon" }, "loop");
    for (const words of [20, 40, 80, 160, 320, 640, 1280]) await chat(loopId, words);
    await caughtUp(op);
  }, 120_000);

  afterAll(async () => {
    await chrome.close();
    await audit?.stop();
    await gov?.stop();
    await Promise.all([up?.close(), mcpUp?.close()]);
    if (auditDir) rmSync(auditDir, { recursive: true, force: true });
  });

  it("charts the tenant's spend with its history from the audit store, then live; spend by agent, user and model", { timeout: 60_000 }, async () => {
    const openedAt = Date.now();
    const page = await openConsole("#overview");
    const note = page.locator('[data-card="spend-chart"] .chart-note');
    await page.waitForFunction(() => Number(document.querySelector('[data-card="spend-chart"] [data-history]')?.getAttribute("data-history")) > 0);
    // The first minute with activity is from before this page existed.
    const first = Number(await note.getAttribute("data-history-first"));
    expect(first).toBeLessThan(openedAt);
    expect(first).toBeGreaterThanOrEqual(Math.floor(startedAt / 60_000) * 60_000);
    const reaches = (usd: number) =>
      page.waitForFunction((v) => Math.abs(Number(document.querySelector('[data-chart="tenant-spend"]')?.getAttribute("data-last")) - v) < 1e-9, usd, { timeout: 15_000 });
    // Every session of this server opened in the last 24 hours: the window's spend is the tenant's.
    await reaches(total(await summaries()));

    // Live on top of the history: a call settles, the line follows.
    const before = total(await summaries());
    await chat(histId, 80);
    const after = await until(async () => total(await summaries()), (t) => t > before);
    await reaches(after);

    // Rollups from the store: each agent's, user's and model's spend, as the sessions report it.
    await caughtUp(op);
    const mine = (await summaries()).filter((s) => s.session === histId || s.session === loopId);
    const rollup = async (by: string, key: string) => {
      await page.locator(`[data-card="rollups"] .seg-control button:text-is("${by}")`).click();
      const row = page.locator(`[data-card="rollups"] [data-audit="rows"] tr`, { has: page.locator(`td:text-is("${key}")`) });
      await row.waitFor();
      return Number((await row.locator("td.num").first().textContent())!.replace(/[$,]/g, ""));
    };
    // The rollups re-read on a change of grouping; give the store's copy of the last call a moment.
    expect(await rollup("user", "ivy")).toBeCloseTo(mine.find((s) => s.session === histId)!.spentUsd, 6);
    expect(await rollup("agent", "loop-bot")).toBeCloseTo(mine.find((s) => s.session === loopId)!.spentUsd, 6);
    expect(await rollup("model", "gpt-4o-mini")).toBeGreaterThan(0);
    // Amounts carry the digits they have and no padding: $0.15, never $0.15000000.
    const spentTexts = await page.locator('[data-card="rollups"] [data-audit="rows"] td.num .usd').allTextContents();
    expect(spentTexts.length).toBeGreaterThan(0);
    for (const t of spentTexts) expect(t.split(".")[1].length <= 2 || !t.endsWith("0"), t).toBe(true);
    await fits(page, "overview at 1440px");
    expect(problems.get(page)).toEqual([]);
    await page.screenshot({ path: `${SHOTS}/console2-1440-overview.png`, fullPage: true });
    await page.close();

    // On a phone the spend-by table fits its card, shares and all (it was 363 px in 344).
    const narrow = await openConsole("#overview", { width: 390, height: 844 });
    await narrow.locator('[data-card="rollups"] [data-audit="rows"] tr td.num').first().waitFor();
    await narrow.locator('[data-card="spend-chart"] canvas').waitFor();
    await fits(narrow, "overview at 390px");
    const shares = await narrow.locator('[data-card="rollups"] [data-audit="rows"] td.share-col').evaluateAll((tds) => tds.map((td) => td.getBoundingClientRect().right));
    const card = (await narrow.locator('[data-card="rollups"]').boundingBox())!;
    for (const right of shares) expect(right).toBeLessThanOrEqual(card.x + card.width);
    await narrow.locator('[data-card="rollups"]').screenshot({ path: `${SHOTS}/console2-390-overview-rollups.png`, style: UNSTICK });
    await narrow.screenshot({ path: `${SHOTS}/console2-390-overview.png`, fullPage: true, style: UNSTICK });
    expect(problems.get(narrow)).toEqual([]);
    await narrow.close();
  });

  it("shows an approval's every argument, nested and long, with the rule's; approving it unblocks the waiting agent", { timeout: 60_000 }, async () => {
    const memo = `Second of three instalments for invoice 2211. ${"The customer confirmed the new bank details by phone and in writing. ".repeat(40)}`;
    const args = {
      amount: 4200,
      currency: "EUR",
      beneficiary: { name: "Müller & Söhne GmbH", iban: "DE89370400440532013000", address: { street: "Hauptstraße 5", city: "Köln", country: "DE" } },
      memo,
      lines: [
        { invoice: "2211-1", amount: 1400 },
        { invoice: "2211-2", amount: 2800 },
      ],
      urgent: true,
    };
    const id = await openSession({ budget: { session_usd: 10_000 }, actions: { rules: { wire_transfer: { amount: { require_approval_above: 1000 } } } } }, { agent: "payments-bot", user: "ines" }, "wire");
    const page = await openConsole("#approvals");
    const narrow = await openConsole("#approvals", { width: 390, height: 844 });
    const waiting = agent(`/v1/sessions/${id}/actions?wait=60`, { body: { action: "wire_transfer", args, costUsd: 0.5 } });
    let settled = false;
    waiting.then(() => (settled = true)).catch(() => undefined);

    const card = page.locator(`#approvals [data-session="${id}"]`);
    await card.locator('[data-args="all"]').waitFor();
    await expect(card.locator(".args-note").textContent()).resolves.toMatch(/^All 6 arguments as the agent sent them/);
    await expect(card.locator(".rule").first().textContent()).resolves.toBe("actions.rules.wire_transfer.amount.require_approval_above");
    await expect(card.locator('tr[data-arg="amount"]').getAttribute("class")).resolves.toBe("checked");
    await expect(card.locator('[data-arg="amount"] > td').textContent()).resolves.toBe("4200");
    await expect(card.locator('[data-arg="beneficiary.name"] > td').textContent()).resolves.toBe("Müller & Söhne GmbH");
    await expect(card.locator('[data-arg="lines.1.invoice"] > td').textContent()).resolves.toBe("2211-2");
    await expect(card.locator('[data-arg="urgent"] > td').textContent()).resolves.toBe("true");
    await expect(card.locator('[data-arg="beneficiary.address.city"] > td').textContent()).resolves.toBe("Köln");
    // A nested value folds away and comes back.
    await card.locator('[data-fold="beneficiary"]').click();
    await expect(card.locator('[data-arg="beneficiary.address.city"]').count()).resolves.toBe(0);
    await card.locator('[data-fold="beneficiary"]').click();
    await expect(card.locator('[data-arg="beneficiary.address.city"] > td').textContent()).resolves.toBe("Köln");
    // The long memo: its start, then all of it on demand.
    const memoCell = card.locator('[data-arg="memo"] .arg-str');
    expect((await memoCell.getAttribute("data-folded")) === "true").toBe(true);
    expect((await memoCell.textContent())!.length).toBeLessThan(400);
    await page.screenshot({ path: `${SHOTS}/console2-1440-approvals-folded.png` });
    await card.locator('[data-fold="memo"]').click();
    await expect(memoCell.textContent()).resolves.toBe(`${memo}show less`);
    await expect(card.locator(".left").textContent()).resolves.toMatch(/^\d+m \d\ds left$/);

    // On a phone: the same card, nothing clipped or sideways.
    const small = narrow.locator(`#approvals [data-session="${id}"]`);
    await small.locator('[data-args="all"]').waitFor();
    await narrow.screenshot({ path: `${SHOTS}/console2-390-approvals.png`, fullPage: true });
    await small.locator('[data-fold="memo"]').click();
    await fits(narrow, "approvals at 390px");
    await fits(page, "approvals at 1440px");
    const box = await small.boundingBox();
    expect(box!.width).toBeGreaterThan(330);
    // Deep values keep a readable width on a phone.
    expect((await small.locator('[data-arg="beneficiary.address.street"] > td').boundingBox())!.width).toBeGreaterThan(200);
    await page.screenshot({ path: `${SHOTS}/console2-1440-approvals.png`, fullPage: true });
    expect(settled).toBe(false);

    await card.locator("input.note").fill("IBAN checked with the customer");
    await card.locator('[data-decide="approve"]').click();
    const decided = await waiting;
    expect(decided.json).toMatchObject({ decision: "allow" });
    await card.waitFor({ state: "detached" });
    expect((await op(`/v1/sessions/${id}`)).json.spentUsd).toBe(0.5);
    expect(problems.get(page)).toEqual([]);
    expect(problems.get(narrow)).toEqual([]);
    await Promise.all([page.close(), narrow.close()]);
  });

  it("searches the audit store for a user's actions and exports them as CSV through an authenticated download", { timeout: 60_000 }, async () => {
    await caughtUp(op);
    const page = await openConsole("#audit");
    await page.locator('input[name="user"]').fill("ivy");
    await page.locator('select[name="type"]').selectOption("action.checked");
    await page.locator("#audit-search").click();
    expect(page.url()).toContain("user=ivy");
    await page.waitForFunction(() => document.querySelector("#audit-range")?.textContent === "events 1–3 (the last)");
    const rows = page.locator("#audit-results tbody tr");
    expect(await rows.evaluateAll((trs) => trs.map((tr) => [tr.getAttribute("data-user"), tr.getAttribute("data-type")]))).toEqual(Array(3).fill(["ivy", "action.checked"]));
    await expect(rows.first().locator(".c-what summary").textContent()).resolves.toContain("search");
    await expect(rows.first().locator(".c-cost").textContent()).resolves.toBe("$0.05");

    // The CSV of the same search: a download the page fetched with its token in a header.
    const urls: string[] = [];
    page.on("request", (r) => urls.push(r.url()));
    const [download] = await Promise.all([page.waitForEvent("download"), page.locator("#audit-export").click()]);
    expect(download.suggestedFilename()).toBe("governor-audit-acme.csv");
    const csv = parseCsv(readFileSync((await download.path())!, "utf8"), { columns: true }) as Array<Record<string, string>>;
    expect(Object.keys(csv[0])).toEqual([...CSV_COLUMNS]);
    expect(csv.map((r) => [r.session, r.user, r.type, r.action, r.cost_usd])).toEqual(Array(3).fill([histId, "ivy", "action.checked", "search", "0.05"]));
    expect(urls.some((u) => u.includes(TOKENS.operator))).toBe(false);

    // All of ivy's events, more than one page: the store's cursor pages through them.
    await page.locator('select[name="type"]').selectOption("");
    await page.locator("#audit-search").click();
    const api = (await op(`/v1/audit/events?user=ivy&limit=1000`)).json.events.length;
    expect(api).toBeGreaterThan(3);
    await page.waitForFunction((n) => document.querySelector("#audit-range")?.textContent === `events 1–${Math.min(n, 50)}${n <= 50 ? " (the last)" : ""}`, api);
    await page.screenshot({ path: `${SHOTS}/console2-1440-audit.png`, fullPage: true });

    const narrow = await openConsole(`#audit?user=ivy`, { width: 390, height: 844 });
    await narrow.locator("#audit-results tbody tr").first().waitFor();
    await narrow.waitForTimeout(200);
    await fits(narrow, "audit at 390px");
    await fits(page, "audit at 1440px");
    await cellsFit(narrow, "#audit-results tbody tr", 100);
    await narrow.screenshot({ path: `${SHOTS}/console2-390-audit.png`, fullPage: false });
    expect(problems.get(page)).toEqual([]);
    expect(problems.get(narrow)).toEqual([]);
    await Promise.all([page.close(), narrow.close()]);
  });

  it("replays the runaway under a policy that kills it: where the decisions differ, the kill and the saving", { timeout: 60_000 }, async () => {
    const page = await openConsole(`#session=${loopId}`);
    await page.locator("#whatif-link").click();
    await page.locator('input[name="whatif-session"]').waitFor();
    await expect(page.locator('input[name="whatif-session"]').inputValue()).resolves.toBe(loopId);
    await page.locator('textarea[name="whatif-policy"]').fill("runaway:\n  on_detect: kill\n");
    await page.locator("#whatif-run").click();
    await page.locator('[data-whatif="done"]').waitFor();

    const expected = (await op(`/v1/sessions/${loopId}/what-if`, { raw: "runaway:\n  on_detect: kill\n", headers: { "content-type": "application/yaml" } })).json.whatIf;
    expect(expected.differences.length).toBeGreaterThan(0);
    expect(expected.savedUsd).toBeGreaterThan(0);
    await expect(page.locator("#whatif-diffs tbody tr").count()).resolves.toBe(expected.differences.length);
    await expect(page.locator(`#whatif-diffs [data-diff="${expected.differences[0].seq}"] .c-would .decision`).textContent()).resolves.toBe("deny");
    await expect(page.locator('[data-kill="whatif-kill"]').textContent()).resolves.toContain(`at event #${expected.whatIf.killed.seq}`);
    const amount = async (stat: string) => nanos(Number((await page.locator(`[data-whatif="done"] [data-stat="${stat}"] .value`).textContent())!.replace(/[$,]/g, "")));
    expect(await amount("saved")).toBe(nanos(expected.savedUsd));
    // Shown to the digit that makes them add up: recorded - what-if = saved.
    expect((await amount("recorded")) - (await amount("what-if"))).toBe(await amount("saved"));
    expect(page.url()).toContain(`whatif=${loopId}`);
    await fits(page, "what-if at 1440px");
    await page.screenshot({ path: `${SHOTS}/console2-1440-whatif.png`, fullPage: true });

    // A policy that is not one: the field is named, nothing breaks.
    await page.locator('textarea[name="whatif-policy"]').fill("budget:\n  session_usd: -3\n");
    await page.locator("#whatif-run").click();
    await expect(page.locator("#whatif-error").textContent()).resolves.toContain("session_usd");

    const narrow = await openConsole(`#audit?whatif=${loopId}`, { width: 390, height: 844 });
    await narrow.locator('textarea[name="whatif-policy"]').fill("runaway:\n  on_detect: kill\n");
    await narrow.locator("#whatif-run").click();
    await narrow.locator('[data-whatif="done"]').waitFor();
    await fits(narrow, "what-if at 390px");
    await cellsFit(narrow, "#whatif-diffs tbody tr", 100);
    await narrow.locator('[data-card="whatif"]').screenshot({ path: `${SHOTS}/console2-390-whatif.png`, style: UNSTICK });
    expect(problems.get(page)).toEqual([]);
    expect(problems.get(narrow)).toEqual([]);
    await Promise.all([page.close(), narrow.close()]);
  });

  it("shows a session's tools with where the calls came from (MCP, HTTP, socket), its errors and the loops they made", { timeout: 60_000 }, async () => {
    const id = await openSession(
      { actions: { allow: ["mcp.tools.search", "mcp.tools.fail", "lookup"] }, runaway: { repeat: { same_error: 3, on_detect: "alert" } } },
      { agent: "tools-bot", user: "kim" },
      "tools",
    );
    const mcp = new Client({ name: "console-test", version: "1.0.0" });
    await mcp.connect(new StreamableHTTPClientTransport(new URL(`${gov.url}/v1/mcp/tools`), { requestInit: { headers: { authorization: `Bearer ${TOKENS.agent}`, "x-session-id": id } } }));
    try {
      await mcp.callTool({ name: "mcp.tools.search", arguments: { query: "refund policy" } });
      for (let i = 0; i < 3; i++) await mcp.callTool({ name: "mcp.tools.fail", arguments: {} });
    } finally {
      await mcp.close();
    }
    await agent(`/v1/sessions/${id}/actions`, { body: { action: "lookup", args: { id: 7 } } });
    await agent(`/v1/sessions/${id}/actions`, { body: { action: "delete_everything" } });

    for (const width of [1440, 390]) {
      const page = await openConsole(`#session=${id}`, { width, height: 900 });
      const tools = page.locator('[data-card="tools"]');
      await tools.locator('[data-tool="mcp.tools.search"]').waitFor();
      await expect(tools.locator('[data-tool="mcp.tools.search"] [data-source]').textContent()).resolves.toBe("mcp");
      await expect(tools.locator('[data-tool="lookup"] [data-source]').textContent()).resolves.toBe("http");
      await expect(tools.locator('[data-tool="mcp.tools.fail"] td[data-label="Errors"]').textContent()).resolves.toBe("3");
      await expect(tools.locator('[data-tool="delete_everything"] td[data-label="Refused"]').textContent()).resolves.toBe("1");
      await expect(tools.locator('[data-loop="repeat_error"]').textContent()).resolves.toContain("runaway.repeat.same_error");
      await expect(tools.locator("#tool-errors li").count()).resolves.toBe(3);
      await expect(page.locator('[data-card="money"] dd').last().textContent()).resolves.toBe("3");
      await page.waitForTimeout(200);
      await fits(page, `session page at ${width}px`);
      if (width < 500) await cellsFit(page, "#tools tbody tr", 60);
      await tools.screenshot({ path: `${SHOTS}/console2-${width}-tools.png`, style: UNSTICK });
      expect(problems.get(page)).toEqual([]);
      await page.close();
    }
  });

  it("shows what a settle charged past its reservation and past the budget, so the amounts still add up", { timeout: 60_000 }, async () => {
    // Last: the stand-in bills far more input than the request holds, and the tenant learns that ratio.
    const id = await openSession({ budget: { session_usd: 0.01 } }, { agent: "overrun-bot" }, "over");
    up.setDefault({ promptTokens: 400_000 });
    try {
      await chat(id, 10);
    } finally {
      up.setDefault({});
    }
    const s = await until(async () => (await op(`/v1/sessions/${id}`)).json, (x) => x.reservations.length === 0 && x.spentUsd > 0);
    expect(s.overrunUsd).toBeGreaterThan(0);
    expect(s.overBudgetUsd).toBeGreaterThan(0);
    const page = await openConsole(`#session=${id}`);
    const note = page.locator('[data-card="money"] [data-note="overrun"]');
    await note.waitFor();
    const usdIn = async (sel: string) => nanos(Number((await page.locator(sel).first().textContent())!.replace(/[$,]/g, "")));
    expect(await usdIn('[data-stat="overrun"] strong')).toBe(nanos(s.overrunUsd));
    expect(await usdIn('[data-stat="over-budget"] strong')).toBe(nanos(s.overBudgetUsd));
    // spent = budget + over budget, to the digit shown.
    const spent = await usdIn('[data-card="money"] [data-stat="spent"] .value');
    expect(spent).toBe(nanos(s.spentUsd));
    expect(spent).toBe((await usdIn('[data-card="money"] [data-stat="budget"] .value')) + (await usdIn('[data-stat="over-budget"] strong')));
    await page.locator('[data-card="money"]').screenshot({ path: `${SHOTS}/console2-1440-overrun.png`, style: UNSTICK });
    expect(problems.get(page)).toEqual([]);
    await page.close();
  });
});
