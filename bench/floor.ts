import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { startGovernor, TOKENS } from "../test/support/server";
import { startUpstream, type Behavior } from "../test/support/upstream";
import { agentContext } from "./context";
import { alternate, BENCH_DIR, checkChat, checkStream, expectOk, gitState, httpClient, log, onCleanup, runBenchmark, throughputRounds, writeResults, type Target } from "./harness";
import { ms, rounded, table, type Summary } from "./stats";

// The latency floor of partykit dev on this machine (`npm run bench:floor`): what the least
// a proxy on this runtime can do adds over calling the provider direct, one layer at a time
// (bench/floor/: an outbound fetch; then one Durable Object round trip; then one storage
// write in that turn, awaited or left to the output gate), measured in the same run as
// Governor. What Governor adds beyond the layers it uses is ours; the rest is the runtime's.
// Both servers run as `npm start` runs partykit dev (DevTools network events and the
// per-request log off). BENCH_SCALE=0.1 for a quick look.

const SCALE = Number(process.env.BENCH_SCALE ?? "1") || 1;
const n = (x: number) => Math.max(1, Math.round(x * SCALE));
const CONCURRENCY = 32;
const STREAM: Behavior = { chunkDelayMs: 5, chunks: 4 };

const LAYERS = [
  { name: "fetch", path: "/fetch", what: "HTTP in, one outbound fetch, HTTP out" },
  { name: "+ DO round trip", path: "/stub", what: "and one round trip to a Durable Object" },
  { name: "+ awaited put", path: "/put", what: "whose turn awaits one storage.put" },
  { name: "+ gated put", path: "/put-gated", what: "whose turn writes without awaiting (the output gate holds the answer)" },
] as const;

