#!/usr/bin/env node
// Builds the installable SDK (sdk/, package "governor") into sdk/dist: tsc emits the
// JavaScript and the type declarations, tsc-alias adds the ".js" that Node's ESM loader
// needs on relative imports. dist is cleared first so a deleted source leaves nothing behind.
import { execFileSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bin = (name) => join(root, "node_modules", ".bin", name);
const config = join(root, "sdk", "tsconfig.build.json");

// `prepare` runs this on every install, including `npm ci --omit=dev` where the compiler
// is absent: there the SDK is simply not built, which only `npm test` and packing need.
if (process.argv.includes("--if-possible") && !existsSync(bin("tsc"))) {
  console.log("build-sdk: TypeScript is not installed (dev dependencies omitted); sdk/dist not built");
  process.exit(0);
}

// `--out <dir>` builds elsewhere (the package test stages its own copy, so a build there
// never pulls sdk/dist from under a test that is using it).
const outAt = process.argv.indexOf("--out");
const out = outAt > 0 ? resolve(process.argv[outAt + 1]) : join(root, "sdk", "dist");

rmSync(out, { recursive: true, force: true });
try {
  execFileSync(bin("tsc"), ["-p", config, "--outDir", out], { stdio: "inherit", cwd: root });
  execFileSync(bin("tsc-alias"), ["-p", config, "--outDir", out], { stdio: "inherit", cwd: root });
} catch {
  console.error("build-sdk: the SDK did not build (see above)");
  process.exit(1);
}
