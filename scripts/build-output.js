// Shared by the build scripts (build-sdk.js, build-console.js): a build output is rebuilt
// only when its inputs changed, and replaced whole, never emptied in place.
//
// Why: `npm test`, `npm start` and `npm run governor` all build first, often while a CLI, a
// test or a `partykit dev` is using the output. Emptied in place, sdk/dist is missing for the
// ~2.5 s of a build (a CLI started then fails with ERR_MODULE_NOT_FOUND), and every file
// vite deletes and rewrites in console/dist makes each running `partykit dev` of the checkout
// rebuild and restart workerd (its requests die with "other side closed", then ECONNREFUSED).
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join, relative } from "node:path";

function* filesUnder(path) {
  if (!existsSync(path)) return;
  if (!statSync(path).isDirectory()) {
    yield path;
    return;
  }
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    // Outputs, dependencies and dot entries (staging folders, stamps) are not inputs.
    if (entry.name === "node_modules" || entry.name === "dist" || entry.name.startsWith(".")) continue;
    yield* filesUnder(join(path, entry.name));
  }
}

/** SHA-256 over the names and contents of every file under `paths` (files or folders), relative to `root`. */
export function inputsHash(root, paths) {
  const h = createHash("sha256");
  const files = paths.flatMap((p) => [...filesUnder(join(root, p))]).sort();
  for (const f of files) {
    h.update(`${relative(root, f)}\0`);
    h.update(readFileSync(f));
    h.update("\0");
  }
  return h.digest("hex");
}

/** A fresh folder beside `out` (same file system, so it can be renamed into place). */
export function stagingFor(out) {
  const staging = join(dirname(out), `.${basename(out)}.building-${process.pid}`);
  rmSync(staging, { recursive: true, force: true });
  return staging;
}

/**
 * Puts `staging` in place of `out`: the old output moves aside, the new one takes its name,
 * the old one goes. `out` is missing between two renames, not for the length of a build.
 */
export function swapInto(staging, out) {
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
}
