#!/usr/bin/env node
// `governor` inside the server's checkout (`npx governor …`): `governor audit sync|serve`
// run the audit store's writers (audit/cli.ts, with tsx: they need PGlite, drizzle and
// the Postgres driver, which the installable SDK does not carry); every other command is
// the SDK's own CLI (sdk/, built by `npm install` / `npm run build:sdk`), so the same
// `governor` works in both places.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);

// Options of the SDK's program that take a value: what follows them is not a command.
const WITH_VALUE = new Set(["--url", "--token", "--tenant"]);
function commands(list) {
  const out = [];
  for (let i = 0; i < list.length; i++) {
    const a = list[i];
    if (WITH_VALUE.has(a)) i++;
    else if (!a.startsWith("-")) out.push({ name: a, at: i });
  }
  return out;
}

const [first, second] = commands(args);
if (first?.name === "audit" && (second?.name === "sync" || second?.name === "serve")) {
  // audit/cli.ts is the `audit` program itself: everything but the word "audit" goes along.
  const rest = [...args.slice(0, first.at), ...args.slice(first.at + 1)].filter((a) => a !== "--json");
  // tsx as this checkout has it, wherever the command is run from.
  const tsx = import.meta.resolve("tsx");
  const child = spawn(process.execPath, ["--import", tsx, join(root, "audit", "cli.ts"), ...rest], { cwd: process.cwd(), stdio: "inherit" });
  for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => child.kill(sig));
  child.on("exit", (code, signal) => {
    process.exitCode = code ?? (signal ? 1 : 0);
  });
} else {
  const cli = join(root, "sdk", "dist", "sdk", "cli.js");
  if (!existsSync(cli)) {
    process.stderr.write("error: the SDK's CLI is not built: run `npm run build:sdk` (npm install does it) first\n");
    process.exitCode = 1;
  } else {
    const { main } = await import(pathToFileURL(cli).href);
    process.exitCode = await main(process.argv);
  }
}
