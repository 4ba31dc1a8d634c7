import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseCsv } from "csv-parse/sync";
import { stringify as stringifyCsv } from "csv-stringify/sync";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase } from "../../audit/db";
import { CSV_COLUMNS, csvRecord, exportStream } from "../../audit/export";
import { parseEventQuery, parseExportQuery, parseSpendQuery } from "../../audit/filters";
import { emptyCursor, prepare, prepareYielding } from "../../audit/ingest";
import { eachEvent, eventPage, spend } from "../../audit/query";
import type { AuditEventItem } from "../../schema/answers";
import { AuditStore, HeadMovedError } from "../../audit/store";
import { listErasures, reapplyErasures, recordErasure } from "../../audit/erase";
import { and, eq } from "drizzle-orm";
import { auditErasures, auditEvents, auditSessions } from "../../schema/audit";
import { verifyChain, type Hashable } from "../../lib/chain";
import { reveal, type Pii } from "../../lib/pii";
import { BadRequestError } from "../../lib/errors";
import { freshStoreDir } from "../support/audit-template";
import { SessionLog } from "../support/logs";
import { startPostgres, type TestPostgres } from "../support/postgres";

// The store on both engines it supports, fed with logs made by the actor's own functions:
// what goes in verified comes out once, queries return exactly what matches, sums are
// the sessions' own numbers, and exports parse back to the same rows.

const DAY = 86_400_000;
const NOW = Date.now();

const pg = await startPostgres();
const scratch = mkdtempSync(join(tmpdir(), "governor-audit-unit-"));
if ("skip" in pg) console.warn(`\n[audit-store] Postgres tests SKIPPED: ${pg.skip}\n`);

/** Stores a log in batches of `size`, each batch from the store's own cursor. */
async function ingest(store: AuditStore, log: SessionLog, size = 7) {
  const raws = log.raw();
  for (let i = 0; i < raws.length; i += size) {
    const from = await store.cursor(log.tenant, log.session);
    // Each batch starts a little before the stored head, as a replayed page would.
    const p = prepare(log.tenant, log.session, from, raws.slice(Math.max(0, i - 2), i + size));
    expect(p.refused).toBeUndefined();
    await store.append(log.tenant, log.session, from.seq, p);
  }
}

type Key = `${string}#${number}`;
const key = (session: string, seq: number): Key => `${session}#${seq}`;

/** The scenario, with what each user and agent is expected to own, recorded as it is made. */
function scenario() {
  const byUser = new Map<string, Set<Key>>();
  const byAgent = new Map<string, Set<Key>>();
  const own = (m: Map<string, Set<Key>>, who: string, log: SessionLog, from: number) => {
    const set = m.get(who) ?? new Set();
    for (const e of log.events.slice(from)) set.add(key(log.session, e.seq));
    m.set(who, set);
  };
  const step = (log: SessionLog, user: string, agent: string, f: () => void) => {
    const from = log.events.length;
    f();
    own(byUser, user, log, from);
    own(byAgent, agent, log, from);
  };

  const s1 = new SessionLog("acme", "s1", NOW - 40 * DAY, { user: "u1", agent: "a1" });
  own(byUser, "u1", s1, 0);
  own(byAgent, "a1", s1, 0);
  for (let i = 0; i < 5; i++) step(s1, "u1", "a1", () => s1.action("search", 0.01));
  // A call made for another user inside u1's session is that user's, settle included.
  step(s1, "u2", "a1", () => s1.llm("gpt-4o-mini", 0.02, { user: "u2" }));
  step(s1, "u1", "a1", () => s1.cost(0.05));
  // The refund waits for approval; the grant (which charges it) is the requester's.
  step(s1, "u3", "a9", () => s1.action("refund", 1.5, { user: "u3", agent: "a9" }, { amount: 500 }));
  const approvalId = s1.summary.pendingApprovals[0].approvalId;
  step(s1, "u3", "a9", () => s1.approve(approvalId));

  // s1 is written as logs were before commitments (values in the clear inside the hash);
  // s2 and s3 as the actor writes them now (commitments inside, values beside).
  const s2 = new SessionLog("acme", "s2", NOW - 10 * DAY, { user: "u2", agent: "a2", policy: { budget: { session_usd: 0.1 } }, sealed: true });
  own(byUser, "u2", s2, 0);
  own(byAgent, "a2", s2, 0);
  for (let i = 0; i < 4; i++) step(s2, "u2", "a2", () => s2.llm("claude-sonnet-4", 0.03));
  step(s2, "u2", "a2", () => s2.kill("enough"));

  // Identifiers with commas, quotes, newlines and a spreadsheet formula.
  const tricky = 'O\'Brien, "Pat"\nline two';
  const s3 = new SessionLog("acme", "s3", NOW - 2 * DAY, { user: tricky, agent: "=1+2", task: "naïve ☃, task", sealed: true });
  own(byUser, tricky, s3, 0);
  own(byAgent, "=1+2", s3, 0);
  step(s3, tricky, "=1+2", () => s3.action("send,mail", 0.125));

  // Another tenant with the same session id and user: never seen from acme.
  const other = new SessionLog("globex", "s1", NOW - 5 * DAY, { user: "u1", agent: "a1" });
  other.action("search", 7);
  return { logs: [s1, s2, s3], other, byUser, byAgent, tricky };
}

