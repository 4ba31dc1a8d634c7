#!/usr/bin/env node
// `npm start`: Governor on the real Workers runtime (partykit dev), state persisted under
// .governor/state, with the settings below taken from this shell's environment.
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const port = process.env.PORT ?? "1999";
const persist = process.env.GOVERNOR_STATE_DIR ?? join(root, ".governor", "state");
mkdirSync(persist, { recursive: true });

const PASSED = ["GOVERNOR_TOKENS", "GOVERNOR_DEFAULT_POLICY", "GOVERNOR_PUBLIC_URL", "GOVERNOR_UPSTREAM_TIMEOUT_MS", "GOVERNOR_STREAM_STALL_MS", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"];
const args = ["dev", "--port", port, "--persist", persist, "--disable-request-cf-fetch"];
const publicUrl = process.env.GOVERNOR_PUBLIC_URL ?? `http://127.0.0.1:${port}`;
for (const k of PASSED) {
  const v = k === "GOVERNOR_PUBLIC_URL" ? publicUrl : process.env[k];
  if (v) args.push("--var", `${k}=${v}`);
}

const child = spawn(join(root, "node_modules", ".bin", "partykit"), args, { cwd: root, stdio: ["inherit", "pipe", "inherit"] });
let announced = false;
child.stdout.on("data", (d) => {
  process.stdout.write(d);
  if (!announced && /Ready on/.test(String(d))) {
    announced = true;
    const tokens = process.env.GOVERNOR_TOKENS
      ? "tokens:  from GOVERNOR_TOKENS"
      : 'token:   dev  (operator of tenant "local"; set GOVERNOR_TOKENS to use your own)';
    const consoleUrl = process.env.GOVERNOR_TOKENS ? `${publicUrl}/` : `${publicUrl}/?token=dev&tenant=local`;
    console.log(`\nGovernor is running\n  url:     http://127.0.0.1:${port}\n  console: ${consoleUrl}\n  ${tokens}\n  state:   ${persist}\n`);
    // The first request after a start wakes the sessions with something due (open
    // reservations, pending approvals), whose alarms the local runtime does not fire on its own.
    fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.body?.cancel(), () => undefined);
  }
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => child.kill(sig));
child.on("exit", (code) => process.exit(code ?? 0));
