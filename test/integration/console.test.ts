import { existsSync } from "node:fs";
import OpenAI from "openai";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { client, startGovernor, TOKENS, type Governor } from "../support/server";
import { until } from "../support/until";
import { chartsFit, CHROMIUM, consoleBrowser, needConsoleBuild, overflowing, SHOTS, tablesFit } from "../support/console-page";
import { startUpstream, type Upstream } from "../support/upstream";

// The console in a real headless Chromium against a real `partykit dev` with live traffic:
// agents call the provider stand-in through the proxy and ask for reviews while the page
// watches, approves and kills. Chromium comes from the OS (Debian's `chromium`); the page
// is the Vite build that `npm test` makes first (`npm run build`).

let gov: Governor;
let up: Upstream;
let op: ReturnType<typeof client>;
let agent: ReturnType<typeof client>;
const run = Date.now().toString(36);
let n = 0;
const sid = (name: string) => `${name}-${run}-${n++}`;

const chrome = consoleBrowser(() => gov.url);
const { problems, newPage, open: openConsole } = chrome;

/** An amount as shown carries no zero past the cents that is only padding. */
const unpadded = (text: string) => {
  const digits = text.split(".")[1] ?? "";
  return digits.length <= 2 || !digits.endsWith("0");
};

async function openSession(policy: unknown, extra: Record<string, unknown> = {}, name = "c") {
  const id = sid(name);
  const r = await op("/v1/sessions", { body: { id, policy, ...extra } });
  expect(r.status, r.text).toBe(201);
  return id;
}

const openai = (session: string) => new OpenAI({ apiKey: TOKENS.agent, baseURL: `${gov.url}/v1/proxy/openai/v1`, maxRetries: 0, defaultHeaders: { "X-Session-ID": session } });
const chat = (session: string, words = 50) => openai(session).chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "tell me more ".repeat(words) }], max_tokens: 100 });

const nanos = (usd: number) => Math.round(usd * 1e9);
/** The tenant's total spend, summed as the console sums it. */
async function tenantSpent(): Promise<number> {
  const r = await op("/v1/sessions?limit=500");
  return r.json.sessions.reduce((t: number, s: { spentUsd: number }) => t + nanos(s.spentUsd), 0) / 1e9;
}

/** What a chart holds: its point count and its first series' last value. */
async function chart(page: Page, name: string) {
  const el = page.locator(`[data-chart="${name}"]`);
  await el.waitFor();
  return { points: Number(await el.getAttribute("data-points")), last: Number(await el.getAttribute("data-last")) };
}

async function chartReaches(page: Page, name: string, value: number) {
  await page.waitForFunction(([sel, v]) => Math.abs(Number(document.querySelector(sel as string)?.getAttribute("data-last")) - (v as number)) < 1e-9, [`[data-chart="${name}"]`, value] as const, { timeout: 15_000 });
}

