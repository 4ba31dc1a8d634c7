import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { quietDevtools } from "../../scripts/devtools.js";
import { stopGroup } from "./group";
import { devConfig } from "../../scripts/partykit-config.js";
import { withRequestLog } from "../../scripts/request-log.js";

// A real Governor: `partykit dev` (workerd) on a free port with its own --persist folder,
// stopped by its process group id. Used by the integration tests, benchmarks and demo.

export const ROOT = resolve(import.meta.dirname, "../..");

export const TOKENS = {
  operator: "tok-operator-acme-0001",
  agent: "tok-agent-acme-0001",
  auditor: "tok-auditor-acme-0001",
  foreign: "tok-operator-globex-01",
} as const;

export const TOKEN_MAP = {
  [TOKENS.operator]: { tenant: "acme", role: "operator", name: "alice" },
  [TOKENS.agent]: { tenant: "acme", role: "agent", name: "agent-1" },
  [TOKENS.auditor]: { tenant: "acme", role: "auditor", name: "audit" },
  [TOKENS.foreign]: { tenant: "globex", role: "operator", name: "mallory" },
};

export async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => ok(port));
    });
  });
}

export interface Governor {
  url: string;
  wsUrl: string;
  port: number;
  persist: string;
  pid: number;
  output: () => string;
  /** keepStorage: leave the --persist folder for a restart on the same storage. */
  stop(opts?: { keepStorage?: boolean }): Promise<void>;
}

export interface StartOptions {
  vars?: Record<string, string>;
  /** Reuse a storage folder (a restart); a fresh one is made otherwise. */
  persist?: string;
  port?: number;
  /** Leave GOVERNOR_TOKENS unset, as a new user's `npm start` does. */
  devTokens?: boolean;
  /**
   * Keep partykit dev's DevTools network events on (its default). They are turned off
   * otherwise, as `npm start` does: ~2 ms of CPU per proxied call that nobody looks at.
   */
  devtoolsNetwork?: boolean;
  /**
   * partykit dev's line per request (scripts/request-log.js). As `npm start` has it: off
   * unless GOVERNOR_REQUEST_LOG=on in the environment.
   */
  requestLog?: "on" | "off";
  /** A folder with another partykit.json to serve (the benchmarks' floor project); the repository by default. */
  project?: string;
}

/**
 * How long startGovernor waits for a server: on a loaded machine partykit dev takes 5-10 s
 * to bundle and start workerd. A test that starts servers in its body (a restart) budgets
 * this much per start on top of its own work, as vitest.config.ts's hookTimeout does for hooks.
 */
export const START_TIMEOUT_MS = 60_000;

export async function startGovernor(opts: StartOptions = {}): Promise<Governor> {
  // freePort() hands out a port that is free when asked, and workerd binds it seconds later;
  // in between, any other process on the machine may take it (a port from listen(0) is what
  // every other server asks for too). Then workerd cannot listen, and a health check on that
  // port would be answered by whatever took it. So the server counts as up only once our own
  // workerd says it listens, and a lost port is retried on a fresh one (a pinned port, as a
  // restart asks for, is not: that failure is reported).
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOn(opts.port ?? (await freePort()), opts);
    } catch (e) {
      if (!(e instanceof PortTaken) || opts.port !== undefined || attempt >= 5) throw e;
    }
  }
}

class PortTaken extends Error {}

