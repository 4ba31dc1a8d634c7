// A coding agent's conversation, as it looks on the wire after a few dozen tool calls: a
// system prompt with tool rules, a task, then assistant tool calls and tool results holding
// source files, test output and diffs. Deterministic, so every run sends the same bytes.

type Message = { role: "system" | "user" | "assistant" | "tool"; content: string | null; tool_calls?: unknown[]; tool_call_id?: string };

const SYSTEM = `You are a senior software engineer working in a TypeScript monorepo. Use the tools to read files, run tests and apply patches. Keep changes minimal, explain each patch in one sentence, and never modify generated files. When a test fails, read the failing test and the code under test before proposing a fix.`;

function sourceFile(i: number): string {
  const lines: string[] = [`// packages/core/src/module${i}.ts`, `import { parse, type Node } from "./parser";`, `import { Cache } from "./cache";`, ""];
  for (let f = 0; f < 12; f++) {
    lines.push(`/** Resolves the ${f}th dependency group of a module graph, memoised per root. */`);
    lines.push(`export function resolveGroup${i}_${f}(root: Node, cache: Cache<string, Node[]>): Node[] {`);
    lines.push(`  const key = \`\${root.id}:${f}\`;`);
    lines.push(`  const hit = cache.get(key);`);
    lines.push(`  if (hit) return hit;`);
    lines.push(`  const out = root.children.filter((c) => c.kind === "import" && c.weight > ${f}).map((c) => parse(c.source));`);
    lines.push(`  cache.set(key, out);`);
    lines.push(`  return out;`);
    lines.push(`}`);
    lines.push("");
  }
  return lines.join("\n");
}

function testOutput(i: number): string {
  const lines = [`$ npx vitest run packages/core`, ``, ` RUN  v4.1.0 /repo`, ``];
  for (let t = 0; t < 18; t++) lines.push(` ${t % 7 === 3 ? "×" : "✓"} packages/core/test/module${i}.test.ts > resolveGroup${i}_${t % 12} handles case ${t} (${3 + t} ms)`);
  lines.push("", ` FAIL  packages/core/test/module${i}.test.ts > resolveGroup${i}_3 handles case 3`, `AssertionError: expected [ 'a', 'b' ] to deeply equal [ 'a', 'b', 'c' ]`, ` ❯ packages/core/test/module${i}.test.ts:${40 + i}:18`, "", ` Test Files  1 failed | 11 passed (12)`, `      Tests  3 failed | 204 passed (207)`);
  return lines.join("\n");
}

function diff(i: number): string {
  return [`--- a/packages/core/src/module${i}.ts`, `+++ b/packages/core/src/module${i}.ts`, `@@ -12,7 +12,7 @@`, `-  const out = root.children.filter((c) => c.kind === "import" && c.weight > 3)`, `+  const out = root.children.filter((c) => c.kind === "import" && c.weight >= 3)`, `   cache.set(key, out);`].join("\n");
}

/** One step of the loop: the assistant calls a tool, the tool answers. */
export function step(i: number): Message[] {
  const kind = i % 3;
  const id = `call_${i.toString(36).padStart(6, "0")}`;
  const [name, args, result] =
    kind === 0
      ? ["read_file", { path: `packages/core/src/module${i}.ts` }, sourceFile(i)]
      : kind === 1
        ? ["run_tests", { filter: `module${i - 1}` }, testOutput(i)]
        : ["apply_patch", { patch: diff(i) }, `Patch applied to packages/core/src/module${i}.ts (1 hunk).`];
  return [
    { role: "assistant", content: null, tool_calls: [{ id, type: "function", function: { name, arguments: JSON.stringify(args) } }] },
    { role: "tool", tool_call_id: id, content: result },
  ];
}

/** The conversation after `steps` tool calls. */
export function history(steps: number): Message[] {
  const out: Message[] = [
    { role: "system", content: SYSTEM },
    { role: "user", content: "The resolver drops the last dependency of each group. Find the bug, fix it, and make the suite pass." },
  ];
  for (let i = 0; i < steps; i++) out.push(...step(i));
  return out;
}

export const TOOLS = [
  { type: "function", function: { name: "read_file", description: "Read a file of the repository", parameters: { type: "object", properties: { path: { type: "string" } }, required: ["path"] } } },
  { type: "function", function: { name: "run_tests", description: "Run the test suite, optionally filtered", parameters: { type: "object", properties: { filter: { type: "string" } } } } },
  { type: "function", function: { name: "apply_patch", description: "Apply a unified diff", parameters: { type: "object", properties: { patch: { type: "string" } }, required: ["patch"] } } },
];