const engines: Array<{ name: string; open: () => Promise<AuditStore>; skip?: string }> = [
  { name: "PGlite", open: async () => new AuditStore(await openDatabase({ dir: await freshStoreDir(scratch) })) },
  {
    name: "Postgres",
    skip: "skip" in pg ? pg.skip : undefined,
    open: async () => new AuditStore(await openDatabase({ databaseUrl: await (pg as TestPostgres).database(`store_${Date.now()}`) })),
  },
];

afterAll(async () => {
  if (!("skip" in pg)) await pg.stop();
  rmSync(scratch, { recursive: true, force: true });
});

for (const engine of engines) {
  describe.skipIf(engine.skip !== undefined)(`audit store on ${engine.name}`, () => {
    let store: AuditStore;
    const s = scenario();
    const all = s.logs.flatMap((l) => l.events.map((e) => ({ session: l.session, e })));

    beforeAll(async () => {
      store = await engine.open();
      for (const log of [...s.logs, s.other]) await ingest(store, log, log.session === "s1" ? 3 : 50);
    });
    afterAll(() => store?.close());

    const everything2 = async (tenant: string, q: Record<string, string>) => {
      const out: AuditEventItem[] = [];
      for await (const e of eachEvent(store.db, tenant, parseEventQuery(new URLSearchParams(q)), 100)) out.push(e);
      return out;
    };
    const everything = async (q: Record<string, string>) => {
      const out: AuditEventItem[] = [];
      for await (const e of eachEvent(store.db, "acme", parseEventQuery(new URLSearchParams(q)), 4)) out.push(e);
      return out;
    };

    it("stores every event once, chain intact, at the head the session reached", async () => {
      for (const log of s.logs) {
        const stored = await everything({ session: log.session });
        expect(stored.map((e) => e.seq)).toEqual(log.events.map((e) => e.seq));
        expect(stored.map((e) => e.event)).toEqual(log.raw());
        expect(verifyChain(stored.map((e) => e.event as Hashable & { hash: string }))).toBeUndefined();
        const row = await store.session("acme", log.session);
        expect(row).toMatchObject({ seq: log.head.seq, headHash: log.head.hash, spentNanos: log.snapshot.context.spentNanos });
      }
    });

    it("a second writer from a stale head is rolled back, never stored twice", async () => {
      const log = new SessionLog("scratch", "race", NOW - DAY, { user: "u9" });
      log.action("search", 0.5);
      const batch = prepare("scratch", "race", emptyCursor(), log.raw());
      await store.append("scratch", "race", 0, batch);
      await expect(store.append("scratch", "race", 0, batch)).rejects.toBeInstanceOf(HeadMovedError);
      expect((await eventPage(store.db, "scratch", { limit: 100, session: "race" })).events.length).toBe(log.events.length);
      expect((await store.session("scratch", "race"))?.seq).toBe(log.head.seq);
    });

    it("refuses an edited event and everything after it; stores what came before", async () => {
      const log = new SessionLog("acme", "forged", NOW - DAY, { user: "u8" });
      for (let i = 0; i < 4; i++) log.action("search", 0.25);
      const raws = log.raw() as Array<{ seq: number; data: { costUsd?: number } }>;
      raws[2].data.costUsd = 0.0001; // seq 3, edited after the fact
      const p = prepare("acme", "forged", emptyCursor(), raws);
      expect(p.refused).toEqual({ seq: 3, reason: "hash does not match the event's content" });
      expect(p.rows.map((r) => r.seq)).toEqual([1, 2]);

      // Edited and re-hashed: the next event's link gives it away.
      const rehashed = log.raw() as Array<Record<string, unknown>>;
      const { eventHash } = await import("../../lib/chain");
      (rehashed[2].data as { costUsd: number }).costUsd = 0.0001;
      rehashed[2].hash = eventHash(rehashed[2] as never);
      const q = prepare("acme", "forged", emptyCursor(), rehashed);
      expect(q.refused).toEqual({ seq: 4, reason: "prev does not match the previous event's hash" });

      // Another session's log served under this name.
      const elsewhere = prepare("acme", "not-s2", emptyCursor(), s.logs[1].raw());
      expect(elsewhere.refused?.reason).toMatch(/opens session acme:s2, not acme:not-s2/);

      // A gap (a dropped event) stops the batch without storing past it.
      const gap = prepare("acme", "forged", emptyCursor(), raws.filter((r) => r.seq !== 2));
      expect(gap.rows.map((r) => r.seq)).toEqual([1]);
      expect(gap.refused).toBeUndefined();
    });

    it("queries by user, agent, time and type return exactly the matching events", async () => {
      const keys = (xs: AuditEventItem[]) => xs.map((e) => key(e.session, e.seq)).sort();
      for (const [user, expected] of s.byUser) expect(keys(await everything({ user }))).toEqual([...expected].sort());
      for (const [agent, expected] of s.byAgent) expect(keys(await everything({ agent }))).toEqual([...expected].sort());

      const since = NOW - 11 * DAY;
      const until = NOW - 2 * DAY + 3000;
      const inWindow = all.filter(({ e }) => e.ts >= since && e.ts < until).map(({ session, e }) => key(session, e.seq));
      expect(inWindow.length).toBeGreaterThan(3);
      expect(keys(await everything({ since: String(since), until: new Date(until).toISOString() }))).toEqual(inWindow.sort());

      const denied = all.filter(({ e }) => e.type === "request.denied" || e.type === "session.killed").map(({ session, e }) => key(session, e.seq));
      expect(denied.length).toBeGreaterThan(0);
      expect(keys(await everything({ type: "request.denied,session.killed" }))).toEqual(denied.sort());
      const u2Denied = (await everything({ user: "u2", decision: "deny" })).map((e) => e.type);
      expect(u2Denied.length).toBeGreaterThan(0);
      expect(new Set(u2Denied)).toEqual(new Set(["request.denied"]));
      // Durations count back from now: nothing in this scenario is newer than a day.
      expect(await everything({ since: "1d" })).toEqual([]);
      expect((await everything({ since: "365d" })).length).toBe(all.length);
    });

    it("pages with a cursor: no event twice, none left out, in (time, session, seq) order", async () => {
      const seen: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await eventPage(store.db, "acme", { limit: 5, cursor, session: "s1" });
        seen.push(...page.events.map((e) => key(e.session, e.seq)));
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
      expect(seen).toEqual(s.logs[0].events.map((e) => key("s1", e.seq)));
      expect(() => parseEventQuery(new URLSearchParams({ cursor: "bogus" }))).not.toThrow();
      await expect(eventPage(store.db, "acme", { limit: 5, cursor: "bogus" })).rejects.toMatchObject({ code: "bad_request", field: "cursor" });
    });

    it("spend rollups equal the sessions' own spend", async () => {
      const summaries = s.logs.map((l) => l.summary);
      const total = summaries.reduce((n, x) => n + x.spentUsd, 0);
      const window = { since: NOW - 60 * DAY, until: NOW };
      const bySession = await spend(store.db, "acme", "session", window);
      expect(Object.fromEntries(bySession.rows.map((r) => [r.key, r.spentUsd]))).toEqual(Object.fromEntries(summaries.map((x) => [x.session, x.spentUsd])));
      for (const by of ["user", "agent", "model", "day"] as const) {
        const rows = (await spend(store.db, "acme", by, window)).rows;
        expect(rows.reduce((n, r) => n + Math.round(r.spentUsd * 1e9), 0)).toBe(Math.round(total * 1e9));
      }
      const byUser = Object.fromEntries((await spend(store.db, "acme", "user", window)).rows.map((r) => [r.key, r.spentUsd]));
      expect(byUser.u1).toBeCloseTo(0.1, 9);
      expect(byUser.u2).toBeCloseTo(0.02 + s.logs[1].summary.spentUsd, 9);
      expect(byUser.u3).toBeCloseTo(1.5, 9);
      const byModel = Object.fromEntries((await spend(store.db, "acme", "model", window)).rows.map((r) => [r.key, r]));
      expect(byModel["gpt-4o-mini"]).toMatchObject({ spentUsd: 0.02, calls: 1 });
      expect(byModel["claude-sonnet-4"].spentUsd).toBeCloseTo(s.logs[1].summary.spentUsd, 9);
      // Another tenant's $7 is not in acme's numbers.
      expect((await spend(store.db, "globex", "user", window)).rows).toEqual([{ key: "u1", spentUsd: 7, calls: 1 }]);
    });

    it("exports CSV that a CSV parser reads back to the same rows, and JSON/NDJSON of the same events", async () => {
      const text = async (format: "csv" | "json" | "ndjson") => {
        const chunks: Buffer[] = [];
        for await (const c of exportStream(format, eachEvent(store.db, "acme", { since: NOW - 60 * DAY }, 3))) chunks.push(Buffer.from(c));
        return Buffer.concat(chunks).toString("utf8");
      };
      const ndjson = (await text("ndjson")).trim().split("\n").map((l: string) => JSON.parse(l) as AuditEventItem);
      expect(JSON.parse(await text("json"))).toEqual(ndjson);
      const csv = await text("csv");
      const records = parseCsv(csv, { columns: true }) as Array<Record<string, string>>;
      expect(Object.keys(records[0])).toEqual([...CSV_COLUMNS]);
      expect(records.length).toBe(ndjson.length);
      const asText = (v: string | number | null) => (v === null ? "" : String(v));
      const formula = /^[=+\-@\t\r]/;
      records.forEach((r, i) => {
        const want = csvRecord(ndjson[i]);
        for (const c of CSV_COLUMNS) {
          const w = asText(want[c]);
          expect(r[c]).toBe(formula.test(w) ? `'${w}` : w);
        }
        // The data as a person reads it: the values in place of their commitments.
        const ev = ndjson[i].event as { data: unknown; pii?: Pii };
        expect(JSON.parse(r.data)).toEqual(reveal(ev.data, ev.pii));
      });
      expect(records.some((r) => r.user === s.tricky)).toBe(true);
      // Written again from what was parsed, it is the same file.
      expect(stringifyCsv(records, { header: true, columns: [...CSV_COLUMNS] })).toBe(csv);
    });

    it("erases a subject: a stored subject.redacted, the service's erasure and its re-application after a restore leave no trace, and the chains still verify", async () => {
      const X = "erin-7731";
      const e1 = new SessionLog("er", "e1", NOW - 3 * DAY, { user: X, agent: "bot", task: `help ${X} with a refund`, sealed: true });
      e1.action("search", 0.01);
      e1.llm("gpt-4o-mini", 0.02, { user: "yann-2" });
      e1.action("refund", 0.5, {}, { amount: 90 });
      e1.llm("gpt-4o-mini", 0.03);
      const e2 = new SessionLog("er", "e2", NOW - 2 * DAY, { user: "yann-2", agent: "bot", sealed: true });
      e2.action("search", 0.01);
      e2.action("refund", 0.2, { user: X, task: "x's own ticket" }, { amount: 50 });
      e2.llm("gpt-4o-mini", 0.04, { user: X });
      const spent = async (session: string) => (await store.session("er", session))?.spentNanos;
      const rowsText = async () => {
        const ev = await store.db.select().from(auditEvents).where(eq(auditEvents.tenant, "er"));
        const ss = await store.db.select().from(auditSessions).where(eq(auditSessions.tenant, "er"));
        const er = await store.db.select().from(auditErasures).where(eq(auditErasures.tenant, "er"));
        return JSON.stringify([ev, ss, er]);
      };

      // Stored before the erasure: the subject is everywhere.
      await ingest(store, e1, 3);
      await ingest(store, e2, 50);
      expect(await rowsText()).toContain(X);
      expect((await everything2("er", { user: X })).length).toBeGreaterThan(0);
      const before = { e1: await spent("e1"), e2: await spent("e2") };

      // The actor erases in e1 (every event of the subject: the opening, its own and the
      // session's calls, not yann's) and appends subject.redacted; the sync stores it.
      const mine = e1.events.filter((e) => e.type !== "request.settled" && (e.data as { attribution?: { user?: string } }).attribution?.user === undefined).map((e) => e.seq);
      e1.erase(mine.filter((seq) => e1.pii.has(seq)));
      await ingest(store, e1, 50);
      const e1Rows = await everything2("er", { session: "e1" });
      expect(JSON.stringify(e1Rows)).not.toContain(X);
      expect(e1Rows.find((r) => r.type === "subject.redacted")).toMatchObject({ user: null, task: null });
      // yann's call in the subject's session keeps its own values.
      expect(e1Rows.filter((r) => r.user === "yann-2").length).toBe(2);
      expect(verifyChain(e1Rows.map((r) => r.event as Hashable & { hash: string }))).toBeUndefined();
      expect(await spent("e1")).toBe(before.e1);

      // The service's erasure, before e2's actor said anything: every row naming X, at once.
      const x = e2.events.filter((e) => e2.pii.get(e.seq)?.["/attribution/user"]?.v === X).map((e) => e.seq);
      const saved = await store.db.select().from(auditEvents).where(and(eq(auditEvents.tenant, "er"), eq(auditEvents.session, "e2")));
      const record = await recordErasure(store.db, "er", { erasure: "era_1", subject: "hmac-sha256:abc", user: X, by: "alice", sessions: [{ session: "e2", erased: x }] });
      expect(record).toMatchObject({ id: "era_1", subject: "hmac-sha256:abc", requestedBy: "alice", status: "completed" });
      expect(record.events).toBeGreaterThanOrEqual(x.length);
      expect(await rowsText()).not.toContain(X);
      expect(await everything2("er", { user: X })).toEqual([]);
      expect(await spent("e2")).toBe(before.e2);
      // Idempotent: again, nothing changes, and it stays one record.
      const again = await recordErasure(store.db, "er", { erasure: "era_2", subject: "hmac-sha256:abc", user: X, by: "alice", sessions: [] });
      expect(again).toMatchObject({ id: "era_1", events: record.events });
      expect(await listErasures(store.db, "er")).toHaveLength(1);

      // A backup of the rows comes back: applying the recorded erasures blanks them again.
      for (const r of saved) await store.db.update(auditEvents).set({ user: r.user, task: r.task, pii: r.pii }).where(and(eq(auditEvents.tenant, "er"), eq(auditEvents.session, "e2"), eq(auditEvents.seq, r.seq)));
      expect(await rowsText()).toContain(X);
      expect(await reapplyErasures(store.db)).toBeGreaterThan(0);
      expect(await rowsText()).not.toContain(X);
      expect(verifyChain((await everything2("er", { session: "e2" })).map((r) => r.event as Hashable & { hash: string }))).toBeUndefined();

      // A value beside an event that does not match its commitment is refused like an edit.
      const forged = new SessionLog("er", "e3", NOW - DAY, { user: "zed", sealed: true });
      const raws = forged.raw() as Array<{ pii: Pii }>;
      raws[0].pii["/user"].v = "someone-else";
      expect(prepare("er", "e3", emptyCursor(), raws).refused).toEqual({ seq: 1, reason: "the value given beside the event for /user does not match its commitment" });
    });

    it("export pulls rows only as fast as they are read", async () => {
      let pulled = 0;
      async function* counted() {
        for await (const e of eachEvent(store.db, "acme", {}, 2)) {
          pulled++;
          yield e;
        }
      }
      const stream = exportStream("ndjson", counted());
      const reader = stream[Symbol.asyncIterator]();
      await reader.next();
      await new Promise((r) => setTimeout(r, 50));
      const total = (await everything({})).length;
      expect(pulled).toBeLessThan(total);
      stream.destroy();
    });
  });
}