async function startOn(port: number, opts: StartOptions): Promise<Governor> {
  const persist = opts.persist ?? mkdtempSync(join(tmpdir(), "governor-test-"));
  const vars: Record<string, string> = { ...(opts.devTokens ? {} : { GOVERNOR_TOKENS: JSON.stringify(TOKEN_MAP) }), ...opts.vars };
  // Tokens and keys go in a private config file, not on the command line (scripts/partykit-config.js).
  const config = devConfig(opts.project ?? ROOT, vars);
  const args = ["dev", "--port", String(port), "--persist", persist, "--disable-request-cf-fetch", "--no-hotkeys", "--config", config.path];
  const child: ChildProcess = spawn(join(ROOT, "node_modules/.bin/partykit"), args, {
    cwd: ROOT,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: withRequestLog({ ...process.env, NO_COLOR: "1", CI: "1" }, opts.requestLog),
  });
  let out = "";
  let up = false;
  const onOutput = (d: Buffer) => {
    out += d;
    // partykit dev rebuilds and restarts workerd when a file it watches changes (party/ and
    // what it imports, console/dist): every request in flight dies ("other side closed", then
    // ECONNREFUSED). Said out loud, so such a failure is not mistaken for a flaky test.
    if (up && /Build succeeded/.test(String(d))) process.stderr.write(`[test server :${port}] partykit dev restarted workerd mid-test: a file it watches changed (party/ sources, console/dist)\n`);
  };
  child.stdout!.on("data", onOutput);
  child.stderr!.on("data", onOutput);
  const url = `http://127.0.0.1:${port}`;
  // miniflare prints this once workerd has bound the port: from then on, the port is ours.
  const listening = new RegExp(`Ready on http://[^\\s]+:${port}\\b`);
  const deadline = Date.now() + START_TIMEOUT_MS;
  const giveUp = async (error: Error) => {
    await kill(child);
    config.remove();
    if (!opts.persist) rmSync(persist, { recursive: true, force: true });
    return error;
  };
  for (;;) {
    if (child.exitCode !== null) throw await giveUp(new Error(`partykit dev exited (${child.exitCode}):\n${out}`));
    if (/Address already in use/.test(out)) throw await giveUp(new PortTaken(`port ${port} was taken before partykit dev could listen on it:\n${out}`));
    // A runtime that failed to start stays down: partykit dev keeps running and waits for an edit.
    if (/Workers runtime failed to start|Error reloading local server/.test(out)) throw await giveUp(new Error(`partykit dev could not start workerd:\n${out}`));
    if (listening.test(out)) {
      try {
        const res = await fetch(`${url}/healthz`);
        await res.body?.cancel();
        if (res.status < 500) {
          up = true;
          break;
        }
      } catch {
        /* not up yet */
      }
    }
    if (Date.now() > deadline) throw await giveUp(new Error(`partykit dev did not start within ${START_TIMEOUT_MS / 1000}s:\n${out}`));
    await new Promise((r) => setTimeout(r, 100));
  }
  // Left on, they would skew a benchmark's figures by ~1 ms of CPU per call: said, not hidden.
  if (!opts.devtoolsNetwork && !(await quietDevtools(child.pid!))) process.stderr.write(`[test server :${port}] partykit dev's DevTools network events could not be turned off (its DevTools proxy did not answer)\n`);
  return {
    url,
    wsUrl: `ws://127.0.0.1:${port}`,
    port,
    persist,
    pid: child.pid!,
    output: () => out,
    async stop({ keepStorage = false } = {}) {
      await kill(child);
      config.remove();
      if (!opts.persist && !keepStorage) rmSync(persist, { recursive: true, force: true });
    },
  };
}

/** Stops partykit's whole group (its workerd may outlive it): test/support/group.ts. */
function kill(child: ChildProcess): Promise<void> {
  return stopGroup(child.pid);
}

/** fetch against the server with a token; JSON bodies are encoded. */
export function client(base: string, token: string) {
  return async (path: string, init: { method?: string; body?: unknown; headers?: Record<string, string>; raw?: string } = {}) => {
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, ...init.headers };
    let body: string | undefined = init.raw;
    if (init.body !== undefined) {
      body = JSON.stringify(init.body);
      headers["content-type"] ??= "application/json";
    }
    const res = await fetch(`${base}${path}`, { method: init.method ?? (body !== undefined ? "POST" : "GET"), headers, body });
    const text = await res.text();
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, text, json };
  };
}
