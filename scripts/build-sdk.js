#!/usr/bin/env node
// Builds the installable SDK (sdk/, package "governor") into sdk/dist: tsc emits the
// JavaScript and the type declarations, tsc-alias adds the ".js" that Node's ESM loader
// needs on relative imports. Built in a staging folder and swapped in whole, and skipped
// when sdk/dist was built from the same inputs (see build-output.js for why); `--force`
// builds anyway. A deleted source leaves nothing behind.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { inputsHash, stagingFor, swapInto } from "./build-output.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bin = (name) => join(root, "node_modules", ".bin", name);
const config = join(root, "sdk", "tsconfig.build.json");

// `prepare` runs this on every install, including `npm ci --omit=dev` where the compiler
// is absent: there the SDK is simply not built, which only `npm test` and packing need.
if (process.argv.includes("--if-possible") && !existsSync(bin("tsc"))) {
  console.log("build-sdk: TypeScript is not installed (dev dependencies omitted); sdk/dist not built");
  process.exit(0);
}

// `--out <dir>` builds elsewhere (the package test stages its own copy).
const outAt = process.argv.indexOf("--out");
const out = outAt > 0 ? resolve(process.argv[outAt + 1]) : join(root, "sdk", "dist");

// The SDK compiles from sdk/ and what it imports from lib/, machines/ and schema/ (rootDir is
// the repository): all of those folders count, with the compiler's settings and versions
// (the lockfile) and the build scripts. The stamp lives in the output, so it is swapped with it
// (and left out of the package by sdk/package.json's "files").
const hash = inputsHash(root, ["sdk", "lib", "machines", "schema", "tsconfig.json", "package-lock.json", relative(root, fileURLToPath(import.meta.url)), "scripts/build-output.js"]);
const stamp = join(out, ".inputs");
if (!process.argv.includes("--force") && existsSync(stamp) && readFileSync(stamp, "utf8").trim() === hash) process.exit(0);

const staging = stagingFor(out);
try {
  execFileSync(bin("tsc"), ["-p", config, "--outDir", staging], { stdio: "inherit", cwd: root });
  execFileSync(bin("tsc-alias"), ["-p", config, "--outDir", staging], { stdio: "inherit", cwd: root });
  writeFileSync(join(staging, ".inputs"), `${hash}\n`);
} catch {
  rmSync(staging, { recursive: true, force: true });
  console.error("build-sdk: the SDK did not build (see above)");
  process.exit(1);
}
swapInto(staging, out);
