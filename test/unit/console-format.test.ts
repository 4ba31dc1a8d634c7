import { describe, expect, it } from "vitest";
import { decimalsFor, usd } from "../../console/src/format";

// The console shows amounts side by side with one precision, enough that they add up.
const nanos = (s: string) => Math.round(Number(s.replace(/[$,]/g, "")) * 1e9);

describe("console amounts", () => {
  it("shows cents when cents are exact, and every digit the actor counted when they are not", () => {
    expect(usd(5)).toBe("$5.00");
    expect(usd(1234.5)).toBe("$1,234.50");
    expect(usd(0.0001116)).toBe("$0.0001116");
    expect(usd(0.000000001)).toBe("$0.000000001");
    expect(usd(null)).toBe("–");
  });

  it("makes spent + reserved + remaining read as the budget", () => {
    const cases = [
      { budget: 5, spent: 0.0001116, reserved: 0.0123 },
      { budget: 2.5, spent: 1.999999999, reserved: 0 },
      { budget: 1000, spent: 333.333333333, reserved: 333.333333333 },
      { budget: 0.03, spent: 0.01, reserved: 0.005 },
    ];
    for (const c of cases) {
      const remaining = (Math.round(c.budget * 1e9) - Math.round(c.spent * 1e9) - Math.round(c.reserved * 1e9)) / 1e9;
      const d = decimalsFor([c.spent, c.reserved, remaining, c.budget]);
      const shown = [c.spent, c.reserved, remaining].map((v) => usd(v, d));
      expect(shown.reduce((t, s) => t + nanos(s), 0), JSON.stringify({ c, shown })).toBe(nanos(usd(c.budget, d)));
      // All four share the precision, so the columns line up.
      expect(new Set([...shown, usd(c.budget, d)].map((s) => s.split(".")[1].length)).size).toBe(1);
    }
  });
});
