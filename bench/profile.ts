import { cpus, loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { startGovernor, TOKENS } from "../test/support/server";
import { startUpstream } from "../test/support/upstream";
import { agentContext } from "./context";
import { cpuOf, cpuPerRequest, expectOk, gitState, httpClient, load, log, onCleanup, runBenchmark, writeResults, type Client } from "./harness";
import { joinDevtools } from "./inspector";
import { actionStages, proxyStages, type Stage } from "./stages";
import { cpuLines, rounded, table } from "./stats";

// Where a proxied call's time goes (`npm run profile:proxy`).
//
// 1. Inside the isolate: each stage of the gateway and the actor, timed on the project's
//    own code with real bodies (a one-line prompt and a ~40k-token agent context).
// 2. Outside it: CPU per call of each process (workerd, partykit dev's Node process, the
//    benchmark with the stand-in) under load against a real `partykit dev`, once as
//    `partykit dev` runs by default and once with its DevTools network events turned off,
//    so the runtime's share (HTTP, the hop to the actor, storage, dev-only logging) shows
//    next to the JavaScript's.
//
// workerd's own CPU profiler is not used: under partykit dev 0.0.115 (workerd 2024-07)
// its inspector only echoes Profiler.start, and Profiler.stop returns an empty profile.
// While this script listens to partykit's DevTools proxy, the events come to it rather
// than being buffered by partykit: the benchmark process's CPU in the "default" rows
// includes parsing them, which partykit's Node process does when nobody listens.

const SECONDS = Number(process.env.PROFILE_SECONDS ?? "6") || 6;
// `npm run profile:proxy -- --stages-only`: part 1 alone, no server (a few seconds).
const STAGES_ONLY = process.argv.includes("--stages-only");
const CONCURRENCY = 8;

function stageTable(stages: Stage[]): string {
  const total = stages.reduce((a, s) => a + s.us, 0);
  return table(
    ["stage", "side", "us per call", "share", "note"],
    [...stages.filter((s) => s.us > 0 || s.note).map((s) => [s.stage, s.side, s.us ? s.us.toFixed(1) : "", s.us ? `${((100 * s.us) / total).toFixed(1)}%` : "", s.note ?? ""]), ["total (JavaScript of our own)", "", total.toFixed(1), "100%", ""]],
  );
}

runBenchmark("profile:proxy", 300_000, async () => {
  const started = performance.now();
  const loadBefore = loadavg();
  const context = agentContext(40_000);
  const oneLine = { model: "gpt-4o-mini", messages: [{ role: "user", content: "Say hello in five words." }], max_tokens: 16 };

  const upstream = await startUpstream();
  onCleanup(() => upstream.close());
  const direct = httpClient(upstream.url, 1);
  onCleanup(() => direct.close());
  const answer = expectOk(await direct.request("/v1/chat/completions", { headers: { authorization: "Bearer sk-bench" }, body: oneLine }), "stand-in").body;

  log("timing each stage on the project's code (this process) ...");
  const stages = { oneLine: await proxyStages(oneLine, answer), context40k: await proxyStages(context.body as unknown as Record<string, unknown>, answer), action: actionStages() };

  if (STAGES_ONLY) {
    console.log(["", "One-line prompt:", stageTable(stages.oneLine), "", `~40k-token agent context (${context.tokens} tokens):`, stageTable(stages.context40k), "", "An allowed action:", stageTable(stages.action)].join("\n"));
    return;
  }
  log("starting partykit dev ...");
  // partykit dev's default, DevTools network events on: measured with them, then without.
  const gov = await startGovernor({ devtoolsNetwork: true, vars: { OPENAI_BASE_URL: upstream.url + "/v1", OPENAI_API_KEY: "sk-bench" } });
  onCleanup(() => gov.stop());
  const c: Client = httpClient(gov.url, CONCURRENCY);
  onCleanup(() => c.close());
  const session = `profile-${Date.now().toString(36)}`;
  expectOk(await c.request("/v1/sessions", { headers: { authorization: `Bearer ${TOKENS.operator}` }, body: { id: session, policy: { budget: { session_usd: 1_000_000 } } } }), "open session");
  const agent = { authorization: `Bearer ${TOKENS.agent}` };
  const calls = {
    proxied: async () => expectOk(await c.request("/v1/proxy/openai/v1/chat/completions", { headers: { ...agent, "x-session-id": session }, body: oneLine }), "proxied call").ms,
    action: async () => expectOk(await c.request(`/v1/sessions/${session}/actions`, { headers: agent, body: { action: "t", costUsd: 0 } }), "action").ms,
    healthz: async () => expectOk(await c.request("/healthz"), "healthz").ms,
  };
  const groups = [{ pgid: gov.pid }];
  const measure = async (fn: () => Promise<number>) => {
    await load({ concurrency: CONCURRENCY, count: 200, maxMs: 5_000, fn });
    const before = cpuOf(groups);
    const r = await load({ concurrency: CONCURRENCY, count: Number.MAX_SAFE_INTEGER, maxMs: SECONDS * 1000, fn });
    return { perSecond: r.perSecond, cpu: cpuPerRequest(before, cpuOf(groups), r.done) };
  };

  const devtools = await joinDevtools(gov.pid);
  onCleanup(() => devtools?.close());
  const rows: [string, Record<string, number> | null][] = [];
  const runs: Record<string, unknown> = {};
  const eventsPerCall: Record<string, number> = {};
  for (const [name, fn] of Object.entries(calls)) {
    log(`  ${name}, as partykit dev runs by default, ${SECONDS} s at concurrency ${CONCURRENCY}`);
    devtools?.counted();
    const r = await measure(fn);
    const events = devtools ? Object.entries(devtools.counted()).filter(([m]) => m.startsWith("Network.")).reduce((a, [, k]) => a + k, 0) : NaN;
    rows.push([`${name} (default)`, r.cpu]);
    runs[`${name}.default`] = r;
    eventsPerCall[name] = events / Math.max(1, r.perSecond * SECONDS);
  }
  if (devtools) {
    devtools.send("Network.disable");
    await new Promise((r) => setTimeout(r, 500));
    for (const [name, fn] of Object.entries(calls)) {
      log(`  ${name}, DevTools network events off, ${SECONDS} s at concurrency ${CONCURRENCY}`);
      const r = await measure(fn);
      rows.push([`${name} (network events off)`, r.cpu]);
      runs[`${name}.networkOff`] = r;
    }
  }

  const lines: string[] = [];
  lines.push("");
  lines.push(`Where a proxied call's time goes (Governor ${gitState()?.commit ?? ""}, node ${process.version}; workerd under partykit dev 0.0.115)`);
  lines.push("");
  lines.push("1. Our JavaScript, stage by stage (timed in this process on the same code and bodies)");
  lines.push("");
  lines.push("One-line prompt, non-streamed chat completion:");
  lines.push(stageTable(stages.oneLine));
  lines.push("");
  lines.push(`~40k-token agent context (${context.tokens} tokens):`);
  lines.push(stageTable(stages.context40k));
  lines.push("");
  lines.push("An allowed action (POST /v1/sessions/:id/actions):");
  lines.push(stageTable(stages.action));
  lines.push("");
  lines.push(`2. CPU per call by process under load (concurrency ${CONCURRENCY}, ${SECONDS} s each; ms)`);
  const cpuTable = cpuLines(rows);
  if (cpuTable) lines.push(cpuTable);
  if (devtools) lines.push(`DevTools network events sent by workerd per call (default): ${Object.entries(eventsPerCall).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(", ")}.`);
  else lines.push("(partykit dev's DevTools proxy was not found: the second half was skipped)");
  const loadAfter = loadavg();
  lines.push("");
  lines.push(`Whole run: ${((performance.now() - started) / 1000).toFixed(0)} s on ${cpus().length} cores; load average ${loadBefore[0].toFixed(2)} before, ${loadAfter[0].toFixed(2)} after.`);
  console.log(lines.join("\n"));

  const path = writeResults(
    "profile.json",
    rounded({
      benchmark: "profile",
      at: new Date().toISOString(),
      node: process.version,
      git: gitState(),
      machine: { cores: cpus().length, loadAverageBefore: loadBefore[0], loadAverageAfter: loadAfter[0] },
      unit: { stages: "us per call", cpu: "ms per call" },
      stages,
      cpu: Object.fromEntries(rows),
      runs,
      devtoolsNetworkEventsPerCall: eventsPerCall,
    }),
  );
  log(`\nwrote ${path}`);
});
