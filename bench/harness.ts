import { execFileSync, spawn } from "node:child_process";
import http from "node:http";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { summarize, type Summary } from "./stats";
import { groupMembers, stopGroup } from "../test/support/group";

// Shared plumbing for the benchmarks: a keep-alive HTTP client, bounded load loops,
// and cleanup that runs however the process ends.

export const BENCH_DIR = import.meta.dirname;

export interface Reply {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
  /** From sending the request to the last body byte. */
  ms: number;
  /** From sending the request to the first body chunk (not the headers). */
  firstChunkMs: number;
}

export interface CallInit {
  method?: string;
  headers?: Record<string, string>;
  body?: unknown;
}

/**
 * node:http rather than global fetch: undici is not a direct dependency here, and
 * node:http's per-request overhead is lower and more stable, so the client adds less
 * noise to sub-millisecond figures. Sockets are kept alive so every sample measures a
 * request on a warm connection, not a TCP handshake.
 */
export function httpClient(base: string, maxSockets: number) {
  // Idle sockets are dropped after 4 s: servers with Node's default 5 s keep-alive (the peer
  // gateway) close them, and reusing one as it closes fails the request with ECONNRESET.
  const newAgent = () => new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets, keepAliveMsecs: 30_000, timeout: 4_000 });
  let agent = newAgent();
  const origin = new URL(base);
  function request(path: string, init: CallInit = {}): Promise<Reply> {
    const payload = init.body === undefined ? undefined : typeof init.body === "string" ? init.body : JSON.stringify(init.body);
    const headers: Record<string, string> = { ...init.headers };
    if (payload !== undefined) {
      headers["content-type"] ??= "application/json";
      headers["content-length"] = String(Buffer.byteLength(payload));
    }
    return new Promise((ok, fail) => {
      const t0 = performance.now();
      let first = NaN;
      const req = http.request(
        { host: origin.hostname, port: origin.port, path, method: init.method ?? (payload !== undefined ? "POST" : "GET"), headers, agent },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => {
            if (Number.isNaN(first)) first = performance.now() - t0;
            chunks.push(c);
          });
          res.on("error", fail);
          res.on("end", () => {
            const ms = performance.now() - t0;
            ok({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8"), headers: res.headers, ms, firstChunkMs: Number.isNaN(first) ? ms : first });
          });
        },
      );
      // Nothing on loopback should take this long; a stuck request must not stall the run.
      req.setTimeout(30_000, () => req.destroy(new Error(`${init.method ?? "GET"} ${path} timed out after 30 s`)));
      req.on("error", fail);
      req.end(payload);
    });
  }
  return {
    request,
    close: () => agent.destroy(),
    /** Drops every pooled socket: after a restart they point at a server that is going away. */
    reset() {
      agent.destroy();
      agent = newAgent();
    },
  };
}

export type Client = ReturnType<typeof httpClient>;

/** Throws unless the reply is 2xx, quoting the body so a failure says what went wrong. */
export function expectOk(r: Reply, what: string): Reply {
  if (r.status < 200 || r.status > 299) throw new Error(`${what}: HTTP ${r.status}: ${r.body.slice(0, 500)}`);
  return r;
}

/** One call at a time; returns each call's latency in ms as measured by `fn`. */
export async function sequential(count: number, fn: (i: number) => Promise<number>, maxMs = 60_000): Promise<number[]> {
  const out: number[] = [];
  const stop = performance.now() + maxMs;
  for (let i = 0; i < count && performance.now() < stop; i++) out.push(await fn(i));
  return out;
}

export interface LoadResult {
  done: number;
  elapsedMs: number;
  perSecond: number;
  latencies: number[];
}

/**
 * `concurrency` workers issue calls until `count` have been started or `maxMs` has
 * passed, whichever comes first. A failed call stops the run: a benchmark that counts
 * errors as throughput would report nonsense.
 */
export async function load(opts: {
  concurrency: number;
  count: number;
  maxMs: number;
  fn: (i: number) => Promise<number>;
  progress?: (done: number, elapsedMs: number) => void;
  progressEveryMs?: number;
}): Promise<LoadResult> {
  const latencies: number[] = [];
  let next = 0;
  let done = 0;
  const t0 = performance.now();
  const stopAt = t0 + opts.maxMs;
  let lastReport = t0;
  const every = opts.progressEveryMs ?? 2_000;
  let failure: { error: unknown } | undefined;
  const worker = async () => {
    while (!failure && next < opts.count && performance.now() < stopAt) {
      const i = next++;
      try {
        latencies.push(await opts.fn(i));
      } catch (error) {
        failure ??= { error };
        return;
      }
      done++;
      const now = performance.now();
      if (opts.progress && now - lastReport >= every) {
        lastReport = now;
        opts.progress(done, now - t0);
      }
    }
  };
  // Every worker is waited for, so a failed run leaves no stray requests behind to
  // disturb whatever is measured next.
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  if (failure) throw failure.error;
  const elapsedMs = performance.now() - t0;
  return { done, elapsedMs, perSecond: (done / elapsedMs) * 1000, latencies };
}

