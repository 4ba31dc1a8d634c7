import { cpus, loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { startGovernor, TOKENS } from "../test/support/server";
import { startUpstream, type Behavior } from "../test/support/upstream";
import { cpuPerRequest, cpuSnapshot, expectOk, gitState, httpClient, load, log, onCleanup, phase as measured, reloadsOf, retried, runBenchmark, sequential, writeResults, type Client, type Reply } from "./harness";
import { cpuLines, ms, rounded, summarize, table, type Summary } from "./stats";

// What the proxy adds to an LLM call: the same request sent straight to the local
// stand-in provider and through Governor (reserve in the session actor, forward,
// settle), measured in one run so both sides share the machine's conditions.
//
// Sizes can be shrunk for a quick look: BENCH_SCALE=0.1 npm run bench:proxy

const SCALE = Number(process.env.BENCH_SCALE ?? "1") || 1;
const n = (x: number) => Math.max(1, Math.round(x * SCALE));

const WARMUP = n(200);
const ROUNDS = 10;
const PER_ROUND = n(200);
const THROUGHPUT = { concurrency: 32, count: n(20_000), maxMs: 8_000 };
const STREAM = { behavior: { chunkDelayMs: 5, chunks: 4 } satisfies Behavior, rounds: 5, perRound: n(40) };
const DEADLINE_MS = 300_000;

const GOALS = { addedP50Ms: 1, addedP99Ms: 5 };

const CHAT = { model: "gpt-4o-mini", messages: [{ role: "user", content: "Say hello in five words." }], max_tokens: 16 };
// The proxy asks the provider for usage on every stream (it settles with it), which makes
// the provider send one more chunk; the direct request asks too, so both streams match.
const STREAM_CHAT = { ...CHAT, stream: true, stream_options: { include_usage: true } };

type Target = { name: string; client: Client; path: string; headers: Record<string, string>; governed: boolean };

function call(t: Target, body: unknown, check: (r: Reply) => void) {
  return async () => {
    const r = expectOk(await t.client.request(t.path, { headers: t.headers, body }), `${t.name} POST ${t.path}`);
    check(r);
    return r;
  };
}

/** A proxied answer that lacks Governor's headers was not governed: the figures would be meaningless. */
function checkChat(t: Target) {
  return (r: Reply) => {
    if (!r.body.includes('"chat.completion"')) throw new Error(`${t.name}: not a chat completion: ${r.body.slice(0, 300)}`);
    if (t.governed && !r.headers["x-governor-request-id"]) throw new Error(`${t.name}: answer has no X-Governor-Request-ID header`);
  };
}

function checkStream(t: Target) {
  return (r: Reply) => {
    if (!String(r.headers["content-type"]).includes("text/event-stream")) throw new Error(`${t.name}: not an event stream (${r.headers["content-type"]}): ${r.body.slice(0, 300)}`);
    if (!r.body.includes("data: [DONE]")) throw new Error(`${t.name}: stream ended without [DONE]: ${r.body.slice(-300)}`);
  };
}

/**
 * Concurrency 1, alternating between direct and governed in rounds, so that drift on a
 * busy machine lands on both sides instead of biasing one.
 */
async function paired(targets: Target[], body: unknown, check: (t: Target) => (r: Reply) => void, rounds: number, perRound: number, warmup: number, pick: (r: Reply) => number) {
  const samples = new Map<string, number[]>(targets.map((t) => [t.name, []]));
  for (const t of targets) {
    const fn = call(t, body, check(t));
    await sequential(warmup, async () => pick(await fn()));
  }
  for (let round = 0; round < rounds; round++) {
    for (const t of targets) {
      const fn = call(t, body, check(t));
      samples.get(t.name)!.push(...(await sequential(perRound, async () => pick(await fn()))));
    }
  }
  return Object.fromEntries(targets.map((t) => [t.name, summarize(samples.get(t.name)!)])) as Record<string, Summary>;
}

async function throughput(t: Target, pgid: number) {
  const fn = call(t, CHAT, checkChat(t));
  await load({ ...THROUGHPUT, count: WARMUP, fn: async () => (await fn()).ms });
  const before = cpuSnapshot(pgid);
  const r = await load({ ...THROUGHPUT, fn: async () => (await fn()).ms });
  const cpu = cpuPerRequest(before, cpuSnapshot(pgid), r.done);
  log(`  ${t.name}: ${Math.round(r.perSecond)} requests/s (${r.done} in ${(r.elapsedMs / 1000).toFixed(1)} s)`);
  return { requests: r.done, seconds: r.elapsedMs / 1000, perSecond: r.perSecond, latency: summarize(r.latencies), cpuMsPerRequest: cpu };
}

runBenchmark("bench:proxy", DEADLINE_MS, async () => {
  const started = performance.now();
  const loadBefore = loadavg();
  const upstream = await startUpstream();
  onCleanup(() => upstream.close());
  log(`stand-in provider at ${upstream.url}`);
  log("starting partykit dev ...");
  const gov = await startGovernor({
    vars: { OPENAI_BASE_URL: upstream.url + "/v1", OPENAI_API_KEY: "sk-bench", ANTHROPIC_BASE_URL: upstream.url, ANTHROPIC_API_KEY: "sk-ant-bench" },
  });
  onCleanup(() => gov.stop());
  log(`Governor at ${gov.url}`);

  const directClient = httpClient(upstream.url, THROUGHPUT.concurrency);
  const govClient = httpClient(gov.url, THROUGHPUT.concurrency);
  onCleanup(() => directClient.close());
  onCleanup(() => govClient.close());
  const phase = <T>(name: string, fn: () => Promise<T>) =>
    measured(gov, name, fn, {
      afterReload: () => {
        govClient.reset();
        directClient.reset();
      },
    });

  const session = `proxy-${Date.now().toString(36)}`;
  const opened = await govClient.request("/v1/sessions", { headers: { authorization: `Bearer ${TOKENS.operator}` }, body: { id: session, policy: { budget: { session_usd: 1_000_000 } } } });
  expectOk(opened, `open session ${session}`);

  const direct: Target = { name: "direct", client: directClient, path: "/v1/chat/completions", headers: { authorization: "Bearer sk-bench" }, governed: false };
  const governed: Target = {
    name: "through Governor",
    client: govClient,
    path: "/v1/proxy/openai/v1/chat/completions",
    headers: { authorization: `Bearer ${TOKENS.agent}`, "x-session-id": session },
    governed: true,
  };

  // One governed call first, so a broken proxy is reported as such and not as a timing.
  upstream.reset();
  const smoke = await govClient.request(governed.path, { headers: governed.headers, body: CHAT });
  if (smoke.status !== 200 || !smoke.headers["x-governor-request-id"]) {
    throw new Error(
      `the proxy is not working: POST ${governed.path} answered ${smoke.status} ` +
        `(x-governor-request-id: ${smoke.headers["x-governor-request-id"] ?? "absent"}), ` +
        `the stand-in saw ${upstream.requests.length} request(s): ${smoke.body.slice(0, 800)}\n--- partykit dev output (tail) ---\n${gov.output().slice(-3000)}`,
    );
  }
  const forwarded = upstream.requests[0];
  if (!forwarded || forwarded.headers.authorization !== "Bearer sk-bench") throw new Error(`the proxy did not forward with the gateway's provider key: ${JSON.stringify(forwarded?.headers ?? null)}`);

  log(`\nnon-streaming chat completion, concurrency 1: ${WARMUP} warm-up each, then ${ROUNDS} alternating rounds of ${PER_ROUND}`);
  const lat = await phase("latency", async () => {
    upstream.reset();
    return paired([direct, governed], CHAT, checkChat, ROUNDS, PER_ROUND, WARMUP, (r) => r.ms);
  });
  const addedP50 = lat[governed.name].p50 - lat[direct.name].p50;
  const addedP99 = lat[governed.name].p99 - lat[direct.name].p99;

  log(`\nthroughput, concurrency ${THROUGHPUT.concurrency}, up to ${THROUGHPUT.maxMs / 1000} s each`);
  upstream.reset();
  const directLoad = await phase("direct throughput", () => throughput(direct, gov.pid));
  upstream.reset();
  const govLoad = await phase("governed throughput", () => throughput(governed, gov.pid));

  log(`\nstreaming (stand-in: ${STREAM.behavior.chunks} chunks, ${STREAM.behavior.chunkDelayMs} ms apart), concurrency 1`);
  const streamed = await phase("streaming", async () => {
    upstream.reset();
    upstream.setDefault(STREAM.behavior);
    const ttfb = await paired([direct, governed], STREAM_CHAT, checkStream, STREAM.rounds, STREAM.perRound, n(20), (r) => r.firstChunkMs);
    const whole = await paired([direct, governed], STREAM_CHAT, checkStream, 1, STREAM.perRound, 0, (r) => r.ms);
    upstream.setDefault({});
    return { ttfb, whole };
  });
  upstream.reset();

  // Every governed call was reserved and settled in the actor; its spend proves it.
  const state = JSON.parse(expectOk(await govClient.request(`/v1/sessions/${session}`, { headers: { authorization: `Bearer ${TOKENS.operator}` } }), "read session").body) as { seq: number; spentUsd: number; reservations: unknown[] };

  // ---------------------------------------------------------------- report
  const yes = (ok: boolean) => (ok ? "yes" : "NO");
  const d = lat[direct.name];
  const g = lat[governed.name];
  const lines: string[] = [];
  lines.push("");
  lines.push(`Governor proxy benchmark (partykit dev / workerd, node ${process.version}, loopback, keep-alive; stand-in provider in the benchmark's process)`);
  lines.push("");
  lines.push(`Non-streaming chat completion (gpt-4o-mini, max_tokens 16), concurrency 1, ${d.n} samples each (ms)`);
  lines.push(
    table(
      ["path", "p50", "p90", "p99", "mean"],
      [
        ["direct to stand-in", ms(d.p50), ms(d.p90), ms(d.p99), ms(d.mean)],
        ["through Governor", ms(g.p50), ms(g.p90), ms(g.p99), ms(g.mean)],
      ],
    ),
  );
  lines.push("");
  lines.push(
    table(
      ["added by Governor", "ms", "goal", "met"],
      [
        ["p50", ms(addedP50), `<= ${GOALS.addedP50Ms}`, yes(addedP50 <= GOALS.addedP50Ms)],
        ["p99", ms(addedP99), `<= ${GOALS.addedP99Ms}`, yes(addedP99 <= GOALS.addedP99Ms)],
      ],
    ),
  );
  lines.push("");
  lines.push(`Throughput, concurrency ${THROUGHPUT.concurrency}`);
  lines.push(
    table(
      ["path", "requests", "seconds", "per second", "p50 ms", "p99 ms"],
      [
        ["direct to stand-in", directLoad.requests, directLoad.seconds.toFixed(1), Math.round(directLoad.perSecond), ms(directLoad.latency.p50), ms(directLoad.latency.p99)],
        ["through Governor", govLoad.requests, govLoad.seconds.toFixed(1), Math.round(govLoad.perSecond), ms(govLoad.latency.p50), ms(govLoad.latency.p99)],
      ],
    ),
  );
  lines.push(`Governed / direct: ${(govLoad.perSecond / directLoad.perSecond).toFixed(3)}x.`);
  const cpuTable = cpuLines([
    ["direct to stand-in", directLoad.cpuMsPerRequest],
    ["through Governor", govLoad.cpuMsPerRequest],
  ]);
  if (cpuTable) lines.push("", "CPU per request during the throughput runs (ms, by process; the stand-in runs in the benchmark process)", cpuTable);
  lines.push("");
  const st = streamed.ttfb;
  const sw = streamed.whole;
  lines.push(`Streaming chat completion (${STREAM.behavior.chunks} chunks, ${STREAM.behavior.chunkDelayMs} ms apart), concurrency 1 (ms)`);
  lines.push(
    table(
      ["path", "first chunk p50", "first chunk p99", "whole stream p50", "whole stream p99"],
      [
        ["direct to stand-in", ms(st[direct.name].p50), ms(st[direct.name].p99), ms(sw[direct.name].p50), ms(sw[direct.name].p99)],
        ["through Governor", ms(st[governed.name].p50), ms(st[governed.name].p99), ms(sw[governed.name].p50), ms(sw[governed.name].p99)],
        ["added", ms(st[governed.name].p50 - st[direct.name].p50), ms(st[governed.name].p99 - st[direct.name].p99), ms(sw[governed.name].p50 - sw[direct.name].p50), ms(sw[governed.name].p99 - sw[direct.name].p99)],
      ],
    ),
  );
  lines.push("");
  lines.push(`Session after the run: ${state.seq} events, $${state.spentUsd.toFixed(6)} spent, ${state.reservations.length} reservation(s) open.`);
  const loadAfter = loadavg();
  lines.push(`Whole run: ${((performance.now() - started) / 1000).toFixed(0)} s on ${cpus().length} cores; load average ${loadBefore[0].toFixed(2)} before, ${loadAfter[0].toFixed(2)} after (other work on the machine skews the figures).`);
  if (reloadsOf(gov) || retried.length) lines.push(`The server reloaded ${reloadsOf(gov)} time(s) during the run (a source file changed); phases measured again: ${retried.map((r) => r.phase).join(", ") || "none"}.`);
  console.log(lines.join("\n"));

  const path = writeResults(
    "proxy.json",
    rounded({
      benchmark: "proxy",
      at: new Date().toISOString(),
      node: process.version,
      platform: `${process.platform}-${process.arch}`,
      git: gitState(),
      machine: { cores: cpus().length, loadAverageBefore: loadBefore[0], loadAverageAfter: loadAfter[0] },
      scale: SCALE,
      unit: "ms",
      goals: GOALS,
      request: CHAT,
      latency: { concurrency: 1, warmup: WARMUP, direct: d, governed: g, added: { p50: addedP50, p99: addedP99 } },
      throughput: { concurrency: THROUGHPUT.concurrency, direct: directLoad, governed: govLoad, ratio: govLoad.perSecond / directLoad.perSecond },
      streaming: {
        behavior: STREAM.behavior,
        firstChunk: { direct: st[direct.name], governed: st[governed.name], added: { p50: st[governed.name].p50 - st[direct.name].p50, p99: st[governed.name].p99 - st[direct.name].p99 } },
        wholeStream: { direct: sw[direct.name], governed: sw[governed.name] },
      },
      session: { events: state.seq, spentUsd: state.spentUsd, openReservations: state.reservations.length },
      reloads: reloadsOf(gov),
      retried,
      met: { addedP50: addedP50 <= GOALS.addedP50Ms, addedP99: addedP99 <= GOALS.addedP99Ms },
    }),
  );
  log(`\nwrote ${path}`);
});