describe("audit query parameters", () => {
  const now = Date.UTC(2025, 0, 31);
  it("take durations, ISO dates and epoch ms, and name the bad field", () => {
    const q = parseEventQuery(new URLSearchParams({ since: "30d", until: "2025-01-30", user: "x", type: "a,b", limit: "5" }), now);
    expect(q).toMatchObject({ since: now - 30 * DAY, until: Date.UTC(2025, 0, 30), user: "x", type: ["a", "b"], limit: 5 });
    expect(parseEventQuery(new URLSearchParams({ since: "1700000000000" }), now).since).toBe(1_700_000_000_000);
    const bad = (q: Record<string, string>, f: (p: URLSearchParams) => unknown, field: string) => {
      let err: unknown;
      try {
        f(new URLSearchParams(q));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(BadRequestError);
      expect((err as BadRequestError).field).toBe(field);
    };
    bad({ since: "last tuesday" }, parseEventQuery, "since");
    bad({ limit: "0" }, parseEventQuery, "limit");
    bad({ limit: "5000" }, parseEventQuery, "limit");
    bad({ usr: "x" }, parseEventQuery, "usr");
    bad({ by: "planet" }, parseSpendQuery, "by");
    bad({}, parseSpendQuery, "by");
    bad({ format: "xml" }, parseExportQuery, "format");
    expect(() => parseEventQuery(new URLSearchParams("user=a&user=b"))).toThrow(/more than once/);
  });

  it("CSV cells that would run as formulas are defused", async () => {
    const item = { tenant: "t", session: "s", seq: 1, ts: 0, type: "x", eventId: "=HYPERLINK(\"http://evil\")", user: "@SUM(1)", agent: "+1", task: "-1", run: null, action: null, model: null, decision: null, code: null, rule: null, costUsd: 0, estimateUsd: null, hash: "h", prev: "p", event: { data: {} } };
    async function* one() {
      yield item;
    }
    let csv = "";
    for await (const c of exportStream("csv", one())) csv += c;
    const [row] = parseCsv(csv, { columns: true }) as Array<Record<string, string>>;
    expect(row).toMatchObject({ event_id: `'=HYPERLINK("http://evil")`, user: "'@SUM(1)", agent: "'+1", task: "'-1" });
  });
});

describe("verifying pages for the store", () => {
  it("gives prepare's result a slice at a time, and verifies batches asked at once one after the other, in order", async () => {
    const long = new SessionLog("acme", "long", NOW - DAY, { user: "u1", agent: "a1", sealed: true });
    for (let i = 0; i < 300; i++) long.action("search", 0.01, { user: `u${i % 3}` });
    const short = new SessionLog("acme", "short", NOW - DAY, { user: "u2", agent: "a2" });
    short.action("search", 0.01);
    const finished: string[] = [];
    const [a, b] = await Promise.all(
      [long, short].map(async (log) => {
        const p = await prepareYielding(log.tenant, log.session, emptyCursor(), log.raw());
        finished.push(log.session);
        return p;
      }),
    );
    // Side by side, the short batch would finish first and the long one late: the database
    // would wait for both instead of storing the first as soon as it is ready.
    expect(finished).toEqual(["long", "short"]);
    expect(a).toEqual(prepare("acme", "long", emptyCursor(), long.raw()));
    expect(b).toEqual(prepare("acme", "short", emptyCursor(), short.raw()));
    expect(a.rows).toHaveLength(long.events.length);
  });
});
