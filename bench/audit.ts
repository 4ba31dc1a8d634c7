import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { openDatabase } from "../audit/db";
import { prepareYielding } from "../audit/ingest";
import { eventPage } from "../audit/query";
import { AuditStore } from "../audit/store";
import { DEFAULT_CONCURRENCY } from "../audit/sync";
import { randomBytes } from "node:crypto";
import { eventHash, GENESIS } from "../lib/chain";
import { seal } from "../lib/pii";
import { parsePolicy } from "../schema/policy";
import { gitState, log, writeResults } from "./harness";
import { ms, rounded, summarize } from "./stats";

// `npm run bench:audit`: the audit store's two goals.
// 1. Ingest: events/s through the sync's own write path (schema check, chain link and
//    hash, each personal value against its commitment, the session fold, one
//    transaction per batch) into PGlite in a folder.
// 2. "Every event of user X in the last 30 days" over 1M stored events: p50 of the whole
//    answer (every page, limit 1000) for users picked at random.
// Events are made here (valid, chained, spread over 60 days) rather than through a
// running Governor: the actor's own rate would be the bottleneck, not the store's.
// DATABASE_URL measures Postgres instead; AUDIT_BENCH_EVENTS scales the run down.

const GOALS = { ingestPerSecond: 20_000, userQueryP50Ms: 50 };
const EVENTS = Number(process.env.AUDIT_BENCH_EVENTS ?? 1_000_000);
const PER_SESSION = 500;
const SESSIONS = Math.ceil(EVENTS / PER_SESSION);
const USERS = Math.max(1, Math.round(SESSIONS / 2));
const AGENTS = 100;
const DAY = 86_400_000;
const QUERIES = 200;
const TENANT = "bench";

const salt = () => randomBytes(16).toString("hex");

/**
 * One session's log as the actor writes it now: opened by a user (the id and task as
 * commitments, their values beside the event), then allowed actions with costs, every
 * other one with its own user attribution (a proxied call's X-User-ID).
 */
function sessionLog(i: number, now: number): unknown[] {
  const user = `user-${i % USERS}`;
  const agent = `agent-${i % AGENTS}`;
  const session = `s-${i}`;
  // Sessions start across the last 60 days; each lasts a few minutes.
  let ts = now - 60 * DAY + Math.floor((i / SESSIONS) * 60 * DAY);
  let prev = GENESIS;
  const out: unknown[] = [];
  const push = (seq: number, id: string, type: string, raw: unknown) => {
    const { data, pii } = seal(type, raw, salt);
    const base = { seq, id, ts: (ts += 250), type, data, prev };
    const e = { ...base, hash: eventHash(base) };
    prev = e.hash;
    out.push(pii ? { ...e, pii } : e);
  };
  push(1, `open:${session}`, "session.opened", { tenant: TENANT, session, policy: POLICY, user, agent, task: `ticket ${i}` });
  for (let seq = 2; seq <= PER_SESSION; seq++) {
    const action = ACTIONS[seq % ACTIONS.length];
    push(seq, `action:${session}-${seq}`, "action.checked", {
      requestId: `${session}-${seq}`,
      action,
      argsHash: "9f".repeat(32),
      decision: "allow",
      costUsd: 0.0001 * (1 + (seq % 7)),
      attribution: { run: `run-${seq % 5}`, action, ...(seq % 2 === 0 && { user }) },
    });
  }
  return out;
}

const POLICY = parsePolicy({ budget: { session_usd: 100 } });
const ACTIONS = ["search", "read_file", "send_email", "refund"];

