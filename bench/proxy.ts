import { cpus, loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { startGovernor, TOKENS } from "../test/support/server";
import { startUpstream, type Behavior } from "../test/support/upstream";
import { agentContext } from "./context";
import { alternate, call, checkChat, checkStream, cpuPerRequest, cpuSnapshot, expectOk, gitState, httpClient, load, log, onCleanup, phase as measured, reloadsOf, retried, runBenchmark, sequential, sleep, writeResults, type Reply, type Target } from "./harness";
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

const GOALS = { addedP50Ms: 1, addedP99Ms: 5, longContextWithinMs: 1, coldStartWithinMs: 5 };
// A coding agent's context of ~40k tokens (the same bytes bench:peers sends), and one that
// grows by a message per call from ~30k tokens on.
const LONG = { rounds: 5, perRound: n(60), warmup: n(20), tokens: 40_000 };
const GROWING = { fromTokens: 30_000, calls: n(120) };
const COLD = { starts: Math.max(1, Math.round(3 * Math.min(1, SCALE * 3))), after: 20 };

const CHAT = { model: "gpt-4o-mini", messages: [{ role: "user", content: "Say hello in five words." }], max_tokens: 16 };
// The proxy asks the provider for usage on every stream (it settles with it), which makes
// the provider send one more chunk; the direct request asks too, so both streams match.
const STREAM_CHAT = { ...CHAT, stream: true, stream_options: { include_usage: true } };

/** Concurrency 1, alternating between direct and governed in rounds (harness.ts `alternate`). */
function paired(targets: Target[], body: unknown, check: (t: Target) => (r: Reply) => void, rounds: number, perRound: number, warmup: number, pick: (r: Reply) => number) {
  return alternate(targets, body, check, { rounds, perRound, warmup, pick });
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

  // ---------------------------------------------------------------- long contexts
  const longContext = agentContext(LONG.tokens);
  const LONG_CHAT = longContext.body;
  const longBytes = Buffer.byteLength(JSON.stringify(LONG_CHAT));
  const longTurns = (LONG_CHAT.messages.length - 3) / 2;
  log(`\nlong context (${longContext.tokens} tokens, ${longTurns} tool calls, ${Math.round(longBytes / 1024)} KiB), concurrency 1: ${LONG.warmup} warm-up each, then ${LONG.rounds} alternating rounds of ${LONG.perRound}`);
  // The stand-in reports a fixed prompt size rather than tokenizing 190 KiB on every call
  // (60 ms in this process, which would drown what is measured), as bench:peers has it.
  upstream.setDefault({ promptTokens: longContext.tokens });
  const long = await phase("long context", async () => {
    upstream.reset();
    return paired([direct, governed], LONG_CHAT, checkChat, LONG.rounds, LONG.perRound, LONG.warmup, (r) => r.ms);
  });
  const addedLongP50 = long[governed.name].p50 - long[direct.name].p50;

  // The same agent loop, longer: from the prefix of ~30k tokens on, each call sends one message more.
  const grown = agentContext(GROWING.fromTokens + 60_000).body;
  const from = agentContext(GROWING.fromTokens).body.messages.length - 1;
  log(`\ngrowing context: from ${from} messages (~${GROWING.fromTokens / 1000}k tokens), one message more per call, ${GROWING.calls} calls each side`);
  const growing = await phase("growing context", async () => {
    upstream.reset();
    const d: number[] = [];
    const g: number[] = [];
    let body: unknown = grown;
    for (let i = 0; i < GROWING.calls; i++) {
      body = { ...grown, messages: grown.messages.slice(0, Math.min(grown.messages.length, from + i + 1)) };
      d.push((await call(direct, body, checkChat(direct))()).ms);
      g.push((await call(governed, body, checkChat(governed))()).ms);
    }
    const endBytes = Buffer.byteLength(JSON.stringify(body));
    return { direct: summarize(d), governed: summarize(g), added: summarize(g.map((x, i) => x - d[i])), endKiB: Math.round(endBytes / 1024), endTokensApprox: Math.round(endBytes / 4.7) };
  });

  // Every governed call was reserved and settled in the actor; its spend proves it (the
  // last settle waits a moment for a next call to carry it, then goes on its own).
  await sleep(100);
  const state = JSON.parse(expectOk(await govClient.request(`/v1/sessions/${session}`, { headers: { authorization: `Bearer ${TOKENS.operator}` } }), "read session").body) as { seq: number; spentUsd: number; reservations: unknown[] };

  // ---------------------------------------------------------------- cold start
  // A fresh server each time: the first proxied call after start (the isolate, the actor and
  // the tokenizer all cold) against the calls that follow it.
  log(`\ncold start: ${COLD.starts} fresh server(s), first proxied call vs the next ${COLD.after}`);
  const cold: Array<{ first: number; next: Summary }> = [];
  for (let i = 0; i < COLD.starts; i++) {
    const fresh = await startGovernor({ vars: { OPENAI_BASE_URL: upstream.url + "/v1", OPENAI_API_KEY: "sk-bench", ANTHROPIC_BASE_URL: upstream.url, ANTHROPIC_API_KEY: "sk-ant-bench" } });
    const c = httpClient(fresh.url, 1);
    try {
      const id = `cold-${i}`;
      expectOk(await c.request("/v1/sessions", { headers: { authorization: `Bearer ${TOKENS.operator}` }, body: { id, policy: { budget: { session_usd: 100 } } } }), "open cold session");
      const t: Target = { name: "cold", client: c, path: governed.path, headers: { authorization: `Bearer ${TOKENS.agent}`, "x-session-id": id }, governed: true };
      const fn = call(t, LONG_CHAT, checkChat(t));
      const first = (await fn()).ms;
      const next = summarize(await sequential(COLD.after, async () => (await fn()).ms));
      cold.push({ first, next });
      log(`  start ${i + 1}: first ${ms(first)} ms, next p50 ${ms(next.p50)} ms`);
    } finally {
      c.close();
      await fresh.stop();
    }
  }
  upstream.setDefault({});
  const coldAdded = summarize(cold.map((x) => x.first - x.next.p50));

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
  const ld = long[direct.name];
  const lg = long[governed.name];
  lines.push(`Long context: a coding agent's context, ${longTurns} tool calls (${Math.round(longBytes / 1024)} KiB, ${longContext.tokens} tokens), non-streaming, concurrency 1 (ms)`);
  lines.push(
    table(
      ["path", "p50", "p90", "p99"],
      [
        ["direct to stand-in", ms(ld.p50), ms(ld.p90), ms(ld.p99)],
        ["through Governor", ms(lg.p50), ms(lg.p90), ms(lg.p99)],
        ["added", ms(addedLongP50), ms(lg.p90 - ld.p90), ms(lg.p99 - ld.p99)],
      ],
    ),
  );
  lines.push(`Added p50, long context vs one-line prompt: ${ms(addedLongP50)} vs ${ms(addedP50)} ms (goal: within ${GOALS.longContextWithinMs} ms: ${yes(addedLongP50 - addedP50 <= GOALS.longContextWithinMs)}).`);
  lines.push(`Growing context (one message more per call, up to ${growing.endKiB} KiB): added p50 ${ms(growing.added.p50)} ms, p99 ${ms(growing.added.p99)} ms over ${growing.added.n} calls.`);
  lines.push(`Cold start (${cold.length} fresh server(s)): first call ${cold.map((x) => ms(x.first)).join(", ")} ms; the next ${COLD.after} calls p50 ${cold.map((x) => ms(x.next.p50)).join(", ")} ms; first minus next p50: ${ms(coldAdded.p50)} ms (goal: within ${GOALS.coldStartWithinMs} ms: ${yes(coldAdded.p50 <= GOALS.coldStartWithinMs)}).`);
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
      longContext: { tokens: longContext.tokens, turns: longTurns, bytes: longBytes, direct: ld, governed: lg, addedP50: addedLongP50, addedP50OneLine: addedP50 },
      growingContext: growing,
      coldStart: { starts: cold, firstMinusNextP50: coldAdded },
      session: { events: state.seq, spentUsd: state.spentUsd, openReservations: state.reservations.length },
      reloads: reloadsOf(gov),
      retried,
      met: { addedP50: addedP50 <= GOALS.addedP50Ms, addedP99: addedP99 <= GOALS.addedP99Ms, longContext: addedLongP50 - addedP50 <= GOALS.longContextWithinMs, coldStart: coldAdded.p50 <= GOALS.coldStartWithinMs },
    }),
  );
  log(`\nwrote ${path}`);
});
