import { getEncoding } from "js-tiktoken";

// A long agent context, made deterministically: what a coding agent sends on its Nth call
// (a system prompt, tool schemas, and many turns of tool calls whose results are source
// files, test runs, searches and diffs). The proxy's per-call work grows with the body
// (parsing, counting, hashing), so a one-line prompt alone would flatter every gateway.
//
// The same seed gives the same bytes on every machine and run, so figures stay comparable.

type Message =
  | { role: "system" | "user"; content: string }
  | { role: "assistant"; content: string | null; tool_calls?: ToolCall[] }
  | { role: "tool"; tool_call_id: string; content: string };

interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

export interface AgentContext {
  model: string;
  messages: Message[];
  tools: unknown[];
  max_tokens: number;
}

/** mulberry32: tiny, fast, and the same sequence everywhere. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  return { next, int, pick };
}

type Rng = ReturnType<typeof rng>;

const NOUNS = ["session", "budget", "ledger", "request", "token", "policy", "event", "chain", "stream", "reservation", "tenant", "approval", "cursor", "snapshot", "buffer", "config", "route", "handler", "index", "record", "payload", "window", "quota", "usage", "price", "model", "agent", "report", "socket", "queue"];
const VERBS = ["load", "parse", "check", "settle", "apply", "merge", "build", "render", "verify", "compute", "resolve", "append", "flush", "collect", "encode", "decode", "fetch", "store", "replay", "format", "normalize", "validate", "reserve", "release", "schedule"];
const ADJ = ["pending", "open", "final", "stale", "raw", "cached", "total", "remaining", "next", "previous", "current", "default", "strict", "partial", "active"];
const TYPES = ["string", "number", "boolean", "string[]", "Record<string, number>", "Promise<void>", "bigint", "Date", "Map<string, unknown>"];
const DIRS = ["src/core", "src/api", "src/lib", "src/store", "src/workers", "test/unit", "test/e2e", "scripts"];

const cap = (s: string) => s[0].toUpperCase() + s.slice(1);
const ident = (r: Rng) => r.pick(VERBS) + cap(r.pick(NOUNS)) + (r.next() < 0.3 ? cap(r.pick(ADJ)) : "");
const typeName = (r: Rng) => cap(r.pick(ADJ)) + cap(r.pick(NOUNS));
const filePath = (r: Rng) => `${r.pick(DIRS)}/${r.pick(NOUNS)}-${r.pick(VERBS)}.ts`;

function sentence(r: Rng, words: number): string {
  const pool = [...NOUNS, ...VERBS, ...ADJ, "the", "a", "when", "before", "after", "every", "only", "is", "are", "must", "should", "not", "with", "from", "into", "and", "or"];
  const out: string[] = [];
  for (let i = 0; i < words; i++) out.push(r.pick(pool));
  const s = out.join(" ");
  return cap(s) + ".";
}

function statement(r: Rng, depth: number): string[] {
  const pad = "  ".repeat(depth);
  const a = ident(r);
  const b = r.pick(NOUNS);
  switch (r.int(7)) {
    case 0:
      return [`${pad}const ${b}${cap(r.pick(ADJ))} = await ${a}(${r.pick(NOUNS)}, { ${r.pick(NOUNS)}: ${r.int(1000)}, ${r.pick(ADJ)}: ${r.next() < 0.5} });`];
    case 1:
      return [`${pad}if (!${b} || ${b}.${r.pick(NOUNS)}.length > ${r.int(512)}) {`, `${pad}  throw new ${typeName(r)}Error(\`${sentence(r, 6)} \${${b}.id}\`);`, `${pad}}`];
    case 2:
      return [`${pad}for (const ${b} of ${r.pick(NOUNS)}s) {`, ...(depth < 3 ? statement(r, depth + 1) : [`${pad}  ${a}(${b});`]), `${pad}}`];
    case 3:
      return [`${pad}// ${sentence(r, 8 + r.int(10))}`];
    case 4:
      return [`${pad}${b}.${r.pick(NOUNS)} += ${r.pick(NOUNS)}.${r.pick(NOUNS)} * ${(r.next() * 100).toFixed(2)};`];
    case 5:
      return [`${pad}log.debug("${r.pick(VERBS)} ${r.pick(NOUNS)}", { ${r.pick(NOUNS)}: ${b}.id, ms: Date.now() - started });`];
    default:
      return [`${pad}return ${a}(${b}, ${r.pick(NOUNS)}?.${r.pick(NOUNS)} ?? ${r.int(100)});`];
  }
}

function sourceFile(r: Rng, lines: number): string {
  const out: string[] = [];
  for (let i = 0; i < 3 + r.int(4); i++) out.push(`import { ${ident(r)}, type ${typeName(r)} } from "../${r.pick(NOUNS)}/${r.pick(VERBS)}";`);
  out.push("");
  while (out.length < lines) {
    if (r.next() < 0.25) {
      const t = typeName(r);
      out.push(`export interface ${t} {`);
      for (let i = 0; i < 2 + r.int(5); i++) out.push(`  ${r.pick(NOUNS)}${r.next() < 0.3 ? "?" : ""}: ${r.pick(TYPES)};`);
      out.push("}", "");
      continue;
    }
    out.push(`/** ${sentence(r, 10 + r.int(8))} */`);
    out.push(`export async function ${ident(r)}(${r.pick(NOUNS)}: ${typeName(r)}, ${r.pick(NOUNS)}: ${r.pick(TYPES)}): Promise<${typeName(r)}> {`);
    out.push("  const started = Date.now();");
    for (let i = 0; i < 3 + r.int(6); i++) out.push(...statement(r, 1));
    out.push("}", "");
  }
  return out.join("\n");
}

function testRun(r: Rng): string {
  const out = [`> vitest run ${r.pick(DIRS)}`, ""];
  let failed = 0;
  for (let i = 0; i < 8 + r.int(12); i++) {
    const ok = r.next() < 0.85;
    if (!ok) failed++;
    out.push(` ${ok ? "✓" : "×"} ${filePath(r)} > ${r.pick(VERBS)}s ${r.pick(ADJ)} ${r.pick(NOUNS)} when ${sentence(r, 5).toLowerCase().slice(0, -1)} ${r.int(900)}ms`);
    if (!ok) {
      out.push(`   AssertionError: expected ${r.int(10_000)} to equal ${r.int(10_000)}`);
      out.push(`    at ${ident(r)} (${filePath(r)}:${r.int(400)}:${r.int(80)})`);
      out.push(`    at ${ident(r)} (${filePath(r)}:${r.int(400)}:${r.int(80)})`);
    }
  }
  out.push("", ` Test Files  ${failed ? `${failed} failed | ` : ""}${r.int(40) + 10} passed`, ` Duration  ${(r.next() * 20).toFixed(2)}s`);
  return out.join("\n");
}

function grepOutput(r: Rng): string {
  const out: string[] = [];
  for (let i = 0; i < 10 + r.int(25); i++) out.push(`${filePath(r)}:${r.int(500)}:${statement(r, 1)[0].trim()}`);
  return out.join("\n");
}

function diff(r: Rng): string {
  const f = filePath(r);
  const out = [`diff --git a/${f} b/${f}`, `--- a/${f}`, `+++ b/${f}`, `@@ -${r.int(300)},${7 + r.int(9)} +${r.int(300)},${7 + r.int(9)} @@`];
  for (let i = 0; i < 6 + r.int(14); i++) out.push((r.next() < 0.3 ? "-" : r.next() < 0.5 ? "+" : " ") + statement(r, 1)[0]);
  return out.join("\n");
}

function schema(r: Rng, name: string, params: Record<string, string>) {
  return {
    type: "function",
    function: {
      name,
      description: sentence(r, 14 + r.int(10)),
      parameters: {
        type: "object",
        properties: Object.fromEntries(Object.entries(params).map(([k, t]) => [k, { type: t, description: sentence(r, 8 + r.int(6)) }])),
        required: Object.keys(params).slice(0, 1),
        additionalProperties: false,
      },
    },
  };
}

const TOOLS: Array<[string, Record<string, string>]> = [
  ["read_file", { path: "string", start_line: "integer", end_line: "integer" }],
  ["write_file", { path: "string", content: "string" }],
  ["edit_file", { path: "string", old_text: "string", new_text: "string" }],
  ["run_shell", { command: "string", cwd: "string", timeout_ms: "integer" }],
  ["grep", { pattern: "string", path: "string", ignore_case: "boolean" }],
  ["list_dir", { path: "string", depth: "integer" }],
  ["run_tests", { pattern: "string", update_snapshots: "boolean" }],
  ["git_diff", { base: "string", paths: "string" }],
  ["git_commit", { message: "string", all: "boolean" }],
  ["search_docs", { query: "string", library: "string" }],
  ["ask_user", { question: "string" }],
  ["open_pull_request", { title: "string", body: "string", draft: "boolean" }],
];

const SYSTEM_RULES = 40;

/**
 * A chat-completions body of about `targetTokens` prompt tokens (o200k, counted as the
 * messages' text plus the tool schemas), and the count it reached.
 */
export function agentContext(targetTokens: number, seed = 42): { body: AgentContext; tokens: number } {
  const r = rng(seed);
  const enc = getEncoding("o200k_base");
  const count = (s: string) => enc.encode(s).length;
  const system = ["You are a senior software engineer working in the user's repository through tools.", ...Array.from({ length: SYSTEM_RULES }, (_, i) => `${i + 1}. ${sentence(r, 12 + r.int(14))}`)].join("\n");
  const tools = TOOLS.map(([name, params]) => schema(r, name, params));
  const task = `${sentence(r, 20)} ${sentence(r, 16)} The failing test is in ${filePath(r)}; fix it and keep the others green.`;
  const messages: Message[] = [
    { role: "system", content: system },
    { role: "user", content: task },
  ];
  let tokens = count(system) + count(JSON.stringify(tools)) + count(task) + 8;
  for (let turn = 0; tokens < targetTokens; turn++) {
    const kind = r.int(5);
    const name = ["read_file", "run_tests", "grep", "git_diff", "read_file"][kind];
    const args =
      name === "read_file"
        ? { path: filePath(r), start_line: 1, end_line: 80 + r.int(200) }
        : name === "run_tests"
          ? { pattern: r.pick(DIRS) }
          : name === "grep"
            ? { pattern: ident(r), path: r.pick(DIRS) }
            : { base: "main", paths: filePath(r) };
    const id = `call_${turn.toString(36).padStart(6, "0")}${r.int(1e9).toString(36)}`;
    const output = name === "read_file" ? sourceFile(r, 40 + r.int(80)) : name === "run_tests" ? testRun(r) : name === "grep" ? grepOutput(r) : diff(r);
    const thought = `${sentence(r, 10 + r.int(20))} ${sentence(r, 8 + r.int(12))}`;
    const fn = { name, arguments: JSON.stringify(args) };
    const call: Message = { role: "assistant", content: thought, tool_calls: [{ id, type: "function", function: fn }] };
    const result: Message = { role: "tool", tool_call_id: id, content: output };
    messages.push(call, result);
    tokens += count(thought) + count(fn.arguments) + count(output) + 8;
  }
  messages.push({ role: "user", content: "Go on: make the change, run the tests, and summarise what you did." });
  tokens += 20;
  return { body: { model: "gpt-4o-mini", messages, tools, max_tokens: 16 }, tokens };
}
