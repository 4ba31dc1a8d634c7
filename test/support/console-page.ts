import { existsSync } from "node:fs";
import { chromium, type Browser, type Page } from "playwright-core";
import { ROOT, TOKENS } from "./server";

// What an operator would see as broken on a console page, measured in the page itself:
// things wider than the screen, tables wider than their card, chart labels cut off. And
// the browser the console tests open those pages in.

/** Everything wider than the viewport that is not inside a scroll box of its own. */
export async function overflowing(page: Page): Promise<string[]> {
  return page.evaluate(() => {
    const vw = document.documentElement.clientWidth;
    const bad: string[] = [];
    if (document.documentElement.scrollWidth > vw) bad.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ${vw}`);
    for (const el of document.querySelectorAll<HTMLElement>("main *")) {
      const r = el.getBoundingClientRect();
      if (!r.width || r.right <= vw + 0.5) continue;
      let scrolled = false;
      for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
        if (/(auto|scroll|hidden)/.test(getComputedStyle(p).overflowX)) scrolled = true;
      }
      if (!scrolled) bad.push(`${el.tagName.toLowerCase()}.${el.className} ends at ${Math.round(r.right)}`);
    }
    return bad.slice(0, 10);
  });
}

/**
 * Every visible table fits inside its card: no wider than the card's content box, no
 * sideways scroller around it, no cell whose content spills out. Returns the misfits with
 * their widths, and how many tables were measured.
 */
export async function tablesFit(page: Page): Promise<{ tables: number; bad: string[] }> {
  return page.evaluate(() => {
    const bad: string[] = [];
    let tables = 0;
    // No named functions in here: the test runner's transform would name them with a helper the page lacks.
    for (const table of document.querySelectorAll<HTMLTableElement>("main table")) {
      if (!table.getClientRects().length) continue;
      tables++;
      const t = `table${table.id ? `#${table.id}` : ""}.${[...table.classList].join(".")}`;
      const card = table.closest<HTMLElement>(".card, .approval") ?? document.querySelector("main")!;
      const cs = getComputedStyle(card);
      const inner = card.getBoundingClientRect().right - parseFloat(cs.paddingRight) - parseFloat(cs.borderRightWidth);
      const r = table.getBoundingClientRect();
      if (r.right > inner + 0.5) bad.push(`${t} is ${Math.round(r.width)} px wide, its card has ${Math.round(inner - r.left)}`);
      if (table.scrollWidth > table.clientWidth + 1) bad.push(`${t} holds ${table.scrollWidth} px in ${table.clientWidth}`);
      for (let p = table.parentElement; p && p !== card; p = p.parentElement) {
        if (p.scrollWidth > p.clientWidth + 1) bad.push(`${p.tagName.toLowerCase()}.${p.className} around ${t} scrolls sideways: ${p.scrollWidth} > ${p.clientWidth}`);
      }
      for (const cell of table.querySelectorAll<HTMLElement>("td, th")) {
        if (cell.getClientRects().length && cell.scrollWidth > cell.clientWidth + 1) bad.push(`${t} cell "${cell.getAttribute("data-label") ?? cell.textContent?.slice(0, 30)}" spills: ${cell.scrollWidth} > ${cell.clientWidth}`);
      }
    }
    return { tables, bad: bad.slice(0, 10) };
  });
}

/**
 * Every chart keeps its labels inside its canvas: the room right of the plot holds half
 * the widest time label (they are centred on their ticks), and the canvas's last pixel
 * columns are blank (a label cut off at the edge would leave ink there).
 */
export async function chartsFit(page: Page): Promise<{ charts: number; bad: string[] }> {
  return page.evaluate(() => {
    const bad: string[] = [];
    const charts = [...document.querySelectorAll<HTMLElement>("[data-chart]")].filter((el) => el.querySelector("canvas"));
    const ruler = document.createElement("canvas").getContext("2d")!;
    for (const el of charts) {
      const canvas = el.querySelector("canvas")!;
      const over = el.querySelector(".u-over")!.getBoundingClientRect();
      const box = canvas.getBoundingClientRect();
      ruler.font = `12px ${getComputedStyle(el).fontFamily}`;
      const widest = Math.max(ruler.measureText("00:00:00").width, ruler.measureText("Nov 30").width);
      if (box.right - over.right < widest / 2) bad.push(`${el.dataset.chart}: ${Math.round(box.right - over.right)} px right of the plot, half a label is ${Math.round(widest / 2)}`);
      const ink = canvas.getContext("2d")!.getImageData(canvas.width - 2, 0, 2, canvas.height).data;
      let touched = 0;
      for (let i = 3; i < ink.length; i += 4) if (ink[i] > 0) touched++;
      if (touched) bad.push(`${el.dataset.chart}: ${touched} pixels drawn at the canvas's right edge`);
    }
    return { charts: charts.length, bad };
  });
}

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
/** Where the browser tests leave their screenshots, for a person to look at. */
export const SHOTS = process.env.CONSOLE_SHOTS ?? "/tmp";

/** The console is the Vite build that `npm test` makes first; without it every page is a 404. */
export function needConsoleBuild() {
  if (!existsSync(`${ROOT}/console/dist/index.html`)) throw new Error("console/dist is missing: run `npm run build` (npm test does it first)");
}

/**
 * Headless Chromium from the OS (Debian's `chromium`) for one test file, opening the console
 * of the Governor at `base()`. Every page records its uncaught errors in `problems`, which
 * the tests expect to stay empty.
 */
export function consoleBrowser(base: () => string) {
  let browser: Browser | undefined;
  const problems = new WeakMap<Page, string[]>();
  const need = (): Browser => {
    if (!browser) throw new Error(`Chromium is missing at ${CHROMIUM}: install it with \`apt-get update && apt-get install -y chromium\` (or set CHROMIUM_PATH)`);
    return browser;
  };
  const newPage = async ({ width = 1440, height = 960 } = {}): Promise<Page> => {
    // Downloads kept: the audit view's CSV export is one.
    const page = await need().newPage({ viewport: { width, height }, acceptDownloads: true });
    const list: string[] = [];
    problems.set(page, list);
    page.on("pageerror", (e) => list.push(String(e)));
    return page;
  };
  /** The console signed in with `token`, once its tenant socket is live. */
  const open = async (hash = "", { token = TOKENS.operator as string, tenant = "acme", ...page }: { token?: string; tenant?: string; width?: number; height?: number } = {}): Promise<Page> => {
    const p = await newPage(page);
    await p.goto(`${base()}/?token=${token}&tenant=${tenant}${hash}`);
    await p.locator('#conn-wrap .conn[data-status="live"]').waitFor();
    return p;
  };
  return {
    problems,
    need,
    newPage,
    open,
    /** Starts Chromium when the OS has it; without it, `need()` says how to get it. */
    async launch() {
      if (!existsSync(CHROMIUM)) return;
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
      });
    },
    close: async () => browser?.close(),
  };
}
