#!/usr/bin/env node
// Root postinstall: applies patches/ to node_modules with patch-package. The install fails
// (exit 1) when a patch does not apply or was made for another version of its package
// (--error-on-fail --error-on-warn): a patch that silently stopped applying after an
// upgrade would bring back what it turned off without anyone noticing.
//
// patch-package rewrites a patched file in place. Where node_modules is made of hard links
// into a shared store (pnpm-style stores, `cp -al` copies of a checkout), that would patch
// every checkout sharing the file; each file a patch touches gets its own copy first.
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, readdirSync, readFileSync, renameSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
// `node scripts/patch-deps.js <dir>` patches another project folder (the tests do, in a scratch copy).
const root = process.argv[2] ? resolve(process.argv[2]) : repo;

/** The files under node_modules that the patches in `dir` change. */
function patchedFiles(dir) {
  if (!existsSync(dir)) return [];
  const out = [];
  for (const name of readdirSync(dir).filter((n) => n.endsWith(".patch"))) {
    for (const m of readFileSync(join(dir, name), "utf8").matchAll(/^diff --git a\/(\S+) b\//gm)) out.push(m[1]);
  }
  return out;
}

function ownCopy(path) {
  if (!existsSync(path) || statSync(path).nlink <= 1) return;
  const tmp = `${path}.own-${process.pid}`;
  copyFileSync(path, tmp);
  renameSync(tmp, path);
}

{
  for (const rel of patchedFiles(join(root, "patches"))) ownCopy(join(root, rel));
  const bin = join(repo, "node_modules", "patch-package", "index.js");
  const r = spawnSync(process.execPath, [bin, "--error-on-fail", "--error-on-warn"], { cwd: root, stdio: "inherit" });
  if (r.status !== 0) {
    console.error("governor: a patch in patches/ did not apply to node_modules (see above). If partykit was upgraded, check whether its miniflare still needs the patch and make it again (patches/README.md).");
    process.exit(r.status ?? 1);
  }
}