describe("web console", () => {
  beforeAll(async () => {
    needConsoleBuild();
    if (!existsSync(CHROMIUM)) return;
    up = await startUpstream();
    gov = await startGovernor({ vars: { OPENAI_BASE_URL: `${up.url}/v1`, OPENAI_API_KEY: "sk-provider-secret" } });
    op = client(gov.url, TOKENS.operator);
    agent = client(gov.url, TOKENS.agent);
    await chrome.launch();
  });

  afterAll(async () => {
    await chrome.close();
    await gov?.stop();
    await up?.close();
  });

  it("asks for a token without one, and sends a refused token back to the sign-in form", { timeout: 60_000 }, async () => {
    const page = await chrome.need().newPage();
    await page.goto(`${gov.url}/`);
    await page.locator("#login").waitFor();
    await page.goto(`${gov.url}/?token=not-a-real-token&tenant=acme`);
    await page.locator("#login").waitFor();
    await expect(page.locator(".banner.error").first().textContent()).resolves.toContain("unauthorized");
    expect(page.url()).not.toContain("not-a-real-token");
    // An agent's token is a good token, but not for the console: said so, back to the form.
    await page.goto(`${gov.url}/?token=${TOKENS.agent}`);
    await page.locator(".banner.error", { hasText: "agent's token" }).waitFor();
    await page.locator("#login").waitFor();
    await expect(page.locator("#tenant-label").count()).resolves.toBe(0);
    await page.close();
  });

  it("takes the tenant from the token: a ?tenant= that disagrees is explained, and every view shows the token's tenant", { timeout: 60_000 }, async () => {
    const id = await openSession({ budget: { session_usd: 1 } }, { agent: "whoami-bot" }, "who");
    const listed = (await op("/v1/sessions?limit=500")).json;
    // A local link to tenant globex, opened with a token of tenant acme.
    const page = await openConsole("#sessions", { tenant: "globex" });
    await expect(page.locator("#tenant-label").textContent()).resolves.toBe("tenant acme");
    await expect(page.locator(".banner.warn").textContent()).resolves.toContain("asked for tenant globex, but this token belongs to tenant acme");
    expect(new URL(page.url()).searchParams.get("tenant")).toBe("acme");
    await page.locator(`#sessions-body tr[data-session="${id}"]`).waitFor();
    await expect(page.locator("#sessions-total").textContent()).resolves.toBe(`${listed.total} match${listed.total === 1 ? "" : "es"}`);
    // The overview counts the same sessions the list shows (it said 0 and $0 while the list showed them).
    await page.goto(`${gov.url}/?tenant=globex#overview`);
    await page.locator('#conn-wrap .conn[data-status="live"]').waitFor();
    const live = listed.sessions.filter((x: { state: string }) => !["killed", "closed"].includes(x.state)).length;
    await page.locator('[data-stat="live"] .value', { hasText: new RegExp(`^${live}$`) }).waitFor();
    await expect(page.locator("#tenant-label").textContent()).resolves.toBe("tenant acme");
    await expect(page.title()).resolves.toMatch(/Governor · acme$/);
    expect(problems.get(page)).toEqual([]);
    await page.close();

    // Globex's token on an acme link: globex's (empty) tenant, never acme's sessions.
    const other = await openConsole("#sessions", { token: TOKENS.foreign, tenant: "acme" });
    await expect(other.locator("#tenant-label").textContent()).resolves.toBe("tenant globex");
    await other.locator("#sessions-total", { hasText: "0 matches" }).waitFor();
    await expect(other.locator(`#sessions-body tr[data-session="${id}"]`).count()).resolves.toBe(0);
    await other.close();
  });

  it("shows a refused live connection, with the reason it can give, instead of reconnecting forever", { timeout: 60_000 }, async () => {
    const page = await newPage();
    // Something between the browser and Governor sends the tenant socket to another
    // tenant's room, which the server refuses (403) while HTTP keeps working.
    await page.addInitScript(() => {
      const Real = window.WebSocket;
      const w = window as unknown as { __sockets: number };
      w.__sockets = 0;
      window.WebSocket = class extends Real {
        constructor(url: string | URL, protocols?: string | string[]) {
          super(String(url).replace("/parties/tenant/acme", "/parties/tenant/globex"), protocols);
          w.__sockets++;
        }
      };
    });
    await page.goto(`${gov.url}/?token=${TOKENS.operator}#overview`);
    const refused = page.locator('#conn-wrap .conn[data-status="refused"]');
    await refused.waitFor({ timeout: 20_000 });
    await expect(page.locator(".banner.error span").first().textContent()).resolves.toBe("The tenant's live connection: the server refused it 3 times in a row, although it accepts the token over HTTP");
    await expect(refused.getAttribute("title")).resolves.toContain("accepts the token over HTTP");
    // No figures rather than zeros: the overview does not claim the tenant spent $0.
    await expect(page.locator('[data-notice="live"]').textContent()).resolves.toContain("No live figures");
    await expect(page.locator('[data-stat="spent"] .value').textContent()).resolves.toBe("–");
    await expect(page.locator('[data-stat="live"] .value').textContent()).resolves.toBe("–");
    const tries = await page.evaluate(() => (window as unknown as { __sockets: number }).__sockets);
    expect(tries).toBe(3);
    // It stays given up (the next backoff would have been 2 s) until asked to try again.
    await page.waitForTimeout(2500);
    expect(await page.evaluate(() => (window as unknown as { __sockets: number }).__sockets)).toBe(tries);
    await page.screenshot({ path: `${SHOTS}/console-1440-refused.png` });
    await page.locator("#reconnect").click();
    await page.waitForFunction((n) => (window as unknown as { __sockets: number }).__sockets > n, tries);
    expect(problems.get(page)).toEqual([]);
    await page.close();
  });

  it("charts spend live: the tenant and the session charts move when a proxied call settles", { timeout: 60_000 }, async () => {
    const id = await openSession({ budget: { session_usd: 3 } }, { agent: "chart-bot", user: "dana" }, "chart");
    await chat(id);
    const page = await openConsole("#overview");
    await chartReaches(page, "tenant-spend", await tenantSpent());
    const before = await chart(page, "tenant-spend");

    const answer = await chat(id, 120);
    expect(answer.usage?.prompt_tokens).toBeGreaterThan(100);
    // The settle lands in the actor after the answer; the page follows the tenant socket.
    const total = await until(tenantSpent, (t) => t > before.last);
    await chartReaches(page, "tenant-spend", total);
    expect((await chart(page, "tenant-spend")).points).toBeGreaterThan(before.points);
    // No audit service behind this gateway: the rollups say so instead of spinning or failing.
    await expect(page.locator('[data-card="rollups"] [data-audit="unavailable"]').textContent()).resolves.toContain("Audit store not available");
    expect(problems.get(page)).toEqual([]);

    // The session's own chart is folded from its log, then follows the session socket.
    await page.goto(`${gov.url}/?tenant=acme#session=${id}`);
    await page.locator('[data-session-detail] .title-row .conn[data-status="live"]').waitFor();
    let s = (await op(`/v1/sessions/${id}`)).json;
    await chartReaches(page, "session-spend", s.spentUsd);
    const first = await chart(page, "session-spend");
    await chat(id, 200);
    s = await until(async () => (await op(`/v1/sessions/${id}`)).json, (x) => x.spentUsd > first.last && x.reservations.length === 0);
    await chartReaches(page, "session-spend", s.spentUsd);
    expect((await chart(page, "session-spend")).points).toBeGreaterThan(first.points);
    await page.locator(".chain.ok").waitFor();

    // Spent, reserved and remaining are shown exactly enough to add up to the budget.
    const amount = async (stat: string) => nanos(Number((await page.locator(`[data-card="money"] [data-stat="${stat}"] .value`).textContent())!.replace(/[$,]/g, "")));
    await until(() => amount("spent"), (v) => v === nanos(s.spentUsd));
    expect((await amount("spent")) + (await amount("reserved")) + (await amount("remaining"))).toBe(await amount("budget"));
    expect(await amount("budget")).toBe(nanos(3));
    await expect(page.locator('[data-card="money"] [data-stat="budget"] .value').textContent()).resolves.toBe("$3.00");
    for (const stat of ["spent", "reserved", "remaining"]) {
      const text = (await page.locator(`[data-card="money"] [data-stat="${stat}"] .value`).textContent())!;
      expect(unpadded(text), `${stat}: ${text}`).toBe(true);
    }
    expect(problems.get(page)).toEqual([]);
    await page.close();
  });

  it("shows an approval's arguments and rule; approving it with a note unblocks the waiting agent", { timeout: 60_000 }, async () => {
    const id = await openSession(
      { budget: { session_usd: 5000 }, actions: { rules: { refund: { amount: { require_approval_above: 500 }, account: { pattern: "^[A-Z]{2}[0-9]{8}$" } } } } },
      { agent: "refunds-bot", user: "erin" },
      "appr",
    );
    const page = await openConsole("#approvals");
    // The agent asks and waits (up to a minute) for a human.
    const waiting = agent(`/v1/sessions/${id}/actions?wait=60`, { body: { action: "refund", args: { amount: 4200, account: "DE12345678" }, costUsd: 4200 } });
    let settled = false;
    void waiting.then(() => (settled = true));

    const card = page.locator(`#approvals [data-session="${id}"]`);
    await card.waitFor();
    await expect(card.locator(".action").textContent()).resolves.toBe("refund");
    await expect(card.locator('[data-arg="amount"] td').textContent()).resolves.toBe("4200");
    await expect(card.locator('[data-arg="account"] td').textContent()).resolves.toBe("DE12345678");
    await expect(card.locator(".rule").textContent()).resolves.toBe("actions.rules.refund.amount.require_approval_above");
    await expect(card.locator(".why").textContent()).resolves.toContain("4200");
    await expect(card.locator(".left").textContent()).resolves.toMatch(/^\d+m \d\ds left$/);
    await expect(card.locator(".cost").textContent()).resolves.toBe("$4,200.00");
    await page.locator('[data-tab="approvals"] .count.hot').waitFor();

    // An auditor sees the same card, every argument, and no button that could only fail.
    const auditor = await openConsole("#approvals", { token: TOKENS.auditor });
    const seen = auditor.locator(`#approvals [data-session="${id}"]`);
    await expect(seen.locator('[data-arg="amount"] td').textContent()).resolves.toBe("4200");
    await expect(seen.locator("[data-read-only]").textContent()).resolves.toContain("Read-only: only an operator can approve or deny");
    await expect(seen.locator("[data-decide], input.note").count()).resolves.toBe(0);
    await expect(auditor.locator("#role-label").textContent()).resolves.toBe("auditor · read-only");
    await auditor.goto(`${gov.url}/#session=${id}`);
    await auditor.locator('[data-session-detail] .title-row .conn[data-status="live"]').waitFor();
    await auditor.locator("#whatif-link").waitFor();
    await expect(auditor.locator("#kill, [data-decide]").count()).resolves.toBe(0);
    await auditor.close();
    expect(settled).toBe(false);

    await card.locator("input.note").fill("customer verified by phone");
    await card.locator('[data-decide="approve"]').click();
    const decided = await waiting;
    expect(decided.status).toBe(200);
    expect(decided.json).toMatchObject({ decision: "allow" });
    await card.waitFor({ state: "detached" });
    const log = (await op(`/v1/sessions/${id}/log`)).text.trim().split("\n").map((l) => JSON.parse(l));
    expect(log.find((e: { type: string }) => e.type === "approval.granted").data).toMatchObject({ by: "alice", note: "customer verified by phone" });
    expect(problems.get(page)).toEqual([]);
    await page.close();
  });

  it("kills a running agent from the console after confirmation", { timeout: 60_000 }, async () => {
    const id = await openSession({ budget: { session_usd: 50 } }, { agent: "looper", user: "fay" }, "kill");
    // A running agent: calls back to back until Governor refuses it.
    let calls = 0;
    let stoppedAt = 0;
    const loop = (async () => {
      for (;;) {
        try {
          await chat(id, 20);
          calls++;
        } catch (e) {
          stoppedAt = Date.now();
          return e as { status?: number; code?: string; error?: { code?: string } };
        }
      }
    })();
    await until(async () => calls, (c) => c >= 2);
    const page = await openConsole(`#session=${id}`);
    await page.locator('[data-session-detail] .title-row .conn[data-status="live"]').waitFor();
    await page.waitForFunction(() => Number(document.querySelector('[data-chart="session-spend"]')?.getAttribute("data-points")) >= 3);

    await page.locator("#kill").click();
    await expect(page.locator("#kill-dialog").isVisible()).resolves.toBe(true);
    // Cancel first: nothing happens.
    await page.locator("#kill-dialog button.ghost").click();
    expect(stoppedAt).toBe(0);
    await page.locator("#kill").click();
    await page.locator("#kill-dialog input[name=reason]").fill("looping on the same answer");
    const clickedAt = Date.now();
    await page.locator("#kill-confirm").click();

    const err = await loop;
    expect(err.status).toBe(403);
    expect(stoppedAt - clickedAt).toBeLessThan(5000);
    await page.locator('#detail-badge [data-state="killed"]').waitFor();
    await expect(page.locator(".killed-note").textContent()).resolves.toContain("looping on the same answer");
    await page.locator('.path [data-step="killed"]').waitFor();
    await expect(page.locator("#kill").isDisabled()).resolves.toBe(true);
    const s = (await op(`/v1/sessions/${id}`)).json;
    expect(s.state).toBe("killed");
    expect(s.killed).toMatchObject({ by: "alice", reason: "looping on the same answer" });
    // After the kill, nothing more went out.
    const after = calls;
    await new Promise((r) => setTimeout(r, 300));
    expect(calls).toBe(after);
    expect(problems.get(page)).toEqual([]);
    await page.close();
  });

  it("pages and filters sessions by agent, user and state, and shows new ones live", { timeout: 60_000 }, async () => {
    const agentName = `pager-${run}`;
    const ids: string[] = [];
    for (let i = 0; i < 28; i++) ids.push(await openSession({ budget: { session_usd: 1 } }, { agent: agentName, user: i % 2 ? "gus" : "hal" }, "pg"));
    const other = await openSession({}, { agent: `other-${run}`, user: "gus" }, "pg-other");
    await op(`/v1/sessions/${ids[3]}/kill`, { body: { reason: "paging" } });
    await op(`/v1/sessions/${ids[20]}/kill`, { body: { reason: "paging" } });
    await until(() => op(`/v1/sessions?agent=${agentName}&state=killed`), (r) => r.json.total === 2);

    const page = await openConsole(`#sessions?agent=${agentName}`);
    const rowIds = () => page.locator("#sessions-body tr").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-session")));
    const newestFirst = [...ids].reverse();
    await page.waitForFunction(() => document.querySelector("#page-range")?.textContent === "1–25 of 28");
    expect(await rowIds()).toEqual(newestFirst.slice(0, 25));
    await page.locator("#page-older").click();
    await page.waitForFunction(() => document.querySelector("#page-range")?.textContent === "26–28 of 28");
    expect(await rowIds()).toEqual(newestFirst.slice(25));
    await expect(page.locator("#page-older").isDisabled()).resolves.toBe(true);
    await page.locator("#page-newer").click();
    await page.waitForFunction(() => document.querySelector("#page-range")?.textContent === "1–25 of 28");

    // State chips: the two killed ones.
    await page.locator('[data-filter-state="killed"]').click();
    await page.waitForFunction(() => document.querySelector("#page-range")?.textContent === "1–2 of 2");
    expect(await rowIds()).toEqual([ids[20], ids[3]]);
    expect(page.url()).toContain("state=killed");
    await page.locator('[data-filter-state="killed"]').click();
    await page.waitForFunction(() => document.querySelector("#page-range")?.textContent === "1–25 of 28");

    // User, typed into the filter; the other agent's session of the same user stays out.
    await page.locator('input[name="user"]').fill("gus");
    await page.locator('input[name="user"]').press("Enter");
    await page.waitForFunction(() => document.querySelector("#page-range")?.textContent === "1–14 of 14");
    expect(await rowIds()).toEqual(newestFirst.filter((id) => ids.indexOf(id) % 2 === 1));
    expect(await rowIds()).not.toContain(other);

    // A session that opens now and fits the filter appears at the top without a reload.
    const late = await openSession({}, { agent: agentName, user: "gus" }, "pg-late");
    await page.waitForFunction(() => document.querySelector("#page-range")?.textContent === "1–15 of 15");
    expect((await rowIds())[0]).toBe(late);
    // Rows update in place: a kill shows on the row.
    await op(`/v1/sessions/${late}/kill`, { body: { reason: "live row" } });
    await page.locator(`#sessions-body tr[data-session="${late}"] [data-state="killed"]`).waitFor();

    // The time filter: nothing of this run opened more than an hour ago.
    await page.locator('select[name="range"]').selectOption("1h");
    await page.waitForFunction(() => document.querySelector("#page-range")?.textContent === "1–15 of 15");
    await page.goto(`${gov.url}/?tenant=acme#sessions?agent=${agentName}&until=1h`);
    await page.locator("#sessions-total").filter({ hasText: "0 matches" }).waitFor();
    expect(problems.get(page)).toEqual([]);
    await page.close();
  });

  it("fits a 390 px phone and a 1440 px screen: no clipped columns, no sideways scrolling", { timeout: 60_000 }, async () => {
    const id = await openSession(
      { budget: { session_usd: 2.5 }, actions: { rules: { wire_transfer: { amount: { require_approval_above: 1000 } } } } },
      { agent: "a-rather-long-agent-name-for-narrow-screens", user: "someone.with.a.long.address@example.com", task: "reconcile the March invoices and refund duplicates" },
      "narrow",
    );
    await chat(id);
    await op(`/v1/sessions/${id}/actions`, { body: { action: "wire_transfer", args: { amount: 4200, iban: "DE89370400440532013000", memo: "invoice 2211, second of three" } } });

    for (const width of [390, 1440]) {
      const page = await openConsole("#sessions", { width, height: 844 });
      await page.locator(`#sessions-body tr[data-session="${id}"]`).waitFor();
      // Every cell of the session's row (a card on a phone) is wide enough to read, and none clips its text.
      const cells = await page.locator(`#sessions-body tr[data-session="${id}"] td`).evaluateAll((tds) =>
        tds.filter((td) => getComputedStyle(td).display !== "none").map((td) => ({ label: td.getAttribute("data-label"), width: td.getBoundingClientRect().width, clipped: td.scrollWidth > td.clientWidth + 1 })),
      );
      expect(cells.length).toBeGreaterThanOrEqual(width < 500 ? 6 : 8);
      for (const c of cells) {
        expect(c.clipped, `${c.label} at ${width}px`).toBe(false);
        expect(c.width, `${c.label} at ${width}px`).toBeGreaterThanOrEqual(c.label === "State" || c.label === "Pending approvals" ? 40 : 80);
      }
      await page.screenshot({ path: `${SHOTS}/console-${width}-sessions.png`, fullPage: width > 500 });
      expect(await overflowing(page)).toEqual([]);
      expect((await tablesFit(page)).bad, `#sessions at ${width}px`).toEqual([]);

      for (const [hash, ready] of [
        ["#overview", '[data-chart="tenant-spend"]'],
        ["#approvals", `#approvals [data-session="${id}"]`],
        [`#session=${id}`, '[data-chart="session-spend"]'],
      ] as const) {
        await page.goto(`${gov.url}/?tenant=acme${hash}`);
        await page.locator(ready).waitFor();
        await page.waitForTimeout(300);
        expect(await overflowing(page), `${hash} at ${width}px`).toEqual([]);
        const tables = await tablesFit(page);
        expect(tables.bad, `${hash} at ${width}px`).toEqual([]);
        const charts = await chartsFit(page);
        expect(charts.bad, `${hash} at ${width}px`).toEqual([]);
        if (hash !== "#approvals") expect(charts.charts, hash).toBe(1);
        await page.screenshot({ path: `${SHOTS}/console-${width}-${hash.replace(/[#=]/g, "").replace(/session.*/, "session")}.png`, fullPage: true });
      }
      expect(problems.get(page)).toEqual([]);
      await page.close();
    }
  });
});
