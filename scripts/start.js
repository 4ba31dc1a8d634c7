#!/usr/bin/env node
// `npm start`: Governor on the real Workers runtime (partykit dev), state persisted under
// .governor/state, with the settings below taken from this shell's environment; beside it
// the audit service and its sync (`npm run audit -- serve`), storing every session's log
// under .governor/audit (or in Postgres with DATABASE_URL).
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { quietDevtools } from "./devtools.js";
import { devConfig } from "./partykit-config.js";
import { requestLog, requestLogSwitchInstalled, withRequestLog } from "./request-log.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const port = process.env.PORT ?? "1999";
const persist = process.env.GOVERNOR_STATE_DIR ?? join(root, ".governor", "state");

/** One line naming what is wrong, and out: no server half-started on a bad setting. */
function refuse(message) {
  console.error(`governor: ${message}`);
  process.exit(1);
}

// The settings the server would refuse on every request or every session open are checked
// now, with the server's own schemas (lib/start-config.ts).
{
  const { tsImport } = await import("tsx/esm/api");
  const { configProblems } = await tsImport("../lib/start-config.ts", import.meta.url);
  const problems = configProblems(process.env);
  if (problems.length) refuse(problems.join("\ngovernor: "));
}
const requestLines = requestLog(process.env);
if (!requestLines) refuse(`GOVERNOR_REQUEST_LOG must be "on" or "off", not "${String(process.env.GOVERNOR_REQUEST_LOG).slice(0, 40)}"`);
if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535) refuse(`PORT must be a port number (1-65535), not "${port}"`);
if (!(await portFree(Number(port)))) refuse(`port ${port} is in use (another Governor, or another server): stop it or start with PORT=<another port>`);
mkdirSync(persist, { recursive: true });

/** Whether nothing listens on `p` yet; workerd would otherwise fail to bind and partykit dev wait for an edit. */
function portFree(p) {
  return new Promise((ok) => {
    const s = createServer();
    s.once("error", () => ok(false));
    s.listen(p, () => s.close(() => ok(true)));
  });
}

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => ok(p));
    });
  });
}

// The audit service runs here unless GOVERNOR_AUDIT_URL points at one elsewhere, or
// GOVERNOR_AUDIT=off. The secret is made per start unless one is given.
const auditHere = process.env.GOVERNOR_AUDIT !== "off" && !process.env.GOVERNOR_AUDIT_URL;
const auditPort = process.env.GOVERNOR_AUDIT_PORT ?? String(auditHere ? await freePort() : 0);
const auditSecret = process.env.GOVERNOR_AUDIT_SECRET ?? randomBytes(32).toString("hex");
const auditUrl = process.env.GOVERNOR_AUDIT_URL ?? (auditHere ? `http://127.0.0.1:${auditPort}` : undefined);
const auditDir = process.env.GOVERNOR_AUDIT_DIR ?? join(root, ".governor", "audit");

const PASSED = ["GOVERNOR_TOKENS", "GOVERNOR_DEFAULT_POLICY", "GOVERNOR_PUBLIC_URL", "GOVERNOR_UPSTREAM_TIMEOUT_MS", "GOVERNOR_STREAM_STALL_MS", "GOVERNOR_SETTLE_CARRY_MS", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "GOVERNOR_SIGNING_KEY",
  "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_BSP_SCHEDULE_DELAY"];
const publicUrl = process.env.GOVERNOR_PUBLIC_URL ?? `http://127.0.0.1:${port}`;
const vars = {};
for (const k of PASSED) {
  const v = k === "GOVERNOR_PUBLIC_URL" ? publicUrl : process.env[k];
  if (v) vars[k] = v;
}
if (auditUrl) Object.assign(vars, { GOVERNOR_AUDIT_URL: auditUrl, GOVERNOR_AUDIT_SECRET: auditSecret });
// Tokens, keys and secrets reach partykit in a private config file, never as arguments
// that `ps` shows to every local user (scripts/partykit-config.js). --no-hotkeys: no
// "[b] open a browser" box printed among the request lines.
const config = devConfig(root, vars);
process.on("exit", () => config.remove());
const args = ["dev", "--port", port, "--persist", persist, "--disable-request-cf-fetch", "--no-hotkeys", "--config", config.path];

const children = [];
let stopping = false;
let auditChild;
/**
 * The audit service goes first: stopped after Governor, it would log every refused
 * reconnect on the way out. Governor follows once it is gone (or after 3 s).
 */
async function stopAll(sig = "SIGTERM") {
  if (stopping) return;
  stopping = true;
  if (auditChild && auditChild.exitCode === null) {
    const gone = new Promise((r) => auditChild.once("exit", r));
    auditChild.kill(sig);
    await Promise.race([gone, new Promise((r) => setTimeout(r, 3000))]);
  }
  for (const c of children) if (c.exitCode === null) c.kill(sig);
}