async function main() {
  const started = performance.now();
  const loadBefore = loadavg();
  const dir = process.env.DATABASE_URL ? undefined : mkdtempSync(join(tmpdir(), "governor-audit-bench-"));
  const store = new AuditStore(await openDatabase({ databaseUrl: process.env.DATABASE_URL, dir }));
  log(`audit bench: ${EVENTS} events (${SESSIONS} sessions of ${PER_SESSION}, ${USERS} users) into ${store.database.describe}`);
  const now = Date.now();
  try {
    // ---- ingest: verified batches, as the sync stores a page of a session's log, with as
    // many sessions at once as the sync reads (its default concurrency): one session's
    // batch is verified here while another's is stored on PGlite's thread. The logs are made
    // a chunk of sessions at a time, outside the timed part.
    let ingestMs = 0;
    let ingestCpuUs = 0;
    let mainBusyMs = 0;
    let dbBusyMs = 0;
    let stored = 0;
    let lastReport = performance.now();
    const CHUNK = 40;
    for (let first = 0; first < SESSIONS; first += CHUNK) {
      const logs: Array<{ session: string; raws: unknown[] }> = [];
      for (let i = first; i < Math.min(SESSIONS, first + CHUNK); i++) {
        const raws = sessionLog(i, now).slice(0, EVENTS - i * PER_SESSION);
        logs.push({ session: `s-${i}`, raws });
      }
      const t0 = performance.now();
      const cpu0 = process.cpuUsage();
      const elu0 = performance.eventLoopUtilization();
      const dbElu0 = store.database.utilization?.();
      let next = 0;
      const lane = async () => {
        for (let k = next++; k < logs.length; k = next++) {
          const { session, raws } = logs[k];
          const from = await store.cursor(TENANT, session);
          const p = await prepareYielding(TENANT, session, from, raws);
          if (p.refused) throw new Error(`bench log refused: ${JSON.stringify(p.refused)}`);
          await store.append(TENANT, session, from.seq, p);
          stored += p.rows.length;
        }
      };
      await Promise.all(Array.from({ length: DEFAULT_CONCURRENCY }, lane));
      ingestMs += performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      ingestCpuUs += cpu.user + cpu.system;
      mainBusyMs += performance.eventLoopUtilization(elu0).active;
      if (dbElu0) dbBusyMs += store.database.utilization!(dbElu0).active;
      if (performance.now() - lastReport > 10_000) {
        lastReport = performance.now();
        log(`  ${stored} events stored, ${Math.round(stored / (ingestMs / 1000))} events/s so far`);
      }
    }
    const ingestPerSecond = stored / (ingestMs / 1000);

    // ---- every event of user X in the last 30 days
    const samples: number[] = [];
    let rows = 0;
    const since = now - 30 * DAY;
    for (let q = 0; q < QUERIES + 10; q++) {
      const user = `user-${Math.floor(Math.random() * USERS)}`;
      const t0 = performance.now();
      let cursor: string | undefined;
      let n = 0;
      do {
        const page = await eventPage(store.db, TENANT, { user, since, limit: 1000, cursor });
        n += page.events.length;
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
      // The first few warm the caches, as a running service's would be.
      if (q >= 10) {
        samples.push(performance.now() - t0);
        rows += n;
      }
    }
    const query = summarize(samples);
    const loadAfter = loadavg();
    const yes = (b: boolean) => (b ? "met" : "NOT met");
    console.log(
      [
        "",
        `audit store (${store.database.describe.split(":")[0]}), ${stored} events`,
        `  ingest (verify + fold + store, batches of ${PER_SESSION}, ${DEFAULT_CONCURRENCY} sessions at once): ${Math.round(ingestPerSecond)} events/s   goal >= ${GOALS.ingestPerSecond}: ${yes(ingestPerSecond >= GOALS.ingestPerSecond)}`,
        `  every event of user X in 30 days (${(rows / samples.length).toFixed(0)} rows on average): p50 ${ms(query.p50)} ms, p90 ${ms(query.p90)} ms, p99 ${ms(query.p99)} ms   goal p50 <= ${GOALS.userQueryP50Ms} ms: ${yes(query.p50 <= GOALS.userQueryP50Ms)}`,
        `  ingest CPU (every thread): ${(ingestCpuUs / stored).toFixed(1)} us/event; main thread busy ${((100 * mainBusyMs) / ingestMs).toFixed(0)}% of the ingest${store.database.utilization ? `, database thread ${((100 * dbBusyMs) / ingestMs).toFixed(0)}%` : ""}`,
        `  whole run ${((performance.now() - started) / 1000).toFixed(0)} s on ${cpus().length} cores; load average ${loadBefore[0].toFixed(2)} before, ${loadAfter[0].toFixed(2)} after (other work on the machine skews the figures)`,
      ].join("\n"),
    );
    const path = writeResults(
      "audit.json",
      rounded({
        benchmark: "audit",
        at: new Date().toISOString(),
        node: process.version,
        git: gitState(),
        engine: store.database.describe.split(":")[0],
        events: stored,
        sessions: SESSIONS,
        users: USERS,
        goals: GOALS,
        ingest: {
          perSecond: ingestPerSecond,
          seconds: ingestMs / 1000,
          batch: PER_SESSION,
          sessionsAtOnce: DEFAULT_CONCURRENCY,
          cpuUsPerEvent: ingestCpuUs / stored,
          mainThreadBusy: mainBusyMs / ingestMs,
          ...(store.database.utilization && { databaseThreadBusy: dbBusyMs / ingestMs }),
        },
        userQuery30d: { unit: "ms", ...query, rowsAverage: rows / samples.length },
        machine: { cores: cpus().length, loadAverageBefore: loadBefore[0], loadAverageAfter: loadAfter[0] },
        met: { ingest: ingestPerSecond >= GOALS.ingestPerSecond, userQueryP50: query.p50 <= GOALS.userQueryP50Ms },
      }),
    );
    log(`results: ${path}`);
  } finally {
    await store.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

await main();
