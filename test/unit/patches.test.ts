import { spawnSync } from "node:child_process";
import { cpSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ROOT } from "../support/server";
import { requestLogSwitchInstalled } from "../../scripts/request-log.js";

// patches/ is applied on install (root postinstall: scripts/patch-deps.js). A patch that no
// longer fits what is installed must fail the install, not be skipped with a warning.

const MINIFLARE = "node_modules/partykit/node_modules/miniflare";
const INDEX = `${MINIFLARE}/dist/src/index.js`;
const PATCH = "partykit++miniflare+3.20240718.0.patch";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A scratch project holding patches/ and miniflare's patched file as released, at `version`. */
function scratch(version: string): string {
  const dir = mkdtempSync(join(tmpdir(), "governor-patches-"));
  dirs.push(dir);
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "scratch", version: "0.0.0", private: true }));
  writeFileSync(join(dir, "package-lock.json"), JSON.stringify({ name: "scratch", lockfileVersion: 3, packages: {} }));
  cpSync(join(ROOT, "patches"), join(dir, "patches"), { recursive: true });
  mkdirSync(join(dir, dirname(INDEX)), { recursive: true });
  writeFileSync(join(dir, MINIFLARE, "package.json"), JSON.stringify({ name: "miniflare", version }));
  writeFileSync(join(dir, INDEX), readFileSync(join(ROOT, INDEX)));
  // The installed file is patched already: the released one is what reversing the patch gives.
  const reverse = spawnSync("git", ["apply", "-R", join("patches", PATCH)], { cwd: dir, encoding: "utf8" });
  if (reverse.status !== 0) throw new Error(`could not reverse ${PATCH} in the scratch copy: ${reverse.stderr}`);
  return dir;
}

const patchDeps = (dir: string) => spawnSync(process.execPath, [join(ROOT, "scripts/patch-deps.js"), dir], { encoding: "utf8", env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0" } });

describe("patches/ on install", () => {
  it("this checkout's partykit is the version the patch was made for, and its miniflare is patched", () => {
    expect(JSON.parse(readFileSync(join(ROOT, "node_modules/partykit/package.json"), "utf8")).version).toBe("0.0.115");
    expect(JSON.parse(readFileSync(join(ROOT, MINIFLARE, "package.json"), "utf8")).version).toBe("3.20240718.0");
    expect(readFileSync(join(ROOT, INDEX), "utf8")).toContain('process.env.GOVERNOR_REQUEST_LOG === "off"');
  });

  it("applies to the released file, and a file shared by hard link with another checkout gets its own copy first", () => {
    const dir = scratch("3.20240718.0");
    const shared = join(dir, "store-copy.js");
    linkSync(join(dir, INDEX), shared);
    const released = readFileSync(shared, "utf8");
    expect(released).not.toContain("GOVERNOR_REQUEST_LOG");
    expect(requestLogSwitchInstalled(dir)).toBe(false);
    const r = patchDeps(dir);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(readFileSync(join(dir, INDEX), "utf8")).toContain('process.env.GOVERNOR_REQUEST_LOG === "off"');
    expect(readFileSync(shared, "utf8")).toBe(released);
    // npm start tells an unpatched install (scripts turned off) from a patched one.
    expect(requestLogSwitchInstalled(dir)).toBe(true);
    expect(requestLogSwitchInstalled(ROOT)).toBe(true);
    // Installing again over a patched tree is fine.
    expect(patchDeps(dir).status).toBe(0);
  });

  it("another miniflare (partykit upgraded) fails the install, naming what to do", () => {
    const dir = scratch("3.20240801.0");
    const r = patchDeps(dir);
    expect(r.status).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/version mismatch/i);
    expect(r.stderr).toContain("patches/README.md");
  });

  it("a file that changed under the patch fails the install", () => {
    const dir = scratch("3.20240718.0");
    const path = join(dir, INDEX);
    writeFileSync(path, readFileSync(path, "utf8").replace("JSON.stringify(log.level)", "JSON.stringify(log.level ?? 3)"));
    const r = patchDeps(dir);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain("did not apply");
  });
});
