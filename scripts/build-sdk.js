#!/usr/bin/env node
// Builds the installable SDK (sdk/, package "governor") into sdk/dist: tsc emits the
// JavaScript and the type declarations, tsc-alias adds the ".js" that Node's ESM loader
// needs on relative imports. dist is cleared first so a deleted source leaves nothing behind.
import { execFileSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
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

rmSync(join(root, "sdk", "dist"), { recursive: true, force: true });
try {
  execFileSync(bin("tsc"), ["-p", config], { stdio: "inherit", cwd: root });
  execFileSync(bin("tsc-alias"), ["-p", config], { stdio: "inherit", cwd: root });
} catch {
  console.error("build-sdk: the SDK did not build (see above)");
  process.exit(1);
}
