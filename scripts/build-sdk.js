#!/usr/bin/env node
// Builds the installable SDK (sdk/, package "governor") into sdk/dist: tsc emits the
// JavaScript and the type declarations, tsc-alias adds the ".js" that Node's ESM loader
// needs on relative imports.
//
// `npm run governor`, `npm test` and packing all run this, often while a CLI or a test is
// using sdk/dist. So the build never touches sdk/dist in place: it is made in a fresh folder
// next to it and swapped in by renames (sdk/dist is missing for two syscalls, not for the
// ~2.5 s of a build, and a deleted source still leaves nothing behind). And it is skipped
// when sdk/dist was built from the same inputs: a hash of every source the SDK can compile
// from, the compiler settings and versions, and this script, kept in sdk/dist/.inputs.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join, relative, resolve } from "node:path";
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
const STAMP = ".inputs";

// The SDK compiles from sdk/ and what it imports from lib/, machines/ and schema/ (rootDir is
// the repository); hashing all of those folders' sources is cheaper than asking tsc which.
const SOURCE_DIRS = ["sdk", "lib", "machines", "schema"];
function* sources(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== "node_modules" && entry.name !== "dist" && !entry.name.startsWith(".")) yield* sources(path);
    } else if (/\.(ts|mts|cts|js|mjs|json)$/.test(entry.name)) {
      yield path;
    }
  }
}
function inputsHash() {
  const h = createHash("sha256");
  const files = [fileURLToPath(import.meta.url), join(root, "tsconfig.json"), ...SOURCE_DIRS.flatMap((d) => [...sources(join(root, d))])];
  for (const f of files.sort()) {
    h.update(`${relative(root, f)}\0`);
    h.update(readFileSync(f));
    h.update("\0");
  }
  for (const pkg of ["typescript", "tsc-alias", "@types/node"]) {
    const at = join(root, "node_modules", pkg, "package.json");
    h.update(`${pkg}@${existsSync(at) ? JSON.parse(readFileSync(at, "utf8")).version : "-"}\0`);
  }
  return h.digest("hex");
}

const hash = inputsHash();
const stamp = join(out, STAMP);
if (!process.argv.includes("--force") && existsSync(stamp) && readFileSync(stamp, "utf8").trim() === hash) process.exit(0);

const staging = join(dirname(out), `.${basename(out)}.building-${process.pid}`);
rmSync(staging, { recursive: true, force: true });
try {
  execFileSync(bin("tsc"), ["-p", config, "--outDir", staging], { stdio: "inherit", cwd: root });
  execFileSync(bin("tsc-alias"), ["-p", config, "--outDir", staging], { stdio: "inherit", cwd: root });
  writeFileSync(join(staging, STAMP), `${hash}\n`);
} catch {
  rmSync(staging, { recursive: true, force: true });
  console.error("build-sdk: the SDK did not build (see above)");
  process.exit(1);
}

// The swap: the old build moves aside, the new one takes its name, the old one goes.
const old = join(dirname(out), `.${basename(out)}.old-${process.pid}`);
try {
  renameSync(out, old);
} catch (e) {
  if (e.code !== "ENOENT") throw e;
}
try {
  renameSync(staging, out);
} catch (e) {
  // Another build, run at the same time from the same sources, put its own in place first: keep it.
  if (e.code !== "ENOTEMPTY" && e.code !== "EEXIST") throw e;
  rmSync(staging, { recursive: true, force: true });
}
rmSync(old, { recursive: true, force: true });