// ---------------------------------------------------------------- CPU

// Throughput on a small machine is bounded by CPU, so it helps to see which process
// spends it: workerd (gateway and actors), partykit dev's Node process (miniflare's
// loopback, which also receives a log line for every request when GOVERNOR_REQUEST_LOG=on),
// or the benchmark itself.

const CLK_TCK = 100; // Linux's USER_HZ on every mainstream architecture

export type CpuSnapshot = Record<string, number>;

/** CPU seconds used so far by each process name in a process group, and by this process. */
export function cpuSnapshot(pgid: number, nameOf: (comm: string) => string = (comm) => (comm === "node" ? "partykit dev (node)" : comm)): CpuSnapshot | null {
  if (process.platform !== "linux") return null;
  const out: CpuSnapshot = {};
  for (const m of groupMembers(pgid)) {
    const name = nameOf(m.comm);
    out[name] = (out[name] ?? 0) + m.cpuTicks / CLK_TCK;
  }
  const own = process.cpuUsage();
  out["benchmark process"] = (own.user + own.system) / 1e6;
  return out;
}

/** CPU milliseconds per request for each process between two snapshots. */
export function cpuPerRequest(before: CpuSnapshot | null, after: CpuSnapshot | null, requests: number): Record<string, number> | null {
  if (!before || !after || requests <= 0) return null;
  const out: Record<string, number> = {};
  for (const [name, t] of Object.entries(after)) {
    const d = t - (before[name] ?? 0);
    // A restarted process starts counting from zero again; its figure would be wrong.
    if (d >= 0) out[name] = (d * 1000) / requests;
  }
  return out;
}

// ---------------------------------------------------------------- reloads

// `partykit dev` always watches its sources and restarts workerd when one changes, so an
// edit made while a benchmark runs drops its connections and resets every actor's
// memory. Such a phase is measured again rather than reported: its figures would mix a
// cold start into a warm measurement.

export interface Watched {
  url: string;
  output: () => string;
}

const builds = (gov: Watched) => (gov.output().match(/Build succeeded/g) ?? []).length;

export const retried: { phase: string; why: string }[] = [];

/** The number of restarts of the server since it started. */
export const reloadsOf = (gov: Watched) => Math.max(0, builds(gov) - 1);

async function settle(gov: Watched) {
  const stop = Date.now() + 60_000;
  await sleep(1_000);
  while (Date.now() < stop) {
    try {
      const res = await fetch(`${gov.url}/healthz`);
      await res.body?.cancel();
      if (res.ok) return;
    } catch {
      /* still restarting */
    }
    await sleep(250);
  }
  throw new Error("the server did not come back within 60 s after reloading");
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs one measured phase; if the server reloaded while it ran (whether or not that
 * made it fail), waits for the server and runs the phase again, up to `attempts` times.
 * A failure without a reload is a real failure and is thrown as it is.
 */
export async function phase<T>(gov: Watched, name: string, fn: () => Promise<T>, opts: { attempts?: number; afterReload?: () => void } = {}): Promise<T> {
  const attempts = opts.attempts ?? 3;
  for (let attempt = 1; ; attempt++) {
    const before = builds(gov);
    let result: T | undefined;
    let error: unknown;
    try {
      result = await fn();
    } catch (e) {
      error = e;
      // The reload's log line can trail the reset connection by a moment.
      await sleep(500);
    }
    const reloaded = builds(gov) !== before;
    // A pooled socket to the previous workerd can be closed a while after the reload
    // was logged, so a dropped connection is also taken as the tail of a reload.
    const dropped = error !== undefined && isConnectionError(error);
    if (!reloaded && !dropped) {
      if (error !== undefined) throw error;
      return result as T;
    }
    const why = reloaded
      ? error === undefined
        ? "the server reloaded (a source file changed)"
        : `the server reloaded and the phase failed: ${(error as Error).message}`
      : `a connection was dropped: ${(error as Error).message}`;
    retried.push({ phase: name, why });
    if (attempt >= attempts) throw new Error(`${name}: gave up after ${attempts} attempts: ${why}`);
    log(`  ${name}: ${why}; measuring again`);
    opts.afterReload?.();
    await settle(gov);
  }
}

function isConnectionError(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === "ECONNRESET" || code === "ECONNREFUSED" || code === "EPIPE" || /socket hang up/.test((e as Error).message ?? "");
}

// ---------------------------------------------------------------- lifecycle

const cleanups: (() => Promise<unknown> | unknown)[] = [];
let cleaning: Promise<void> | undefined;

export function onCleanup(fn: () => Promise<unknown> | unknown) {
  cleanups.push(fn);
}

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (e) {
        console.error("cleanup failed:", e);
      }
    }
  })();
  return cleaning;
}

