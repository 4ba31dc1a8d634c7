import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { freePort, ROOT, START_TIMEOUT_MS, TOKEN_MAP, TOKENS } from "../support/server";

// `npm start` (scripts/start.js) as a new user meets it: settings checked before anything
// starts, a taken port said plainly, and a quiet console from start to Ctrl-C.

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function start(env: Record<string, string>) {
  const state = mkdtempSync(join(tmpdir(), "governor-start-"));
  dirs.push(state);
  const child = spawn(process.execPath, [join(ROOT, "scripts/start.js")], {
    cwd: ROOT,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1", GOVERNOR_STATE_DIR: join(state, "state"), GOVERNOR_AUDIT_DIR: join(state, "audit"), ...env },
  });
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return { child, output: () => out, exited };
}

async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, fail) => (timer = setTimeout(() => fail(new Error(`${what} took over ${ms} ms`)), ms)));
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

function stopGroup(child: ChildProcess, sig: NodeJS.Signals = "SIGINT") {
  try {
    process.kill(-child.pid!, sig);
  } catch {
    /* gone */
  }
}

describe("npm start checks its settings first", () => {
  it.each([
    ["GOVERNOR_TOKENS", "{not json", /GOVERNOR_TOKENS is not valid JSON/],
    ["GOVERNOR_TOKENS", JSON.stringify({ "tok-secret-start-01": { tenant: "acme", role: "admin" } }), /GOVERNOR_TOKENS does not map tokens .*entry 1\.role/],
    ["GOVERNOR_DEFAULT_POLICY", "budget:\n  sesion_usd: 5\n", /GOVERNOR_DEFAULT_POLICY is not a valid policy: budget: unknown field "sesion_usd"/],
    ["GOVERNOR_DEFAULT_POLICY", "budget: [1,\n", /GOVERNOR_DEFAULT_POLICY is not valid YAML or JSON/],
    ["GOVERNOR_REQUEST_LOG", "verbose", /GOVERNOR_REQUEST_LOG must be "on" or "off", not "verbose"/],
  ])("%s = %j: one line naming it, exit 1, nothing started", async (name, value, message) => {
    const s = start({ PORT: String(await freePort()), [name]: value });
    const code = await within(s.exited, 30_000, "the refusal");
    expect(code).toBe(1);
    const lines = s.output().trim().split("\n").filter((l) => !/npm warn|ExperimentalWarning|--trace-warnings/.test(l));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(message);
    expect(s.output()).not.toContain("tok-secret-start-01");
    expect(s.output()).not.toMatch(/partykit|Ready on/i);
  });

  it("a port in use: a clear message and exit 1, not a hang", async () => {
    const port = await freePort();
    const taken: Server = createServer();
    await new Promise<void>((r) => taken.listen(port, r));
    try {
      const s = start({ PORT: String(port) });
      const code = await within(s.exited, 30_000, "the refusal");
      expect(code).toBe(1);
      expect(s.output()).toContain(`port ${port} is in use`);
    } finally {
      await new Promise((r) => taken.close(r));
    }
  });
});

async function running(s: ReturnType<typeof start>) {
  await within(
    (async () => {
      while (!/Governor is running/.test(s.output())) {
        if (s.child.exitCode !== null) throw new Error(`npm start exited:\n${s.output()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    })(),
    START_TIMEOUT_MS,
    "the start",
  );
}

const whoami = async (port: number) => {
  const r = await fetch(`http://127.0.0.1:${port}/v1/whoami`, { headers: { authorization: `Bearer ${TOKENS.operator}` } });
  await r.body?.cancel();
  return r.status;
};

describe("npm start's console", () => {
  it(
    "no hotkey box and no refused connections from start to Ctrl-C; tokens not on any command line",
    async () => {
      const port = await freePort();
      const s = start({ PORT: String(port), GOVERNOR_TOKENS: JSON.stringify(TOKEN_MAP), GOVERNOR_REQUEST_LOG: "" });
      try {
        await running(s);
        // Requests, and time for the audit service to connect.
        for (let i = 0; i < 3; i++) expect(await whoami(port)).toBe(200);
        // The first ask for the checkpoint key makes one: the worker says so on its console.
        const key = await fetch(`http://127.0.0.1:${port}/v1/checkpoints/key`, { headers: { authorization: `Bearer ${TOKENS.operator}` } });
        expect(key.status).toBe(200);
        await key.body?.cancel();
        const audit = await fetch(`http://127.0.0.1:${port}/v1/audit/events?limit=1`, { headers: { authorization: `Bearer ${TOKENS.operator}` } });
        await audit.body?.cancel();
        await new Promise((r) => setTimeout(r, 2000));
        // npm start's own processes (its group: partykit, workerd, the audit service).
        const cmdlines = readdirSync("/proc")
          .filter((d) => /^\d+$/.test(d))
          .flatMap((d) => {
            try {
              const stat = readFileSync(`/proc/${d}/stat`, "utf8");
              if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]) !== s.child.pid) return [];
              return [readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0").join(" ")];
            } catch {
              return [];
            }
          })
          .join("\n");
        expect(cmdlines).toContain("partykit");
        expect(cmdlines).toContain("workerd");
        for (const t of Object.values(TOKENS)) expect(cmdlines).not.toContain(t);
      } finally {
        stopGroup(s.child);
      }
      await within(s.exited, 20_000, "the stop");
      const out = s.output();
      expect(out).toContain("Governor is running");
      expect(out).not.toMatch(/open a browser/);
      expect(out).not.toMatch(/ECONNREFUSED|fetch failed|socket hang up/);
      // No line per request by default (GOVERNOR_REQUEST_LOG), and it says so; partykit's
      // own lines and the workers' console output are still there.
      expect(out).toMatch(/Ready on http/);
      expect(out).toMatch(/log: +every call in its session's event log; no line per request \(GOVERNOR_REQUEST_LOG=on prints one\)/);
      expect(out).toMatch(/made a checkpoint signing key, kept with the state/);
      expect(out).not.toMatch(/(GET|POST) \/(v1|healthz)\S* \d{3}/);
    },
    START_TIMEOUT_MS + 60_000,
  );

  it(
    "GOVERNOR_REQUEST_LOG=on: a line for every request",
    async () => {
      const port = await freePort();
      const s = start({ PORT: String(port), GOVERNOR_TOKENS: JSON.stringify(TOKEN_MAP), GOVERNOR_REQUEST_LOG: "on", GOVERNOR_AUDIT: "off" });
      try {
        await running(s);
        expect(s.output()).toMatch(/log: +a line per request/);
        for (let i = 0; i < 3; i++) expect(await whoami(port)).toBe(200);
        // The line is sent from workerd to partykit's process after the answer.
        await within(
          (async () => {
            while ((s.output().match(/GET \/v1\/whoami 200 OK/g) ?? []).length < 3) await new Promise((r) => setTimeout(r, 50));
          })(),
          30_000,
          "three request lines",
        );
      } catch (e) {
        throw new Error(`${(e as Error).message}; npm start printed:\n${s.output().slice(-3000)}`);
      } finally {
        stopGroup(s.child);
      }
      await within(s.exited, 20_000, "the stop");
    },
    START_TIMEOUT_MS + 60_000,
  );
});
