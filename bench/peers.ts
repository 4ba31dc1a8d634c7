import { readFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { ROOT, startGovernor, TOKENS } from "../test/support/server";
import { startUpstream, type Behavior } from "../test/support/upstream";
import { agentContext } from "./context";
import { alternate, checkChat, checkStream, expectOk, gitState, httpClient, log, onCleanup, phase as measured, reloadsOf, retried, runBenchmark, throughputRounds, writeResults, type Target, type Throughput } from "./harness";
import { startPeer } from "./peer";
import { requestLog } from "../scripts/request-log.js";
import { cpuLines, ms, rounded, table, type Summary } from "./stats";

// Governor's proxy beside a peer gateway (Portkey's open-source one), in one run on one
// machine: the same call sent straight to a local stand-in provider, through the peer,
// and through Governor, alternating so that the machine's drift lands on all three.
// Two bodies: a one-line prompt, and a ~40k-token agent context (where per-byte work in
// a gateway shows). For each: latency at concurrency 1, requests/s at concurrency 32,
// and a stream's time to first byte.
//
// Sizes can be shrunk for a quick look: BENCH_SCALE=0.1 npm run bench:peers

const SCALE = Number(process.env.BENCH_SCALE ?? "1") || 1;
const n = (x: number) => Math.max(1, Math.round(x * SCALE));
const DEADLINE_MS = 540_000;
const CONTEXT_TOKENS = 40_000;

const GOALS = { addedP50Ms: 1, addedP99Ms: 5, contextP50WithinMs: 1, ttfbAddedMs: 4 };

const STREAM_BEHAVIOR = { chunkDelayMs: 5, chunks: 4 } satisfies Behavior;
// partykit dev keeps a DevTools session on workerd with network events on: four inspector
// events per subrequest, ~1.4 ms of workerd CPU and as much again in partykit's Node
// process per proxied call (profile:proxy measures it). It is a development server's
// instrument, which a deployment does not have; npm start and startGovernor() turn it off,
// and so does this benchmark; BENCH_DEVTOOLS=on keeps it.
const DEVTOOLS_NETWORK = process.env.BENCH_DEVTOOLS === "on";
// partykit dev's line per request, as npm start has it (scripts/request-log.js): off unless GOVERNOR_REQUEST_LOG=on.
const REQUEST_LOG = requestLog(process.env) ?? "off";

interface Workload {
  key: "oneLine" | "context40k";
  label: string;
  body: Record<string, unknown>;
  /** The stand-in reports this instead of counting the prompt itself on every call. */
  promptTokens?: number;
  latency: { rounds: number; perRound: number; warmup: number; maxRoundMs: number };
  throughput: { rounds: number; sliceMs: number; warmup: number };
  stream: { rounds: number; perRound: number; warmup: number; maxRoundMs: number };
}

const CONCURRENCY = 32;

interface Measured {
  latency: Record<string, Summary>;
  throughput: Record<string, Throughput>;
  ttfb: Record<string, Summary>;
}

runBenchmark("bench:peers", DEADLINE_MS, async () => {
  const started = performance.now();
  const loadBefore = loadavg();

  log(`making a ~${CONTEXT_TOKENS}-token agent context ...`);
  const context = agentContext(CONTEXT_TOKENS);
  const contextBytes = Buffer.byteLength(JSON.stringify(context.body));
  log(`  ${context.tokens} tokens (o200k), ${context.body.messages.length} messages, ${(contextBytes / 1024).toFixed(0)} KiB`);

  const upstream = await startUpstream();
  onCleanup(() => upstream.close());
  log(`stand-in provider at ${upstream.url}`);
  const peer = await startPeer();
  onCleanup(() => peer.stop());
  log(`peer gateway (Portkey) at ${peer.url}`);
  log("starting partykit dev ...");
  const gov = await startGovernor({ devtoolsNetwork: DEVTOOLS_NETWORK, requestLog: REQUEST_LOG, vars: { OPENAI_BASE_URL: upstream.url + "/v1", OPENAI_API_KEY: "sk-bench" } });
  onCleanup(() => gov.stop());
  log(`Governor at ${gov.url}; partykit dev's DevTools network events ${DEVTOOLS_NETWORK ? "on" : "off, as npm start has them (BENCH_DEVTOOLS=on keeps them)"}`);

  const clients = [httpClient(upstream.url, CONCURRENCY), httpClient(peer.url, CONCURRENCY), httpClient(gov.url, CONCURRENCY)];
  for (const c of clients) onCleanup(() => c.close());
  const [directClient, peerClient, govClient] = clients;
  const phase = <T>(name: string, fn: () => Promise<T>) => measured(gov, name, fn, { afterReload: () => clients.forEach((c) => c.reset()) });
  const groups = [{ pgid: gov.pid }, { pgid: peer.pid, nameOf: (comm: string) => `peer (${comm})` }];

  const run = Date.now().toString(36);
  const openSession = async (id: string) =>
    expectOk(await govClient.request("/v1/sessions", { headers: { authorization: `Bearer ${TOKENS.operator}` }, body: { id, policy: { budget: { session_usd: 1_000_000 } } } }), `open session ${id}`);

  const targetsFor = (session: string): Target[] => [
    { name: "direct", client: directClient, path: "/v1/chat/completions", headers: { authorization: "Bearer sk-bench" }, governed: false },
    { name: "peer", client: peerClient, path: "/v1/chat/completions", headers: peer.headers(upstream.url, "sk-bench"), governed: false },
    { name: "Governor", client: govClient, path: "/v1/proxy/openai/v1/chat/completions", headers: { authorization: `Bearer ${TOKENS.agent}`, "x-session-id": session }, governed: true },
  ];

  const chat = { model: "gpt-4o-mini", messages: [{ role: "user", content: "Say hello in five words." }], max_tokens: 16 };
  const workloads: Workload[] = [
    {
      key: "oneLine",
      label: "one-line prompt",
      body: chat,
      latency: { rounds: 5, perRound: n(200), warmup: n(200), maxRoundMs: 20_000 },
      throughput: { rounds: 2, sliceMs: 4_000 * Math.min(1, SCALE * 2), warmup: n(200) },
      stream: { rounds: 4, perRound: n(50), warmup: n(20), maxRoundMs: 10_000 },
    },
    {
      key: "context40k",
      label: `~${Math.round(context.tokens / 1000)}k-token agent context`,
      body: context.body as unknown as Record<string, unknown>,
      promptTokens: context.tokens,
      latency: { rounds: 5, perRound: n(40), warmup: n(20), maxRoundMs: 15_000 },
      throughput: { rounds: 2, sliceMs: 4_000 * Math.min(1, SCALE * 2), warmup: n(32) },
      stream: { rounds: 3, perRound: n(20), warmup: n(5), maxRoundMs: 10_000 },
    },
  ];

  // One call through each gateway first, so a broken route is reported as such and not as a timing.
  {
    const session = `peers-smoke-${run}`;
    await openSession(session);
    for (const t of targetsFor(session)) {
      upstream.reset();
      const r = await t.client.request(t.path, { headers: t.headers, body: chat });
      if (r.status !== 200) throw new Error(`${t.name} is not working: POST ${t.path} answered ${r.status}: ${r.body.slice(0, 600)}`);
      checkChat(t)(r);
      const seen = upstream.requests.at(-1);
      if (!seen || seen.headers.authorization !== "Bearer sk-bench") throw new Error(`${t.name} did not reach the stand-in with the provider key: ${JSON.stringify(seen?.headers ?? null)}`);
    }
  }

  const results: Record<string, Measured> = {};
  for (const w of workloads) {
    const session = `peers-${w.key}-${run}`;
    await openSession(session);
    const targets = targetsFor(session);
    const plain: Behavior = w.promptTokens ? { promptTokens: w.promptTokens } : {};
    const streamBody = { ...w.body, stream: true, stream_options: { include_usage: true } };

    log(`\n${w.label}: latency at concurrency 1, ${w.latency.rounds} alternating rounds of ${w.latency.perRound}`);
    const latency = await phase(`${w.key} latency`, async () => {
      upstream.reset();
      upstream.setDefault(plain);
      return alternate(targets, w.body, checkChat, { ...w.latency, pick: (r) => r.ms });
    });
    for (const t of targets) log(`  ${t.name}: p50 ${ms(latency[t.name].p50)} ms, p99 ${ms(latency[t.name].p99)} ms (${latency[t.name].n} samples)`);

    log(`${w.label}: requests/s at concurrency ${CONCURRENCY}, ${w.throughput.rounds} alternating slices of ${(w.throughput.sliceMs / 1000).toFixed(1)} s`);
    const throughput = await phase(`${w.key} throughput`, async () => {
      upstream.reset();
      upstream.setDefault(plain);
      return throughputRounds(targets, w.body, checkChat, { concurrency: CONCURRENCY, ...w.throughput, groups });
    });
    for (const t of targets) log(`  ${t.name}: ${Math.round(throughput[t.name].perSecond)} requests/s`);

    log(`${w.label}: stream time to first byte (stand-in: ${STREAM_BEHAVIOR.chunks} chunks, ${STREAM_BEHAVIOR.chunkDelayMs} ms apart), ${w.stream.rounds} alternating rounds of ${w.stream.perRound}`);
    const ttfb = await phase(`${w.key} streaming`, async () => {
      upstream.reset();
      upstream.setDefault({ ...plain, ...STREAM_BEHAVIOR });
      return alternate(targets, streamBody, checkStream, { ...w.stream, pick: (r) => r.firstChunkMs });
    });
    upstream.setDefault({});
    upstream.reset();
    for (const t of targets) log(`  ${t.name}: first byte p50 ${ms(ttfb[t.name].p50)} ms`);
    results[w.key] = { latency, throughput, ttfb };
  }

  // ---------------------------------------------------------------- report
  const added = (m: Record<string, Summary>, who: string, p: "p50" | "p99") => m[who][p] - m.direct[p];
  const ratio = (a: number, b: number) => (b > 0 && Number.isFinite(a / b) ? `${(a / b).toFixed(2)}x` : "n/a");
  const yes = (ok: boolean) => (ok ? "yes" : "NO");
  const lines: string[] = [];
  lines.push("");
  lines.push(`Governor vs a peer gateway (Portkey ${peerVersion()}), node ${process.version}, loopback, keep-alive clients; stand-in provider in the benchmark's process`);
  lines.push(`Governor under partykit dev 0.0.115 (workerd 2024-07), DevTools network events ${DEVTOOLS_NETWORK ? "on (partykit's default)" : "off"}, line per request ${REQUEST_LOG === "on" ? "on (GOVERNOR_REQUEST_LOG=on)" : "off (as npm start has it; GOVERNOR_REQUEST_LOG=on keeps it)"}`);
  const summary: Record<string, unknown> = {};
  for (const w of workloads) {
    const r = results[w.key];
    const rows: (string | number)[][] = [];
    for (const p of ["p50", "p99"] as const) {
      rows.push([`${p} latency, concurrency 1 (ms)`, ms(r.latency.direct[p]), ms(r.latency.peer[p]), ms(r.latency.Governor[p]), ms(added(r.latency, "peer", p)), ms(added(r.latency, "Governor", p)), ratio(added(r.latency, "Governor", p), added(r.latency, "peer", p))]);
    }
    rows.push([`requests/s, concurrency ${CONCURRENCY}`, Math.round(r.throughput.direct.perSecond), Math.round(r.throughput.peer.perSecond), Math.round(r.throughput.Governor.perSecond), "", "", ratio(r.throughput.Governor.perSecond, r.throughput.peer.perSecond)]);
    rows.push(["stream first byte p50 (ms)", ms(r.ttfb.direct.p50), ms(r.ttfb.peer.p50), ms(r.ttfb.Governor.p50), ms(added(r.ttfb, "peer", "p50")), ms(added(r.ttfb, "Governor", "p50")), ratio(added(r.ttfb, "Governor", "p50"), added(r.ttfb, "peer", "p50"))]);
    rows.push(["stream first byte p99 (ms)", ms(r.ttfb.direct.p99), ms(r.ttfb.peer.p99), ms(r.ttfb.Governor.p99), ms(added(r.ttfb, "peer", "p99")), ms(added(r.ttfb, "Governor", "p99")), ratio(added(r.ttfb, "Governor", "p99"), added(r.ttfb, "peer", "p99"))]);
    lines.push("");
    lines.push(`${w.label} (${w === workloads[1] ? `${(contextBytes / 1024).toFixed(0)} KiB body, ` : ""}${r.latency.Governor.n} latency samples each)`);
    lines.push(table(["", "direct", "peer", "Governor", "peer adds", "Governor adds", "Governor / peer"], rows));
    const cpu = cpuLines(["direct", "peer", "Governor"].map((k) => [k, r.throughput[k].cpuMsPerRequest] as [string, Record<string, number> | null]));
    if (cpu) lines.push("", `CPU ms per request during the concurrency-${CONCURRENCY} runs, by process (the benchmark process also runs the stand-in)`, cpu);
    summary[w.key] = {
      addedP50: { peer: added(r.latency, "peer", "p50"), governor: added(r.latency, "Governor", "p50") },
      addedP99: { peer: added(r.latency, "peer", "p99"), governor: added(r.latency, "Governor", "p99") },
      perSecond: { direct: r.throughput.direct.perSecond, peer: r.throughput.peer.perSecond, governor: r.throughput.Governor.perSecond, governorOverPeer: r.throughput.Governor.perSecond / r.throughput.peer.perSecond },
      ttfbAddedP50: { peer: added(r.ttfb, "peer", "p50"), governor: added(r.ttfb, "Governor", "p50") },
    };
  }

  const one = results.oneLine;
  const big = results.context40k;
  const g50 = added(one.latency, "Governor", "p50");
  const g99 = added(one.latency, "Governor", "p99");
  const goals = {
    addedP50: g50 <= GOALS.addedP50Ms && g50 < added(one.latency, "peer", "p50"),
    addedP99: g99 <= GOALS.addedP99Ms,
    perSecond: one.throughput.Governor.perSecond >= one.throughput.peer.perSecond,
    perSecondStretch: one.throughput.Governor.perSecond >= 2 * one.throughput.peer.perSecond,
    contextP50: added(big.latency, "Governor", "p50") - g50 <= GOALS.contextP50WithinMs,
    ttfb: added(one.ttfb, "Governor", "p50") <= GOALS.ttfbAddedMs && added(big.ttfb, "Governor", "p50") <= GOALS.ttfbAddedMs,
  };
  lines.push("");
  lines.push(
    table(
      ["goal (from issue 9)", "figure", "met"],
      [
        [`added p50 <= ${GOALS.addedP50Ms} ms and below the peer's`, `${ms(g50)} vs peer ${ms(added(one.latency, "peer", "p50"))}`, yes(goals.addedP50)],
        [`added p99 <= ${GOALS.addedP99Ms} ms`, ms(g99), yes(goals.addedP99)],
        [`requests/s >= the peer's (stretch 2x)`, ratio(one.throughput.Governor.perSecond, one.throughput.peer.perSecond), `${yes(goals.perSecond)} (stretch ${yes(goals.perSecondStretch)})`],
        [`40k context: added p50 within ${GOALS.contextP50WithinMs} ms of one-line`, `${ms(added(big.latency, "Governor", "p50"))} vs ${ms(g50)}`, yes(goals.contextP50)],
        [`stream first byte added <= ${GOALS.ttfbAddedMs} ms`, `${ms(added(one.ttfb, "Governor", "p50"))} / ${ms(added(big.ttfb, "Governor", "p50"))}`, yes(goals.ttfb)],
      ],
    ),
  );
  const loadAfter = loadavg();
  lines.push("");
  lines.push(`Whole run: ${((performance.now() - started) / 1000).toFixed(0)} s on ${cpus().length} cores; load average ${loadBefore[0].toFixed(2)} before, ${loadAfter[0].toFixed(2)} after (other work on the machine skews absolute figures; ratios within one run hold up better).`);
  if (reloadsOf(gov) || retried.length) lines.push(`The server reloaded ${reloadsOf(gov)} time(s) during the run (a source file changed); phases measured again: ${retried.map((r) => r.phase).join(", ") || "none"}.`);
  console.log(lines.join("\n"));

  const path = writeResults(
    "peers.json",
    rounded({
      benchmark: "peers",
      at: new Date().toISOString(),
      node: process.version,
      platform: `${process.platform}-${process.arch}`,
      peer: { name: "@portkey-ai/gateway", version: peerVersion() },
      devtoolsNetworkEvents: DEVTOOLS_NETWORK,
      requestLog: REQUEST_LOG,
      git: gitState(),
      machine: { cores: cpus().length, loadAverageBefore: loadBefore[0], loadAverageAfter: loadAfter[0] },
      scale: SCALE,
      unit: "ms",
      concurrency: CONCURRENCY,
      goals: GOALS,
      met: goals,
      context: { tokens: context.tokens, bytes: contextBytes, messages: context.body.messages.length },
      streamBehavior: STREAM_BEHAVIOR,
      summary,
      results,
      reloads: reloadsOf(gov),
      retried,
    }),
  );
  log(`\nwrote ${path}`);
});

function peerVersion(): string {
  try {
    return (JSON.parse(readFileSync(`${ROOT}/node_modules/@portkey-ai/gateway/package.json`, "utf8")) as { version: string }).version;
  } catch {
    return "?";
  }
}
