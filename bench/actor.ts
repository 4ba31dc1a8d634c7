import { cpus, loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import WS from "ws";
import { startGovernor, TOKENS } from "../test/support/server";
import { cpuPerRequest, cpuSnapshot, expectOk, gitState, httpClient, load, log, onCleanup, phase as measured, reloadsOf, retried, runBenchmark, sequential, writeResults, type Client } from "./harness";
import { cpuLines, ms, rounded, summarize, table, type Summary } from "./stats";

// How fast one session actor answers, end to end over HTTP against a real `partykit dev`
// (workerd): budget checks, action checks, one actor's throughput, and whether a check
// stays as fast when the session's log is 100x longer (it should: the actor decides from
// in-memory state and never re-reads the log).
//
// Sizes can be shrunk for a quick look: BENCH_SCALE=0.1 npm run bench:actor

const SCALE = Number(process.env.BENCH_SCALE ?? "1") || 1;
const n = (x: number) => Math.max(1, Math.round(x * SCALE));

const WARMUP = n(200);
const SAMPLES = n(2_000);
const THROUGHPUT = { concurrency: 16, count: n(10_000), maxMs: 10_000 };
const GROW = { concurrency: 32, maxMs: 165_000 };
// Growing 100k events is most of the run; it stops early rather than push the whole run
// past ~4 minutes, leaving time for the comparison that follows.
const RUN_BUDGET_MS = 200_000;
const DEADLINE_MS = 300_000;
const SMALL_LOG = n(1_000);
const LARGE_LOG = n(100_000);
const LOG_ROUNDS = 5;
const LOG_SAMPLES_PER_ROUND = n(200);

const GOALS = { p50Ms: 1, actionsPerSecond: 1_000, logRatio: 1.2 };

const POLICY = { budget: { session_usd: 1_000_000 } };
const auth = (token: string) => ({ authorization: `Bearer ${token}` });
const OP = auth(TOKENS.operator);
const AGENT = auth(TOKENS.agent);

async function openSession(c: Client, id: string) {
  const r = expectOk(await c.request("/v1/sessions", { headers: OP, body: { id, policy: POLICY } }), `open session ${id}`);
  if (r.status !== 201) throw new Error(`open session ${id}: expected 201 (a new session), got ${r.status}`);
}

async function seqOf(c: Client, id: string): Promise<number> {
  const r = expectOk(await c.request(`/v1/sessions/${id}`, { headers: OP }), `read session ${id}`);
  return (JSON.parse(r.body) as { seq: number }).seq;
}

function budgetCheck(c: Client, id: string) {
  return async () => expectOk(await c.request(`/v1/budget-check?session=${id}`, { headers: AGENT }), "budget-check").ms;
}

function action(c: Client, id: string) {
  return async () => {
    const r = expectOk(await c.request(`/v1/sessions/${id}/actions`, { headers: AGENT, body: { action: "t", costUsd: 0 } }), "action");
    // An allow is the path we mean to time; a deny would mean the policy or session is off.
    if (!r.body.includes('"decision":"allow"')) throw new Error(`action was not allowed: ${r.body.slice(0, 300)}`);
    return r.ms;
  };
}

/** A `check` over the session's socket: the SDK's path, with no HTTP and no gateway hop. */
async function socketCheck(wsUrl: string, id: string) {
  const ws = new WS(`${wsUrl}/parties/session/acme:${id}?token=${TOKENS.agent}`);
  await new Promise((ok, fail) => {
    ws.once("open", ok);
    ws.once("error", fail);
  });
  onCleanup(async () => ws.close());
  let waiting: { id: string; done: () => void } | undefined;
  ws.on("message", (raw) => {
    const m = JSON.parse(String(raw)) as { type: string; id?: string; decision?: string };
    if (m.type === "decision" && m.id === waiting?.id) {
      if (m.decision !== "allow") throw new Error(`check was not allowed: ${String(raw).slice(0, 300)}`);
      waiting?.done();
    }
  });
  let n = 0;
  return async () => {
    const checkId = `c${n++}`;
    const t = performance.now();
    await new Promise<void>((done) => {
      waiting = { id: checkId, done };
      ws.send(JSON.stringify({ type: "check", id: checkId, action: "t", costUsd: 0 }));
    });
    return performance.now() - t;
  };
}

function healthz(c: Client) {
  return async () => expectOk(await c.request("/healthz"), "healthz").ms;
}

async function latency(name: string, fn: () => Promise<number>): Promise<Summary> {
  log(`  ${name}: ${WARMUP} warm-up + ${SAMPLES} timed, one at a time`);
  await sequential(WARMUP, fn);
  const s = summarize(await sequential(SAMPLES, fn, 90_000));
  if (s.n < SAMPLES) log(`  ${name}: only ${s.n} of ${SAMPLES} samples within the time bound`);
  return s;
}

/**
 * Appends events until the log holds `target` or `deadline` (performance.now() time)
 * passes. Resumable: it starts from the session's current length, so a retry after a
 * reload picks up where the last attempt stopped.
 */
async function grow(c: Client, id: string, target: number, deadline: number): Promise<{ seq: number; appended: number; ms: number }> {
  const have = await seqOf(c, id);
  const t0 = performance.now();
  await load({
    concurrency: GROW.concurrency,
    count: Math.max(0, target - have),
    maxMs: Math.max(0, deadline - t0),
    fn: action(c, id),
    progressEveryMs: 5_000,
    progress: (done, el) => log(`    ${id}: ${have + done} / ${target} events, ${Math.round((done / el) * 1000)} actions/s, ${Math.round(el / 1000)} s`),
  });
  const seq = await seqOf(c, id);
  if (seq < target) log(`    ${id}: stopped at ${seq} events: the time bound was reached before ${target}`);
  return { seq, appended: seq - have, ms: performance.now() - t0 };
}

/**
 * Alternates between the two sessions in rounds so that drift in the machine (a GC, a
 * compaction, another process waking) lands on both sides instead of biasing one.
 */
async function compareLogs(c: Client, small: string, large: string) {
  const samples = { small: { check: [] as number[], action: [] as number[] }, large: { check: [] as number[], action: [] as number[] } };
  for (const id of [small, large]) {
    await sequential(WARMUP, budgetCheck(c, id));
    await sequential(WARMUP, action(c, id));
  }
  for (let round = 0; round < LOG_ROUNDS; round++) {
    for (const [key, id] of [["small", small], ["large", large]] as const) {
      samples[key].check.push(...(await sequential(LOG_SAMPLES_PER_ROUND, budgetCheck(c, id))));
      samples[key].action.push(...(await sequential(LOG_SAMPLES_PER_ROUND, action(c, id))));
    }
  }
  return {
    small: { check: summarize(samples.small.check), action: summarize(samples.small.action) },
    large: { check: summarize(samples.large.check), action: summarize(samples.large.action) },
  };
}

runBenchmark("bench:actor", DEADLINE_MS, async () => {
  const started = performance.now();
  const loadBefore = loadavg();
  log("starting partykit dev ...");
  const gov = await startGovernor();
  onCleanup(() => gov.stop());
  log(`Governor at ${gov.url}`);
  const c = httpClient(gov.url, 32);
  onCleanup(() => c.close());
  const phase = <T>(name: string, fn: () => Promise<T>) => measured(gov, name, fn, { afterReload: () => c.reset() });

  const run = Date.now().toString(36);
  const ids = { lat: `lat-${run}`, tput: `tput-${run}`, small: `log1k-${run}`, large: `log100k-${run}` };
  for (const id of Object.values(ids)) await openSession(c, id);

  log("\nround-trip latency, concurrency 1");
  const health = await phase("healthz latency", () => latency("GET /healthz", healthz(c)));
  const check = await phase("budget-check latency", () => latency("GET /v1/budget-check", budgetCheck(c, ids.lat)));
  const act = await phase("action latency", () => latency("POST /v1/sessions/:id/actions", action(c, ids.lat)));
  const sock = await phase("socket check latency", async () => latency("WebSocket check", await socketCheck(gov.wsUrl, ids.lat)));

  log(`\nthroughput, concurrency ${THROUGHPUT.concurrency}`);
  const healthLoad = await phase("healthz throughput", async () => {
    await load({ ...THROUGHPUT, count: WARMUP, fn: healthz(c) });
    const before = cpuSnapshot(gov.pid);
    const r = await load({ ...THROUGHPUT, maxMs: 5_000, fn: healthz(c) });
    return { ...r, cpu: cpuPerRequest(before, cpuSnapshot(gov.pid), r.done) };
  });
  log(`  GET /healthz: ${Math.round(healthLoad.perSecond)} requests/s`);
  const tput = await phase("action throughput", async () => {
    await load({ ...THROUGHPUT, count: WARMUP, fn: action(c, ids.tput) });
    const before = cpuSnapshot(gov.pid);
    const r = await load({ ...THROUGHPUT, fn: action(c, ids.tput) });
    return { ...r, cpu: cpuPerRequest(before, cpuSnapshot(gov.pid), r.done) };
  });
  log(`  actions on one session: ${Math.round(tput.perSecond)} actions/s (${tput.done} in ${(tput.elapsedMs / 1000).toFixed(1)} s)`);

  log(`\ngrowing logs to ${SMALL_LOG} and ${LARGE_LOG} events (concurrency ${GROW.concurrency})`);
  const smallGrow = await phase("grow the small log", () => grow(c, ids.small, SMALL_LOG, performance.now() + 60_000));
  const growDeadline = Math.min(performance.now() + GROW.maxMs, started + RUN_BUDGET_MS);
  const largeStart = await seqOf(c, ids.large);
  const growStart = performance.now();
  const largeGrow = await phase("grow the large log", () => grow(c, ids.large, LARGE_LOG, growDeadline));
  const growSeconds = (performance.now() - growStart) / 1000;
  const growPerSecond = (largeGrow.seq - largeStart) / growSeconds;
  log(`    ${ids.large}: ${largeGrow.seq} events after ${growSeconds.toFixed(1)} s (${Math.round(growPerSecond)} actions/s)`);

  log(`\nchecks on the ${smallGrow.seq}-event log vs the ${largeGrow.seq}-event log, ${LOG_ROUNDS} alternating rounds`);
  const logs = await phase("log-length comparison", () => compareLogs(c, ids.small, ids.large));
  const checkRatio = logs.large.check.p50 / logs.small.check.p50;
  const actionRatio = logs.large.action.p50 / logs.small.action.p50;
  // The timed actions append to the logs they measure; say by how much.
  const smallEnd = await seqOf(c, ids.small);
  const largeEnd = await seqOf(c, ids.large);

  // ---------------------------------------------------------------- report
  const yes = (ok: boolean) => (ok ? "yes" : "NO");
  const vsHealth = (x: number) => `${(x / health.p50).toFixed(2)}x`;
  const lines: string[] = [];
  lines.push("");
  lines.push(`Governor session actor benchmark (partykit dev / workerd, node ${process.version}, loopback, keep-alive)`);
  lines.push("");
  lines.push("Round-trip latency, concurrency 1 (ms)");
  lines.push(
    table(
      ["request", "n", "p50", "p90", "p99", "p50 vs healthz", "goal p50", "met"],
      [
        ["GET /healthz (no actor)", health.n, ms(health.p50), ms(health.p90), ms(health.p99), "1.00x", "", ""],
        ["GET /v1/budget-check", check.n, ms(check.p50), ms(check.p90), ms(check.p99), vsHealth(check.p50), `<= ${GOALS.p50Ms}`, yes(check.p50 <= GOALS.p50Ms)],
        ["POST /v1/sessions/:id/actions", act.n, ms(act.p50), ms(act.p90), ms(act.p99), vsHealth(act.p50), `<= ${GOALS.p50Ms}`, yes(act.p50 <= GOALS.p50Ms)],
        ["WebSocket check (SDK)", sock.n, ms(sock.p50), ms(sock.p90), ms(sock.p99), vsHealth(sock.p50), `<= ${GOALS.p50Ms}`, yes(sock.p50 <= GOALS.p50Ms)],
      ],
    ),
  );
  lines.push("");
  lines.push(`Throughput, concurrency ${THROUGHPUT.concurrency}`);
  const tputSummary = summarize(tput.latencies);
  lines.push(
    table(
      ["load", "requests", "seconds", "per second", "p50 ms", "p99 ms", "goal", "met"],
      [
        ["GET /healthz (no actor)", healthLoad.done, (healthLoad.elapsedMs / 1000).toFixed(1), Math.round(healthLoad.perSecond), ms(summarize(healthLoad.latencies).p50), ms(summarize(healthLoad.latencies).p99), "", ""],
        ["actions, ONE session", tput.done, (tput.elapsedMs / 1000).toFixed(1), Math.round(tput.perSecond), ms(tputSummary.p50), ms(tputSummary.p99), `>= ${GOALS.actionsPerSecond}/s`, yes(tput.perSecond >= GOALS.actionsPerSecond)],
      ],
    ),
  );
  const cpuTable = cpuLines([
    ["GET /healthz", healthLoad.cpu],
    ["actions", tput.cpu],
  ]);
  if (cpuTable) lines.push("", `CPU per request during the throughput runs (ms, by process)`, cpuTable);
  lines.push("");
  lines.push(`Log length: p50 of a check, ${logs.small.check.n} samples each, ${LOG_ROUNDS} alternating rounds (ms; the timed actions grow each log)`);
  lines.push(
    table(
      ["check", `${smallGrow.seq}-${smallEnd} events`, `${largeGrow.seq}-${largeEnd} events`, "ratio", "goal", "met"],
      [
        ["GET /v1/budget-check", ms(logs.small.check.p50), ms(logs.large.check.p50), checkRatio.toFixed(3), `<= ${GOALS.logRatio}`, yes(checkRatio <= GOALS.logRatio)],
        ["POST .../actions", ms(logs.small.action.p50), ms(logs.large.action.p50), actionRatio.toFixed(3), `<= ${GOALS.logRatio}`, yes(actionRatio <= GOALS.logRatio)],
      ],
    ),
  );
  lines.push("");
  lines.push(`Growing the large log: ${largeGrow.seq} events after ${growSeconds.toFixed(1)} s at concurrency ${GROW.concurrency} (${Math.round(growPerSecond)} actions/s)${largeGrow.seq < LARGE_LOG ? `: STOPPED SHORT of ${LARGE_LOG} by the time bound` : ""}.`);
  const loadAfter = loadavg();
  lines.push(`Whole run: ${((performance.now() - started) / 1000).toFixed(0)} s on ${cpus().length} cores; load average ${loadBefore[0].toFixed(2)} before, ${loadAfter[0].toFixed(2)} after (other work on the machine skews the figures).`);
  if (reloadsOf(gov) || retried.length) lines.push(`The server reloaded ${reloadsOf(gov)} time(s) during the run (a source file changed); phases measured again: ${retried.map((r) => r.phase).join(", ") || "none"}.`);
  console.log(lines.join("\n"));

  const path = writeResults(
    "actor.json",
    rounded({
      benchmark: "actor",
      at: new Date().toISOString(),
      node: process.version,
      platform: `${process.platform}-${process.arch}`,
      git: gitState(),
      scale: SCALE,
      unit: "ms",
      goals: GOALS,
      latency: { concurrency: 1, warmup: WARMUP, healthz: health, budgetCheck: check, action: act, socketCheck: sock },
      throughput: {
        concurrency: THROUGHPUT.concurrency,
        healthz: { requests: healthLoad.done, seconds: healthLoad.elapsedMs / 1000, perSecond: healthLoad.perSecond, cpuMsPerRequest: healthLoad.cpu },
        actionsOneSession: { requests: tput.done, seconds: tput.elapsedMs / 1000, perSecond: tput.perSecond, latency: tputSummary, cpuMsPerRequest: tput.cpu },
      },
      machine: { cores: cpus().length, loadAverageBefore: loadBefore[0], loadAverageAfter: loadAfter[0] },
      reloads: reloadsOf(gov),
      retried,
      logLength: {
        small: { events: smallGrow.seq, eventsAfter: smallEnd, budgetCheck: logs.small.check, action: logs.small.action },
        large: { events: largeGrow.seq, eventsAfter: largeEnd, target: LARGE_LOG, growSeconds, growPerSecond, growConcurrency: GROW.concurrency, budgetCheck: logs.large.check, action: logs.large.action },
        ratio: { budgetCheck: checkRatio, action: actionRatio },
      },
      met: {
        budgetCheckP50: check.p50 <= GOALS.p50Ms,
        actionP50: act.p50 <= GOALS.p50Ms,
        actionsPerSecond: tput.perSecond >= GOALS.actionsPerSecond,
        logRatioBudgetCheck: checkRatio <= GOALS.logRatio,
        logRatioAction: actionRatio <= GOALS.logRatio,
        largeLogReached: largeGrow.seq >= LARGE_LOG,
      },
    }),
  );
  log(`\nwrote ${path}`);
});