/**
 * Runs a benchmark so that the servers it started are stopped on success, on error,
 * on Ctrl-C, and when the whole run overstays `deadlineMs` (a hung server must not keep
 * a CI job or a terminal waiting forever).
 */
export function runBenchmark(name: string, deadlineMs: number, main: () => Promise<void>) {
  const bail = (why: string, code: number) => {
    console.error(`\n${name}: ${why}; stopping servers`);
    void cleanup().finally(() => process.exit(code));
  };
  process.once("SIGINT", () => bail("interrupted", 130));
  process.once("SIGTERM", () => bail("terminated", 143));
  const watchdog = setTimeout(() => bail(`did not finish within ${Math.round(deadlineMs / 1000)} s`, 1), deadlineMs);
  watchdog.unref();
  main()
    .then(
      () => cleanup(),
      async (e) => {
        console.error(`\n${name} FAILED:`, e instanceof Error ? e.stack ?? e.message : e);
        process.exitCode = 1;
        await cleanup();
      },
    )
    .finally(() => {
      clearTimeout(watchdog);
      // Lingering keep-alive sockets or child pipes must not hold the process open.
      setTimeout(() => process.exit(), 200).unref();
    });
}

export function writeResults(file: string, data: unknown) {
  const path = resolve(BENCH_DIR, "results", file);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(data, null, 2) + "\n");
  return path;
}

export const log = (msg: string) => process.stderr.write(msg + "\n");

