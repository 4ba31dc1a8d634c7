import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort, ROOT, TOKEN_MAP, TOKENS } from "../test/support/server";
import { startUpstream } from "../test/support/upstream";
import { cpuOf, cpuPerRequest, expectOk, httpClient, load, log, onCleanup, runBenchmark, startChild, type Client } from "./harness";
import { quietDevtools } from "../scripts/devtools.js";
import { requestLog } from "../scripts/request-log.js";
import { agentContext } from "./context";
import { cpuLines, ms, summarize, table } from "./stats";

// A/B of two checkouts of Governor on the same machine at the same time: to measure what a
// change saves before it lands. `npm run bench:ab -- <other checkout>` starts `partykit dev`
// from this checkout (A) and from the other (B, e.g. a `git worktree` of a scratch branch,
// with node_modules linked), and alternates slices of load between them, so the machine's
// drift lands on both. It reports requests/s and CPU per call of each server's processes.
//
// partykit dev's DevTools network events are turned off on both (they cost more than the
// code under test); AB_DEVTOOLS=on keeps them.

const B_ROOT = process.argv[2] ? resolve(process.argv[2]) : undefined;
const SLICE_MS = Number(process.env.AB_SLICE_MS ?? "3000") || 3000;
const ROUNDS = Number(process.env.AB_ROUNDS ?? "4") || 4;
const CONCURRENCY = 8;
const KIND_KEYS: Record<string, string> = { "proxied call": "one-line", "proxied call, ~40k-token context": "40k", action: "action" };

async function startFrom(root: string, vars: Record<string, string>) {
  const port = await freePort();
  const persist = mkdtempSync(join(tmpdir(), "governor-ab-"));
  const args = ["dev", "--port", String(port), "--persist", persist, "--disable-request-cf-fetch", "--no-hotkeys"];
  for (const [k, v] of Object.entries(vars)) args.push("--var", `${k}=${v}`);
  const url = `http://127.0.0.1:${port}`;
  const child = await startChild(join(root, "node_modules/.bin/partykit"), args, {
    cwd: root,
    // As npm start runs it: partykit dev's line per request off unless GOVERNOR_REQUEST_LOG=on
    // (a checkout without the patch of it logs either way).
    env: { CI: "1", GOVERNOR_REQUEST_LOG: requestLog(process.env) ?? "off" },
    timeoutMs: 90_000,
    ready: async () => (await fetch(`${url}/healthz`)).status < 500,
  });
  onCleanup(async () => {
    await child.stop();
    rmSync(persist, { recursive: true, force: true });
  });
  // With the events left on, that side would spend ~1 ms more per call and the comparison
  // would measure that: tried again (partykit's DevTools proxy can come up late on a busy
  // machine), and the run stops if they stay on.
  if (process.env.AB_DEVTOOLS !== "on") {
    let quiet = false;
    for (let attempt = 0; attempt < 3 && !quiet; attempt++) quiet = await quietDevtools(child.pid);
    if (!quiet) throw new Error(`${root}: partykit dev's DevTools network events could not be turned off (AB_DEVTOOLS=on compares with them on)`);
  }
  return { url, pid: child.pid };
}

