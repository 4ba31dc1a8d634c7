import { existsSync } from "node:fs";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { client, startGovernor, TOKENS, type Governor } from "../support/server";

// The console in a real headless Chromium against a real `partykit dev`: rows appear live,
// an approval is granted and a session killed from the page, and HTTP confirms both.
// Chromium comes from the OS (Debian: `apt-get install -y chromium`); no browser download.

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SHOT = "/tmp/console.png";

let gov: Governor;
let browser: Browser;
let api: ReturnType<typeof client>;

/** Polls an HTTP read until `ok` holds, so assertions do not race the actor. */
async function until<T>(read: () => Promise<T>, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms}ms; last value: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every test starts here, so a machine without Chromium gets failures that say what to install. */
function needBrowser(): Browser {
  if (!browser) throw new Error(`Chromium is missing at ${CHROMIUM}: install it with \`apt-get update && apt-get install -y chromium\` (or set CHROMIUM_PATH)`);
  return browser;
}

async function openConsole(token: string, hash = ""): Promise<Page> {
  const page = await needBrowser().newPage({ viewport: { width: 1440, height: 960 } });
  const problems: string[] = [];
  page.on("pageerror", (e) => problems.push(String(e)));
  (page as Page & { problems?: string[] }).problems = problems;
  await page.goto(`${gov.url}/?token=${token}&tenant=acme${hash}`);
  await page.locator('#conn[data-status="live"]').waitFor();
  return page;
}

const problemsOf = (page: Page) => (page as Page & { problems?: string[] }).problems ?? [];

describe("web console", () => {
  beforeAll(async () => {
    // A missing browser fails every test below with this message; it never skips them.
    if (!existsSync(CHROMIUM)) return;
    gov = await startGovernor();
    api = client(gov.url, TOKENS.operator);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
    });
  });

  afterAll(async () => {
    await browser?.close();
    await gov?.stop();
  });

  it("is served at / and asks for a token without one", async () => {
    const page = await needBrowser().newPage();
    await page.goto(`${gov.url}/`);
    await expect(page.locator("#login").isVisible()).resolves.toBe(true);
    await page.close();
  });

  it("shows sessions live, approves a pending action and kills the session", { timeout: 90_000 }, async () => {
    needBrowser();
    const page = await openConsole(TOKENS.operator);
    // The token is taken off the address bar once stored.
    expect(page.url()).not.toContain(TOKENS.operator);

    const id = `console-${Date.now()}`;
    const opened = await api("/v1/sessions", {
      body: {
        id,
        agent: "support-bot",
        user: "<img src=x onerror=window.__xss=1>",
        task: "refund a customer",
        policy: { budget: { session_usd: 5 }, actions: { rules: { refund: { amount: { require_approval_above: 500 } } } } },
      },
    });
    expect(opened.status).toBe(201);

    const row = page.locator(`#sessions-body tr[data-session="${id}"]`);
    await row.waitFor();
    await expect(row.locator(".badge").textContent()).resolves.toBe("active");
    // Data is text, never markup.
    await expect(row.locator("td").nth(4).textContent()).resolves.toBe("<img src=x onerror=window.__xss=1>");
    expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();

    // A small allowed action, then one that needs a human.
    expect((await api(`/v1/sessions/${id}/actions`, { body: { action: "lookup", costUsd: 0.25 } })).json.decision).toBe("allow");
    await row.click();
    await page.locator("#detail").waitFor();
    expect(page.url()).toContain(`#session=${id}`);

    const review = await api(`/v1/sessions/${id}/actions`, { body: { action: "refund", args: { amount: 900 } } });
    expect(review.status).toBe(200);
    expect(review.json.decision).toBe("review");
    const approvalId: string = review.json.approvalId;

    const card = page.locator(`#approvals [data-approval="${approvalId}"]`);
    await card.waitFor();
    await expect(card.textContent()).resolves.toContain("refund");
    await page.locator('#detail-badge [data-state="awaiting-approval"]').waitFor();
    await page.locator("#machine .node.current.state-awaiting-approval").waitFor();
    await row.locator(".count.hot").waitFor();
    await page.locator('#events tr[data-type="approval.requested"]').waitFor();
    await page.locator('#events tr[data-type="session.opened"]').waitFor(); // backfilled history

    // An auditor may look but not decide: the server's refusal shows as a banner.
    const auditor = await openConsole(TOKENS.auditor, `#session=${id}`);
    await auditor.locator(`#approvals [data-approval="${approvalId}"] button.primary`).click();
    const banner = auditor.locator(".banner.error");
    await banner.waitFor();
    await expect(banner.textContent()).resolves.toContain("forbidden");
    await banner.locator("button").click();
    await expect(banner.count()).resolves.toBe(0);
    expect(problemsOf(auditor)).toEqual([]);
    await auditor.close();

    await card.locator("input.note").fill("customer verified");
    await card.locator("button.primary").click();
    const approved = await until(
      () => api(`/v1/sessions/${id}`),
      (r) => r.json?.state === "active" && r.json.pendingApprovals.length === 0,
    );
    expect(approved.json.counters.reviews).toBeGreaterThanOrEqual(1);
    await card.waitFor({ state: "detached" });
    await page.locator('#events tr[data-type="approval.granted"]').waitFor();
    await expect(page.locator('#events tr[data-type="approval.granted"]').textContent()).resolves.toContain("customer verified");
    await page.locator('#detail-badge [data-state="active"]').waitFor();

    await page.locator("#kill").click();
    await page.locator("#kill-dialog input[name=reason]").fill("runaway refunds");
    await page.locator("#kill-confirm").click();
    await page.locator('#detail-badge [data-state="killed"]').waitFor();
    await row.locator('.badge[data-state="killed"]').waitFor();
    await page.locator("#machine .node.current.state-killed").waitFor();
    const killed = await until(
      () => api(`/v1/sessions/${id}`),
      (r) => r.json?.state === "killed",
    );
    expect(killed.json.killed).toMatchObject({ by: "alice", reason: "runaway refunds" });
    await expect(page.locator("#kill").isDisabled()).resolves.toBe(true);

    await page.screenshot({ path: SHOT, fullPage: true });
    expect(problemsOf(page)).toEqual([]);
    await page.close();
  });

  it("sends a refused token back to the sign-in form", async () => {
    const page = await needBrowser().newPage();
    await page.goto(`${gov.url}/?token=not-a-real-token&tenant=acme`);
    await page.locator("#login").waitFor();
    await expect(page.locator(".banner.error").first().textContent()).resolves.toContain("unauthorized");
    await page.close();
  });
});
