import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase } from "../../audit/db";
import { parseSpendQuery } from "../../audit/filters";
import { prepare } from "../../audit/ingest";
import { spend } from "../../audit/query";
import { AuditStore } from "../../audit/store";
import { freshStoreDir } from "../support/audit-template";
import { SessionLog } from "../support/logs";

// Spend per hour and per minute: the console's chart of spend over time starts from these
// buckets. Each bucket holds what its events added to their sessions' spend, keyed by the
// bucket's start (UTC), oldest first, and the buckets add up to the sessions' spend.

const HOUR = 3_600_000;
const MIN = 60_000;
// A fixed hour boundary a few days back, so every bucket is known exactly.
const T0 = Math.floor((Date.now() - 3 * 86_400_000) / HOUR) * HOUR;

const scratch = mkdtempSync(join(tmpdir(), "governor-audit-buckets-"));
let store: AuditStore;

const a = new SessionLog("acme", "b1", T0 - 1500, { user: "u1", agent: "bot" });
const b = new SessionLog("acme", "b2", T0 + 5 * MIN, { user: "u2", agent: "bot" });
const other = new SessionLog("globex", "b1", T0, { user: "u1" });

function at(log: SessionLog, ts: number, f: () => void) {
  // apply() adds its 1 s step before stamping the event.
  log.now = ts - 1000;
  f();
}

beforeAll(async () => {
  at(a, T0 + 10_000, () => a.action("search", 0.25)); // hour 0, minute 0
  at(a, T0 + 40_000, () => a.llm("gpt-4o-mini", 0.5)); // reserve, and settle a second later, in minute 0
  at(a, T0 + 2 * MIN + 1, () => a.cost(0.125)); // minute 2
  at(b, T0 + HOUR + 30 * MIN, () => b.action("search", 1)); // hour 1
  at(b, T0 + 3 * HOUR, () => b.action("refund", 2, {}, { amount: 500 })); // hour 3: waits for approval, charged on the grant
  at(b, T0 + 3 * HOUR + 61 * MIN, () => b.approve(b.summary.pendingApprovals[0].approvalId)); // hour 4
  at(other, T0 + 10_000, () => other.action("search", 7));
  store = new AuditStore(await openDatabase({ dir: await freshStoreDir(scratch) }));
  for (const log of [a, b, other]) {
    const from = await store.cursor(log.tenant, log.session);
    await store.append(log.tenant, log.session, from.seq, prepare(log.tenant, log.session, from, log.raw()));
  }
});

afterAll(async () => {
  await store?.close();
  rmSync(scratch, { recursive: true, force: true });
});

const iso = (t: number) => new Date(t).toISOString();

describe("audit spend by time bucket", () => {
  it("rolls up by hour, oldest first, each hour's spend where its events fell", async () => {
    const r = await spend(store.db, "acme", "hour", { since: T0 - HOUR, until: T0 + 10 * HOUR });
    expect(r.by).toBe("hour");
    const spent = r.rows.filter((x) => x.spentUsd > 0).map((x) => [x.key, x.spentUsd]);
    expect(spent).toEqual([
      [iso(T0), 0.875],
      [iso(T0 + HOUR), 1],
      [iso(T0 + 4 * HOUR), 2],
    ]);
    // The session's opening, half a second before T0, is a row of its own hour with no spend.
    expect(r.rows[0]).toEqual({ key: iso(T0 - HOUR), spentUsd: 0, calls: 0 });
    const total = r.rows.reduce((n, x) => n + Math.round(x.spentUsd * 1e9), 0) / 1e9;
    expect(total).toBe(a.summary.spentUsd + b.summary.spentUsd);
    // Calls decided: the action, the reserved LLM call, and b's two actions.
    expect(r.rows.reduce((n, x) => n + x.calls, 0)).toBe(4);
  });

  it("rolls up by minute within a range, and the range and filters apply", async () => {
    const r = await spend(store.db, "acme", "minute", { since: T0, until: T0 + 10 * MIN, agent: "bot" });
    expect(r.rows.map((x) => [x.key, x.spentUsd, x.calls])).toEqual([
      [iso(T0), 0.75, 2],
      [iso(T0 + 2 * MIN), 0.125, 0],
      [iso(T0 + 5 * MIN), 0, 0],
    ]);
    // Another tenant's spend in the same minute is not acme's.
    expect((await spend(store.db, "globex", "minute", { since: T0, until: T0 + MIN })).rows).toEqual([{ key: iso(T0), spentUsd: 7, calls: 1 }]);
  });

  it("takes hour and minute from the query string, and still refuses what it does not know", () => {
    expect(parseSpendQuery(new URLSearchParams({ by: "hour", since: "24h" })).by).toBe("hour");
    expect(parseSpendQuery(new URLSearchParams({ by: "minute" })).by).toBe("minute");
    expect(() => parseSpendQuery(new URLSearchParams({ by: "second" }))).toThrow(/by/);
  });
});
