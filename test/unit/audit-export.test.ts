import { text } from "node:stream/consumers";
import { parse as parseCsv } from "csv-parse/sync";
import { describe, expect, it } from "vitest";
import { exportStream } from "../../audit/export";
import type { AuditEventItem } from "../../schema/answers";
import { usdDecimal } from "../../lib/money";

// Amounts in the CSV export are what a spreadsheet or a script reads as the amount: plain
// decimals, exact to the nano-dollar the store keeps, never "2e-8".

function item(seq: number, costUsd: number, estimateUsd: number | null): AuditEventItem {
  return {
    tenant: "acme",
    session: "s1",
    seq,
    ts: 1_750_000_000_000 + seq,
    type: "request.settled",
    eventId: `e${seq}`,
    user: null,
    agent: null,
    task: null,
    run: null,
    action: null,
    model: "gpt-4o-mini",
    decision: null,
    code: null,
    rule: null,
    costUsd,
    estimateUsd,
    hash: "h".repeat(64),
    prev: "p".repeat(64),
    event: { data: {} },
  };
}

const CASES: Array<[number, string]> = [
  [2e-8, "0.00000002"],
  [1e-9, "0.000000001"],
  [0.000123, "0.000123"],
  [0.25, "0.25"],
  [0.1 + 0.2, "0.3"],
  [3, "3"],
  [1234.5, "1234.5"],
  [99_999.999999999, "99999.999999999"],
  [0, "0"],
];

describe("CSV export amounts", () => {
  it("writes cost_usd and estimate_usd as fixed decimals, exact for the stored nano-dollars", async () => {
    const items = CASES.map(([usd], i) => item(i + 1, usd, i % 2 ? null : usd / 2));
    const csv = await text(exportStream("csv", (async function* () {
      yield* items;
    })()));
    expect(csv).not.toMatch(/\de-?\d/i);
    const rows = parseCsv(csv, { columns: true }) as Array<Record<string, string>>;
    expect(rows.map((r) => r.cost_usd)).toEqual(CASES.map(([, s]) => s));
    rows.forEach((r, i) => {
      expect(Math.round(Number(r.cost_usd) * 1e9)).toBe(Math.round(CASES[i][0] * 1e9));
      expect(r.estimate_usd).toBe(i % 2 ? "" : usdDecimal(CASES[i][0] / 2));
    });
    expect(rows[0].estimate_usd).toBe("0.00000001");
  });

  it("keeps the sign of a negative amount and never prints -0", () => {
    expect(usdDecimal(-0.5)).toBe("-0.5");
    expect(usdDecimal(-1e-12)).toBe("0");
  });
});
