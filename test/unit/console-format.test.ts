import { describe, expect, it } from "vitest";
import { decimalsFor, usd, usdTicks } from "../../console/src/format";

// The console shows every amount exactly, with no zero that is only padding, so the
// figures an operator adds up on screen add up.
const nanos = (s: string) => Math.round(Number(s.replace(/[$,]/g, "").replace("−", "-")) * 1e9);
const decimals = (s: string) => s.split(".")[1]?.length ?? 0;

/** A deterministic stream of nano-dollar amounts of every size and shape. */
function* amounts(seed: number, n: number): Generator<number> {
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const scale = [1, 10, 1_000, 10_000_000, 1_000_000_000, 1e12][x % 6];
    // Round figures (whole cents, whole dollars) as well as ragged ones.
    const raw = (x * 7919) % (scale * 100);
    yield i % 3 === 0 ? raw - (raw % 10_000_000) : raw;
  }
}

describe("console amounts", () => {
  it("shows cents when cents are exact, and every digit the actor counted when they are not", () => {
    expect(usd(5)).toBe("$5.00");
    expect(usd(1234.5)).toBe("$1,234.50");
    expect(usd(0.0001116)).toBe("$0.0001116");
    expect(usd(0.000000001)).toBe("$0.000000001");
    expect(usd(0.02)).toBe("$0.02");
    expect(usd(0.12)).toBe("$0.12");
    expect(usd(4200.000558)).toBe("$4,200.000558");
    expect(usd(0.1 + 0.2)).toBe("$0.30");
    expect(usd(-0.5)).toBe("−$0.50");
    expect(usd(null)).toBe("–");
  });

  it("never pads with zeros past the cents: what the QA pass saw is gone", () => {
    // The same amounts the console used to show as $0.02000000, $5.00000 and $0.12000000
    // beside amounts with more digits.
    for (const v of [0.02, 5, 0.12]) {
      const shown = usd(v);
      expect(decimals(shown), shown).toBe(2);
    }
    for (const n of amounts(7, 2000)) {
      const shown = usd(n / 1e9);
      const digits = shown.split(".")[1];
      expect(nanos(shown), shown).toBe(n);
      if (digits.length > 2) expect(digits.endsWith("0"), shown).toBe(false);
      expect(digits.length).toBeLessThanOrEqual(9);
    }
  });

  it("makes spent + reserved + remaining, as shown, read as the budget as shown", () => {
    const cases = [
      { budget: 5, spent: 0.0001116, reserved: 0.0123 },
      { budget: 2.5, spent: 1.999999999, reserved: 0 },
      { budget: 1000, spent: 333.333333333, reserved: 333.333333333 },
      { budget: 0.03, spent: 0.01, reserved: 0.005 },
      { budget: 2.5, spent: 0.0000297, reserved: 0 },
    ];
    const gen = amounts(42, 3000);
    for (let i = 0; i < 1000; i++) {
      const budget = gen.next().value! + 1;
      const spent = gen.next().value! % budget;
      const reserved = gen.next().value! % (budget - spent + 1);
      cases.push({ budget: budget / 1e9, spent: spent / 1e9, reserved: reserved / 1e9 });
    }
    for (const c of cases) {
      // As the actor counts: in nano-dollars.
      const remaining = (Math.round(c.budget * 1e9) - Math.round(c.spent * 1e9) - Math.round(c.reserved * 1e9)) / 1e9;
      const shown = [c.spent, c.reserved, remaining].map((v) => usd(v));
      expect(shown.reduce((t, s) => t + nanos(s), 0), JSON.stringify({ c, shown })).toBe(nanos(usd(c.budget)));
    }
  });

  it("gives a column the decimals of its widest amount, to align on", () => {
    expect(decimalsFor([0.02, 5, 0.12])).toBe(2);
    expect(decimalsFor([0.15, 0.0001298])).toBe(7);
    expect(decimalsFor([])).toBe(2);
    expect(decimalsFor([0.5], 0)).toBe(1);
  });

  it("labels a chart's money axis with one precision that tells the ticks apart", () => {
    expect(usdTicks([0, 0.05, 0.1, 0.15], 0.05)).toEqual(["$0", "$0.05", "$0.10", "$0.15"]);
    expect(usdTicks([0, 0.00005, 0.0001, 0.00015], 0.00005)).toEqual(["$0", "$0.00005", "$0.00010", "$0.00015"]);
    expect(usdTicks([0, 0.25, 0.5], 0.25)).toEqual(["$0", "$0.25", "$0.50"]);
    expect(usdTicks([0, 1, 2, 3], 1)).toEqual(["$0", "$1", "$2", "$3"]);
    expect(usdTicks([0, 500, 1000, 1500], 500)).toEqual(["$0", "$500", "$1,000", "$1,500"]);
    expect(usdTicks([0, 2500, 5000, 7500, 10000], 2500)).toEqual(["$0", "$2.5k", "$5.0k", "$7.5k", "$10.0k"]);
  });
});