// One log line per request only with GOVERNOR_REQUEST_LOG=on (scripts/request-log.js): the
// session logs are the record of every call, and the line costs ~0.5 ms of CPU per request.
const child = spawn(join(root, "node_modules", ".bin", "partykit"), args, { cwd: root, stdio: ["inherit", "pipe", "inherit"], env: withRequestLog(process.env, requestLines) });
children.push(child);
let announced = false;
let ready = false;
let seen = "";
child.stdout.on("data", (d) => {
  process.stdout.write(d);
  // A port taken between our check and workerd's bind: partykit dev would wait for an edit.
  seen = (seen + String(d)).slice(-4096);
  if (!announced && /Address already in use/.test(seen)) {
    console.error(`governor: port ${port} is in use: stop what listens there or start with PORT=<another port>`);
    process.exitCode = 1;
    void stopAll();
  }
  if (/Ready on|Updated and ready on/.test(String(d))) ready = true;
  if (/Build succeeded|Reloading/.test(String(d))) ready = false;
  // partykit dev's DevTools network events cost ~2 ms of CPU per proxied call (scripts/devtools.js):
  // off once workerd is up, and again after each reload (partykit turns them on with every
  // new workerd). GOVERNOR_DEVTOOLS_NETWORK=on keeps them.
  if (/Ready on|Updated and ready on/.test(String(d)) && process.env.GOVERNOR_DEVTOOLS_NETWORK !== "on") {
    const first = !announced;
    setTimeout(() => void quietDevtools(child.pid).catch(() => false), first ? 0 : 1_000);
  }
  if (!announced && /Ready on/.test(String(d))) {
    announced = true;
    const tokens = process.env.GOVERNOR_TOKENS
      ? "tokens:  from GOVERNOR_TOKENS"
      : 'token:   dev  (operator of tenant "local"; set GOVERNOR_TOKENS to use your own)';
    const consoleUrl = process.env.GOVERNOR_TOKENS ? `${publicUrl}/` : `${publicUrl}/?token=dev&tenant=local`;
    const audit = auditHere ? `http://127.0.0.1:${port}/v1/audit/events  (store: ${process.env.DATABASE_URL ? "DATABASE_URL" : auditDir})` : auditUrl ? `via ${auditUrl}` : "off";
    if (auditHere) startAudit();
    const requests =
      requestLines === "on"
        ? "a line per request (GOVERNOR_REQUEST_LOG=on)"
        : requestLogSwitchInstalled(root)
          ? "every call in its session's event log; no line per request (GOVERNOR_REQUEST_LOG=on prints one)"
          : "a line per request: GOVERNOR_REQUEST_LOG=off needs the patch of partykit's miniflare, which was not applied (installed without scripts?): run `node scripts/patch-deps.js`";
    console.log(`\nGovernor is running\n  url:     http://127.0.0.1:${port}\n  console: ${consoleUrl}\n  ${tokens}\n  state:   ${persist}\n  audit:   ${audit}\n  log:     ${requests}\n`);
    // The first request after a start wakes the sessions with something due (open
    // reservations, pending approvals), whose alarms the local runtime does not fire on its own.
    fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.body?.cancel(), () => undefined);
    // The key that signs checkpoints: made on the first start and kept with the state when
    // GOVERNOR_SIGNING_KEY is not set. Its public half is what verifies exported logs.
    const token = process.env.GOVERNOR_TOKEN ?? (process.env.GOVERNOR_TOKENS ? undefined : "dev");
    if (token) {
      fetch(`http://127.0.0.1:${port}/v1/checkpoints/key`, { headers: { authorization: `Bearer ${token}` } })
        .then((r) => (r.ok ? r.json() : undefined))
        .then((k) => k && console.log(`  signing: checkpoint key ${k.kid} (${k.source === "env" ? "GOVERNOR_SIGNING_KEY" : "made locally, kept in the state"})\n  public:  ${k.x}\n`))
        .catch(() => undefined);
    }
  }
});

// Connection failures while Governor starts, reloads or stops are expected; said only once
// they have lasted a while.
const QUIET_MS = 15_000;
const REFUSED = /ECONNREFUSED|ECONNRESET|fetch failed|socket hang up|other side closed|Unexpected server response: 5\d\d/;

/** Started once Governor is ready, so its first connections are not refused. */
function startAudit() {
  const audit = spawn(
    process.execPath,
    ["--import", "tsx", join(root, "audit", "cli.ts"), "--url", `http://127.0.0.1:${port}`, "serve", "--port", auditPort, "--dir", auditDir],
    { cwd: root, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, GOVERNOR_AUDIT_SECRET: auditSecret } },
  );
  children.push(audit);
  auditChild = audit;
  let refusedSince;
  let said = false;
  const prefix = (stream) => (d) => {
    for (const line of String(d).split("\n")) {
      if (!line.trim()) continue;
      if (REFUSED.test(line)) {
        if (stopping) continue;
        refusedSince ??= Date.now();
        if (!ready || Date.now() - refusedSince < QUIET_MS) continue;
        if (!said) stream.write(`[audit] Governor has refused the audit service's connections for ${Math.round((Date.now() - refusedSince) / 1000)} s; still retrying\n`);
        said = true;
      } else if (!/retrying/.test(line)) {
        refusedSince = undefined;
        said = false;
      }
      stream.write(`[audit] ${line}\n`);
    }
  };
  audit.stdout.on("data", prefix(process.stdout));
  audit.stderr.on("data", prefix(process.stderr));
  audit.on("exit", (code) => {
    if (!stopping) console.error(`[audit] the audit service stopped (${code}); Governor keeps running, /v1/audit answers 503 until it is back`);
  });
}

for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => void stopAll(sig));
child.on("exit", (code) => {
  void stopAll();
  process.exitCode ??= code ?? 0;
});