runBenchmark("bench:floor", 480_000, async () => {
  const started = performance.now();
  const loadBefore = loadavg();
  const upstream = await startUpstream();
  onCleanup(() => upstream.close());
  const vars = { OPENAI_BASE_URL: upstream.url + "/v1", OPENAI_API_KEY: "sk-bench" };
  log("starting partykit dev twice (the floor project, and Governor) ...");
  const floor = await startGovernor({ project: join(BENCH_DIR, "floor"), vars });
  onCleanup(() => floor.stop());
  const gov = await startGovernor({ vars });
  onCleanup(() => gov.stop());

  const clients = { direct: httpClient(upstream.url, CONCURRENCY), floor: httpClient(floor.url, CONCURRENCY), gov: httpClient(gov.url, CONCURRENCY) };
  for (const c of Object.values(clients)) onCleanup(() => c.close());
  const session = `floor-${Date.now().toString(36)}`;
  expectOk(await clients.gov.request("/v1/sessions", { headers: { authorization: `Bearer ${TOKENS.operator}` }, body: { id: session, policy: { budget: { session_usd: 1_000_000 } } } }), "open session");

  const targets: Target[] = [
    { name: "direct", client: clients.direct, path: "/v1/chat/completions", headers: { authorization: "Bearer sk-bench" }, governed: false },
    ...LAYERS.map((l) => ({ name: l.name, client: clients.floor, path: l.path, headers: {}, governed: false })),
    { name: "Governor", client: clients.gov, path: "/v1/proxy/openai/v1/chat/completions", headers: { authorization: `Bearer ${TOKENS.agent}`, "x-session-id": session }, governed: true },
  ];
  const streamTargets = targets.filter((t) => ["direct", "fetch", "+ awaited put", "Governor"].includes(t.name));
  const groups = [
    { pgid: floor.pid, nameOf: (comm: string) => `floor ${comm === "node" ? "partykit (node)" : comm}` },
    { pgid: gov.pid, nameOf: (comm: string) => `Governor ${comm === "node" ? "partykit (node)" : comm}` },
  ];

  const chat = { model: "gpt-4o-mini", messages: [{ role: "user", content: "Say hello in five words." }], max_tokens: 16 };
  const context = agentContext(40_000);
  const big = context.body as unknown as Record<string, unknown>;

  log(`one-line prompt: latency at concurrency 1, 5 alternating rounds of ${n(200)}`);
  upstream.setDefault({});
  const oneLine = await alternate(targets, chat, checkChat, { rounds: 5, perRound: n(200), warmup: n(100), pick: (r) => r.ms, maxRoundMs: 20_000 });
  log(`one-line prompt: requests/s at concurrency ${CONCURRENCY}`);
  const throughput = await throughputRounds(targets, chat, checkChat, { concurrency: CONCURRENCY, rounds: 2, sliceMs: 3_000 * Math.min(1, SCALE * 2), warmup: n(200), groups });
  log(`~40k-token context (${context.tokens} tokens): latency at concurrency 1`);
  upstream.setDefault({ promptTokens: context.tokens });
  const context40k = await alternate(targets, big, checkChat, { rounds: 4, perRound: n(40), warmup: n(10), pick: (r) => r.ms, maxRoundMs: 15_000 });
  log("stream time to first byte, one-line and 40k");
  upstream.setDefault({ ...STREAM });
  const streamOf = (b: Record<string, unknown>) => ({ ...b, stream: true, stream_options: { include_usage: true } });
  const ttfbOne = await alternate(streamTargets, streamOf(chat), checkStream, { rounds: 3, perRound: n(50), warmup: n(10), pick: (r) => r.firstChunkMs, maxRoundMs: 10_000 });
  upstream.setDefault({ ...STREAM, promptTokens: context.tokens });
  const ttfbBig = await alternate(streamTargets, streamOf(big), checkStream, { rounds: 3, perRound: n(20), warmup: n(5), pick: (r) => r.firstChunkMs, maxRoundMs: 10_000 });
  upstream.setDefault({});

  // ---------------------------------------------------------------- report
  const added = (m: Record<string, Summary>, who: string, p: "p50" | "p99") => m[who][p] - m.direct[p];
  const cpuOfTarget = (name: string) => {
    const c = throughput[name]?.cpuMsPerRequest;
    if (!c) return "";
    const prefix = name === "Governor" ? "Governor " : name === "direct" ? undefined : "floor ";
    if (!prefix) return "";
    return Object.entries(c)
      .filter(([k]) => k.startsWith(prefix))
      .reduce((a, [, v]) => a + v, 0)
      .toFixed(3);
  };
  const rows = targets.map((t, i) => [
    t.name,
    t.name === "direct" ? `(${ms(oneLine.direct.p50)})` : ms(added(oneLine, t.name, "p50")),
    // Each layer against the one it adds to (the gated put, like the awaited one, to the round trip).
    t.name === "direct" || i === 1 || t.name === "Governor" ? "" : ms(oneLine[t.name].p50 - oneLine[t.name === "+ gated put" ? "+ DO round trip" : targets[i - 1].name].p50),
    t.name === "direct" ? `(${ms(oneLine.direct.p99)})` : ms(added(oneLine, t.name, "p99")),
    Math.round(throughput[t.name].perSecond),
    cpuOfTarget(t.name),
    t.name === "direct" ? `(${ms(context40k.direct.p50)})` : ms(added(context40k, t.name, "p50")),
    streamTargets.includes(t) ? (t.name === "direct" ? `(${ms(ttfbOne.direct.p50)} / ${ms(ttfbBig.direct.p50)})` : `${ms(added(ttfbOne, t.name, "p50"))} / ${ms(added(ttfbBig, t.name, "p50"))}`) : "",
  ]);
  const lines = [
    "",
    `The floor of partykit dev 0.0.115 (workerd 2024-07) on this machine, beside Governor ${gitState()?.commit ?? ""}; node ${process.version}, loopback, keep-alive clients`,
    "Each floor layer: " + LAYERS.map((l) => `${l.name}: ${l.what}`).join("; "),
    "",
    table(["", "added p50 (ms)", "layer adds", "added p99", `req/s c=${CONCURRENCY}`, "server CPU ms/call", "40k: added p50", "stream 1st byte added, 1-line / 40k"], rows),
  ];
  const loadAfter = loadavg();
  lines.push("", `Whole run: ${((performance.now() - started) / 1000).toFixed(0)} s on ${cpus().length} cores; load average ${loadBefore[0].toFixed(2)} before, ${loadAfter[0].toFixed(2)} after.`);
  console.log(lines.join("\n"));
  const path = writeResults(
    "floor.json",
    rounded({
      benchmark: "floor",
      at: new Date().toISOString(),
      node: process.version,
      git: gitState(),
      machine: { cores: cpus().length, loadAverageBefore: loadBefore[0], loadAverageAfter: loadAfter[0] },
      scale: SCALE,
      unit: "ms",
      layers: LAYERS,
      latency: { oneLine, context40k },
      throughput,
      ttfb: { oneLine: ttfbOne, context40k: ttfbBig },
    }),
  );
  log(`\nwrote ${path}`);
});
