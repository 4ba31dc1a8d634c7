#!/usr/bin/env node
// Builds the web console (console/src, Vite) into console/dist, which partykit serves. Built
// in a staging folder and swapped in whole, and skipped when console/dist was built from the
// same inputs (see build-output.js for why: a rebuild restarts every running `partykit dev`
// of the checkout, tests' servers included); `--force` builds anyway.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { inputsHash, stagingFor, swapInto } from "./build-output.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "console", "dist");

// The console imports the shared schemas and machines (and what they import from lib/).
// The stamp sits beside console/dist, not in it: everything in it is served.
const hash = inputsHash(root, ["console", "schema", "machines", "lib", "package-lock.json", relative(root, fileURLToPath(import.meta.url)), "scripts/build-output.js"]);
const stamp = join(root, "console", ".dist.inputs");
const upToDate = existsSync(join(out, "index.html")) && existsSync(stamp) && readFileSync(stamp, "utf8").trim() === hash;
if (upToDate && !process.argv.includes("--force")) process.exit(0);

const staging = stagingFor(out);
try {
  execFileSync(join(root, "node_modules", ".bin", "vite"), ["build", "--config", join(root, "console", "vite.config.ts"), "--outDir", staging, "--emptyOutDir"], { stdio: "inherit", cwd: root });
} catch {
  rmSync(staging, { recursive: true, force: true });
  console.error("build-console: the console did not build (see above)");
  process.exit(1);
}
swapInto(staging, out);
writeFileSync(stamp, `${hash}\n`);