runBenchmark("bench:ab", 600_000, async () => {
  if (!B_ROOT) throw new Error("usage: npm run bench:ab -- <path of the other checkout>");
  const upstream = await startUpstream();
  onCleanup(() => upstream.close());
  // The stand-in reports a fixed prompt size rather than tokenizing 190 KiB on every call.
  upstream.setDefault({ promptTokens: 40_000 });
  const vars = { GOVERNOR_TOKENS: JSON.stringify(TOKEN_MAP), OPENAI_BASE_URL: upstream.url + "/v1", OPENAI_API_KEY: "sk-bench" };
  log(`A: ${ROOT}\nB: ${B_ROOT}\nstarting both ...`);
  // One after the other: partykit dev picks its DevTools port (9229 when free) as it starts,
  // and two starting at once can both find it free, leaving one without its DevTools proxy.
  const a = await startFrom(ROOT, vars);
  const b = await startFrom(B_ROOT, vars);
  const sides = [
    { name: "A", ...a, client: httpClient(a.url, CONCURRENCY) },
    { name: "B", ...b, client: httpClient(b.url, CONCURRENCY) },
  ];
  for (const s of sides) onCleanup(() => s.client.close());
  const session = `ab-${Date.now().toString(36)}`;
  for (const s of sides) expectOk(await s.client.request("/v1/sessions", { headers: { authorization: `Bearer ${TOKENS.operator}` }, body: { id: session, policy: { budget: { session_usd: 1_000_000 } } } }), `open session on ${s.name}`);
  const agent = { authorization: `Bearer ${TOKENS.agent}` };
  const chat = { model: "gpt-4o-mini", messages: [{ role: "user", content: "Say hello in five words." }], max_tokens: 16 };
  const long = JSON.stringify(agentContext(40_000).body);
  const kinds: Record<string, (c: Client) => () => Promise<number>> = {
    "proxied call": (c) => async () => expectOk(await c.request("/v1/proxy/openai/v1/chat/completions", { headers: { ...agent, "x-session-id": session }, body: chat }), "proxied call").ms,
    "proxied call, ~40k-token context": (c) => async () => expectOk(await c.request("/v1/proxy/openai/v1/chat/completions", { headers: { ...agent, "x-session-id": session }, body: long }), "proxied call (40k)").ms,
    action: (c) => async () => expectOk(await c.request(`/v1/sessions/${session}/actions`, { headers: agent, body: { action: "t", costUsd: 0 } }), "action").ms,
  };

  const lines: string[] = ["", `A/B, concurrency ${CONCURRENCY}, ${ROUNDS} alternating slices of ${SLICE_MS / 1000} s each; load average ${loadavg()[0].toFixed(1)} on ${cpus().length} cores`];
  // AB_KINDS=one-line,40k,action: only those (a quick look at one path).
  const only = process.env.AB_KINDS?.split(",").map((k) => k.trim());
  const picked = Object.entries(kinds).filter(([kind]) => !only || only.includes(KIND_KEYS[kind]));
  for (const [kind, make] of picked) {
    const acc = sides.map(() => ({ done: 0, ms: 0, lat: [] as number[], cpu: {} as Record<string, number> }));
    for (const s of sides) await load({ concurrency: CONCURRENCY, count: 300, maxMs: 10_000, fn: make(s.client) });
    for (let round = 0; round < ROUNDS; round++) {
      for (const [i, s] of sides.entries()) {
        const groups = [{ pgid: s.pid }];
        const before = cpuOf(groups);
        const r = await load({ concurrency: CONCURRENCY, count: Number.MAX_SAFE_INTEGER, maxMs: SLICE_MS, fn: make(s.client) });
        const cpu = cpuPerRequest(before, cpuOf(groups), 1) ?? {};
        acc[i].done += r.done;
        acc[i].ms += r.elapsedMs;
        acc[i].lat.push(...r.latencies);
        for (const [k, v] of Object.entries(cpu)) if (k !== "benchmark process") acc[i].cpu[k] = (acc[i].cpu[k] ?? 0) + v;
      }
    }
    const per = acc.map((x) => ({ perSecond: (x.done / x.ms) * 1000, lat: summarize(x.lat), cpu: Object.fromEntries(Object.entries(x.cpu).map(([k, v]) => [k, v / x.done])) }));
    const total = (c: Record<string, number>) => Object.values(c).reduce((p, q) => p + q, 0);
    lines.push("", `${kind}:`);
    lines.push(
      table(
        ["side", "requests/s", "p50 ms", "p99 ms", "server CPU ms/call"],
        per.map((p, i) => [sides[i].name, Math.round(p.perSecond), ms(p.lat.p50), ms(p.lat.p99), total(p.cpu).toFixed(3)]),
      ),
    );
    lines.push(cpuLines(per.map((p, i) => [sides[i].name, p.cpu])) ?? "");
    lines.push(`B vs A: ${((per[1].perSecond / per[0].perSecond - 1) * 100).toFixed(1)}% requests/s, ${((total(per[1].cpu) - total(per[0].cpu)) * 1000).toFixed(0)} us server CPU per call.`);
  }
  console.log(lines.join("\n"));
});