/** Which code was measured: figures from a dirty tree cannot be tied to a commit alone. */
export function gitState(): { commit: string; dirtyFiles: number } | null {
  try {
    const git = (...args: string[]) => execFileSync("git", args, { cwd: BENCH_DIR, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    return { commit: git("rev-parse", "--short", "HEAD").trim(), dirtyFiles: git("status", "--porcelain").split("\n").filter(Boolean).length };
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- targets

/** One way of making the same call: straight to the stand-in, through the peer, through Governor. */
export interface Target {
  name: string;
  client: Client;
  path: string;
  headers: Record<string, string>;
  /** Governor's answers carry its request id; the others do not. */
  governed: boolean;
}

/** A chat completion, and from Governor one that carries its headers: an ungoverned answer would make the figures meaningless. */
export function checkChat(t: Target) {
  return (r: Reply) => {
    if (!r.body.includes('"chat.completion"')) throw new Error(`${t.name}: not a chat completion: ${r.body.slice(0, 300)}`);
    if (t.governed && !r.headers["x-governor-request-id"]) throw new Error(`${t.name}: answer has no X-Governor-Request-ID header`);
  };
}

/** A whole event stream, ended by [DONE]. */
export function checkStream(t: Target) {
  return (r: Reply) => {
    if (!String(r.headers["content-type"]).includes("text/event-stream")) throw new Error(`${t.name}: not an event stream (${r.headers["content-type"]}): ${r.body.slice(0, 300)}`);
    if (!r.body.includes("data: [DONE]")) throw new Error(`${t.name}: stream ended without [DONE]: ${r.body.slice(-300)}`);
  };
}

export function call(t: Target, body: unknown, check: (r: Reply) => void) {
  return async () => {
    const r = expectOk(await t.client.request(t.path, { headers: t.headers, body }), `${t.name} POST ${t.path}`);
    check(r);
    return r;
  };
}

/**
 * Concurrency 1, alternating between the targets in rounds, so that drift on a busy
 * machine lands on every side instead of biasing one. `pick` chooses the figure (whole
 * answer, or first chunk). Each round stops early past `maxRoundMs`.
 */
export async function alternate(
  targets: Target[],
  body: unknown,
  check: (t: Target) => (r: Reply) => void,
  opts: { rounds: number; perRound: number; warmup: number; pick: (r: Reply) => number; maxRoundMs?: number },
): Promise<Record<string, Summary>> {
  const samples = new Map<string, number[]>(targets.map((t) => [t.name, []]));
  for (const t of targets) {
    const fn = call(t, body, check(t));
    await sequential(opts.warmup, async () => opts.pick(await fn()), opts.maxRoundMs);
  }
  for (let round = 0; round < opts.rounds; round++) {
    for (const t of targets) {
      const fn = call(t, body, check(t));
      samples.get(t.name)!.push(...(await sequential(opts.perRound, async () => opts.pick(await fn()), opts.maxRoundMs)));
    }
  }
  return Object.fromEntries(targets.map((t) => [t.name, summarize(samples.get(t.name)!)]));
}

export interface Throughput {
  requests: number;
  seconds: number;
  perSecond: number;
  latency: Summary;
  /** CPU ms per request by process name, summed over the rounds; null off Linux. */
  cpuMsPerRequest: Record<string, number> | null;
}

/**
 * Fixed concurrency, alternating between the targets in `rounds` slices of `sliceMs`,
 * with CPU per request taken over the processes in `groups` (process group ids).
 */
export async function throughputRounds(
  targets: Target[],
  body: unknown,
  check: (t: Target) => (r: Reply) => void,
  opts: { concurrency: number; rounds: number; sliceMs: number; warmup: number; groups: Group[] },
): Promise<Record<string, Throughput>> {
  const acc = new Map(targets.map((t) => [t.name, { done: 0, ms: 0, latencies: [] as number[], cpu: {} as Record<string, number>, cpuSeen: false }]));
  for (const t of targets) {
    const fn = call(t, body, check(t));
    await load({ concurrency: opts.concurrency, count: opts.warmup, maxMs: opts.sliceMs, fn: async () => (await fn()).ms });
  }
  for (let round = 0; round < opts.rounds; round++) {
    for (const t of targets) {
      const fn = call(t, body, check(t));
      const before = cpuOf(opts.groups);
      const r = await load({ concurrency: opts.concurrency, count: Number.MAX_SAFE_INTEGER, maxMs: opts.sliceMs, fn: async () => (await fn()).ms });
      const cpu = cpuPerRequest(before, cpuOf(opts.groups), 1);
      const a = acc.get(t.name)!;
      a.done += r.done;
      a.ms += r.elapsedMs;
      a.latencies.push(...r.latencies);
      if (cpu) {
        a.cpuSeen = true;
        for (const [k, v] of Object.entries(cpu)) a.cpu[k] = (a.cpu[k] ?? 0) + v;
      }
    }
  }
  return Object.fromEntries(
    [...acc].map(([name, a]) => [
      name,
      {
        requests: a.done,
        seconds: a.ms / 1000,
        perSecond: (a.done / a.ms) * 1000,
        latency: summarize(a.latencies),
        cpuMsPerRequest: a.cpuSeen ? Object.fromEntries(Object.entries(a.cpu).map(([k, v]) => [k, v / Math.max(1, a.done)])) : null,
      },
    ]),
  );
}

/** A server's process group, and what to call its processes in CPU tables. */
export interface Group {
  pgid: number;
  nameOf?: (comm: string) => string;
}

/** CPU seconds by process name over several process groups (each server is its own group). */
export function cpuOf(groups: Group[]): CpuSnapshot | null {
  let out: CpuSnapshot | null = null;
  for (const g of groups) {
    const s = cpuSnapshot(g.pgid, g.nameOf);
    if (!s) return null;
    out ??= {};
    for (const [k, v] of Object.entries(s)) out[k] = k === "benchmark process" ? v : (out[k] ?? 0) + v;
  }
  return out;
}

// ---------------------------------------------------------------- child servers

export interface Child {
  pid: number;
  output: () => string;
  stop: () => Promise<void>;
}

/**
 * Starts a server in its own process group, so that stopping it (by that group's id)
 * also stops whatever it spawned, and waits until `ready` answers true.
 */
export async function startChild(cmd: string, args: string[], opts: { cwd: string; ready: () => Promise<boolean>; timeoutMs?: number; env?: Record<string, string> }): Promise<Child> {
  const child = spawn(cmd, args, { cwd: opts.cwd, detached: true, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1", ...opts.env } });
  let out = "";
  child.stdout!.on("data", (d) => (out = (out + d).slice(-20_000)));
  child.stderr!.on("data", (d) => (out = (out + d).slice(-20_000)));
  // The whole group, whether or not its leader has exited (a child may outlive it).
  const stop = () => stopGroup(child.pid);
  // Registered before it is ready: an interrupt during start-up must not leave it running.
  onCleanup(stop);
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${cmd} exited (${child.exitCode}):\n${out}`);
    if (await opts.ready().catch(() => false)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${cmd} did not become ready within ${Math.round((opts.timeoutMs ?? 30_000) / 1000)} s:\n${out}`);
    }
    await sleep(200);
  }
  return { pid: child.pid!, output: () => out, stop };
}
