import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { describe, expect, it } from "vitest";

// The SDK package declares exactly the packages its code loads: walking the imports from its
// entry points (the SDK shares schema/, machines/ and lib/ with the server) must find every
// runtime dependency in sdk/package.json at the server's version, and nothing unused. A
// dependency added to shared code without the package knowing fails here, not at a user's.

const ROOT = resolve(import.meta.dirname, "../..");
const sdkPkg = JSON.parse(readFileSync(join(ROOT, "sdk/package.json"), "utf8"));
const rootPkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));

const ENTRIES = ["sdk/index.ts", "sdk/cli.ts", "sdk/integrations/ai-sdk.ts", "sdk/integrations/langchain.ts", "sdk/integrations/openai-agents.ts"];

function packageOf(spec: string): string {
  const parts = spec.split("/");
  return spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
}

function resolveLocal(from: string, spec: string): string {
  const base = resolve(dirname(from), spec);
  for (const candidate of [`${base}.ts`, join(base, "index.ts"), base]) if (existsSync(candidate) && candidate.endsWith(".ts")) return candidate;
  throw new Error(`${from}: cannot resolve ${spec}`);
}

/** Packages loaded at run time by the SDK's code, with the file that loads each. */
function runtimeImports(): Map<string, string> {
  const found = new Map<string, string>();
  const seen = new Set<string>();
  const queue = ENTRIES.map((e) => join(ROOT, e));
  while (queue.length) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const src = readFileSync(file, "utf8");
    const specs: Array<{ spec: string; typeOnly: boolean }> = [];
    for (const m of src.matchAll(/^\s*(import|export)\s+(type\s+)?(?:[^;]*?\sfrom\s+)?["']([^"']+)["']/gm)) specs.push({ spec: m[3], typeOnly: !!m[2] });
    for (const m of src.matchAll(/import\(\s*["']([^"']+)["']\s*\)/g)) specs.push({ spec: m[1], typeOnly: false });
    for (const { spec, typeOnly } of specs) {
      if (spec.startsWith(".")) queue.push(resolveLocal(file, spec));
      else if (!typeOnly && !spec.startsWith("node:")) found.set(packageOf(spec), file.slice(ROOT.length + 1));
    }
  }
  return found;
}

describe("the SDK package's dependencies", () => {
  const imports = runtimeImports();
  const deps: Record<string, string> = sdkPkg.dependencies;
  const peers: Record<string, string> = sdkPkg.peerDependencies;

  it("declares every package its code loads, as a dependency or an optional peer", () => {
    const missing = [...imports].filter(([p]) => !(p in deps) && !(p in peers)).map(([p, f]) => `${p} (loaded by ${f})`);
    expect(missing).toEqual([]);
    for (const p of Object.keys(peers)) expect(sdkPkg.peerDependenciesMeta[p]?.optional, p).toBe(true);
  });

  it("declares nothing it does not load, at the versions the server uses", () => {
    expect(Object.keys(deps).filter((p) => !imports.has(p))).toEqual([]);
    for (const [p, range] of Object.entries(deps)) expect(range, p).toBe(rootPkg.dependencies[p] ?? rootPkg.devDependencies[p]);
  });

  it("has the version and engines of the repository, and exports what the README documents", () => {
    expect(sdkPkg.version).toBe(rootPkg.version);
    expect(sdkPkg.engines).toEqual(rootPkg.engines);
    expect(Object.keys(sdkPkg.exports)).toEqual([".", "./ai-sdk", "./langchain", "./openai-agents", "./package.json"]);
    expect(sdkPkg.bin).toEqual({ governor: "bin/governor.js" });
  });
});
