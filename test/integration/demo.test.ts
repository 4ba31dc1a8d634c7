import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { toNanos } from "../../lib/money";
import { ROOT } from "../support/server";

// `npm run demo` as a user runs it (its own Governor and stand-in provider): every line it
// prints about money adds up to the budget, to the nano-dollar.

const run = promisify(execFile);
const MONEY = /spent \$([\d.]+) \+ reserved \$([\d.]+) \+ remaining \$([\d.]+) = budget \$([\d.]+)/;

describe("npm run demo", () => {
  it("prints spent + reserved + remaining = budget on every call, and when the session ends", async () => {
    const { stdout } = await run(process.execPath, ["--import", "tsx", join(ROOT, "scripts/demo.ts")], { cwd: ROOT, timeout: 120_000 });
    const lines = stdout.split("\n").filter((l) => MONEY.test(l));
    const calls = lines.filter((l) => /^call\s+\d+:/.test(l));
    expect(calls.length, stdout).toBeGreaterThanOrEqual(3);
    expect(lines.some((l) => l.startsWith("session is killed")), stdout).toBe(true);
    for (const l of lines) {
      const [spent, reserved, remaining, budget] = MONEY.exec(l)!.slice(1).map(Number);
      expect(budget).toBe(0.05);
      expect(toNanos(spent) + toNanos(reserved) + toNanos(remaining), l).toBe(toNanos(budget));
    }
    // Each call's cost is what it added to the spend.
    let before = 0;
    for (const l of calls) {
      const cost = Number(/cost \$([\d.]+)/.exec(l)![1]);
      const spent = Number(MONEY.exec(l)![1]);
      expect(toNanos(before) + toNanos(cost), l).toBe(toNanos(spent));
      before = spent;
    }
    expect(stdout).toMatch(/a new call after the kill: 403 session_killed/);
  }, 150_000);
});
