import type { Page } from "playwright-core";

// What an operator would see as broken on a console page, measured in the page itself:
// things wider than the screen, tables wider than their card, chart labels cut off.

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
