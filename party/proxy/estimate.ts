import { createHash } from "node:crypto";
import type { Tiktoken } from "js-tiktoken/lite";
import { BadRequestError } from "../../lib/errors";
import { priceFor, TOOL_FEES, type Provider } from "../../schema/pricing";
import {
  ANTHROPIC_TOOL_SYSTEM,
  ANTHROPIC_TYPED_TOOL,
  claudeTokenizerMargin,
  DEFAULT_TOOL_USES,
  imageTokens,
  OPENAI_TOOLS_PREAMBLE,
  pdfTokens,
  SERVER_TOOL_ALLOWANCE,
  UNKNOWN_TOOL_ALLOWANCE,
} from "./bounds";
import { payloadOf, pdfPages, sniffImage } from "./attachments";
import { countWith, encodingFor, encoderNow, loadEncoding, utf8Bytes, type EncodingName } from "./tokens";

// The input side of a reservation.
//
// `scanPrompt` is what every call pays: one walk over the parsed body's structure (not its
// text), giving an upper bound on the input tokens the provider can bill. Its text part is
// the UTF-8 size of the body minus inline attachments: every tokenizer involved is a
// byte-level BPE (o200k and cl100k, and Claude's, whose vocabulary is not public but whose
// count_tokens results never exceed the bytes in our tests), and a byte-level BPE token
// always covers at least one byte, so tokens <= bytes. JSON syntax, keys and parameters
// only make the bound looser. Attachments are bounded by the provider's formulas
// (bounds.ts), fixed overheads added, and the whole capped by the model's context window.
//
// `countPrompt` is the exact side, asked for only when the bound does not fit the budget:
// the tokenizer's count of each message, cached by a native hash of the message, so an agent
// that re-sends its history pays only for the new messages. Claude gets a margin on top.

export type EndpointKind = "chat" | "completions" | "responses" | "embeddings" | "messages" | "other";

/** `path` is the provider path after the proxy prefix: "v1/chat/completions", "/messages", ... */
export function endpointKind(provider: Provider, path: string): EndpointKind {
  const p = path.split("?")[0].replace(/^\/+/, "").replace(/^v1\//, "").replace(/\/+$/, "");
  if (provider === "anthropic") return p === "messages" ? "messages" : "other";
  if (p === "chat/completions") return "chat";
  if (p === "completions" || p === "responses" || p === "embeddings") return p;
  return "other";
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

export interface PromptScan {
  provider: Provider;
  kind: EndpointKind;
  encoding: EncodingName;
  /** UTF-8 bytes of everything that is not an inline attachment payload. */
  textBytes: number;
  /** Images, PDFs and fixed overheads (tool system prompts), in tokens. */
  fixedTokens: number;
  /** Input tokens the provider's own tools may add (results), across all their uses. */
  toolTokens: number;
  /** Fees of those tool uses, USD. */
  toolFeesUsd: number;
  /** "server-tools" when provider-side tools may run; learned ratios are kept per profile. */
  profile: "text" | "server-tools";
  /** Set when the call holds something no price here covers (audio, an image-generation tool). */
  unpriced?: string;
  /** Prompt caching: the dearest write the call can make. */
  cacheWrite: "none" | "5m" | "1h";
  /** What the local count is multiplied by to cover the provider's tokenizer (Claude's is not public; bounds.ts). */
  margin: number;
  /** Body changes that make the bound hold: limits on server-side tool uses. */
  patch: { anthropicMaxUses?: number; openaiMaxToolCalls?: number };
}

const IMAGE_TYPES = new Set(["image_url", "input_image", "image"]);
const FILE_TYPES = new Set(["file", "input_file", "document"]);
const CLIENT_TOOL_TYPES = new Set(["function", "custom", "computer_use_preview", "local_shell"]);
const ANTHROPIC_TYPED = /^(bash|text_editor|computer|memory)_/;
const UNPRICED_TOOLS = new Set(["image_generation"]);

function serverToolName(provider: Provider, type: string): string {
  if (provider === "anthropic") return /^web_search/.test(type) ? "web_search" : /^web_fetch/.test(type) ? "web_fetch" : /^code_execution/.test(type) ? "code_execution" : type;
  return /^web_search/.test(type) ? "web_search" : type;
}

/** Looks at one attachment part: its payload bytes (not prompt text) and its bound in tokens. */
function attachment(provider: Provider, family: string, part: Obj): { payloadBytes: number; tokens: number; unpriced?: string } {
  const type = part.type as string;
  if (type === "input_audio") return { payloadBytes: 0, tokens: 0, unpriced: "audio input is billed at audio-token prices, which the price table does not hold" };
  // Where the payload and the detail sit differs per API shape.
  const source = isObj(part.source) ? part.source : undefined;
  const imageUrl = isObj(part.image_url) ? part.image_url : undefined;
  const file = isObj(part.file) ? part.file : undefined;
  const raw = source?.type === "base64" ? source.data : imageUrl ? imageUrl.url : typeof part.image_url === "string" ? part.image_url : file ? file.file_data : part.file_data;
  const payload = payloadOf(raw);
  const payloadBytes = typeof raw === "string" && payload ? raw.length : 0;
  if (IMAGE_TYPES.has(type)) {
    const size = payload ? sniffImage(payload.base64) : undefined;
    return { payloadBytes, tokens: imageTokens(provider, family, size, imageUrl?.detail ?? part.detail) };
  }
  // Anthropic text documents are prompt text like any other.
  if (source && (source.type === "text" || source.type === "content")) return { payloadBytes: 0, tokens: 0 };
  const pages = payload && (payload.mediaType === undefined || /pdf/i.test(payload.mediaType) || /pdf/i.test(String(source?.media_type ?? ""))) ? pdfPages(payload.base64) : undefined;
  return { payloadBytes, tokens: pdfTokens(provider, family, pages) };
}

function tools(provider: Provider, kind: EndpointKind, body: Obj, scan: PromptScan) {
  const list = Array.isArray(body.tools) ? body.tools : [];
  if (list.length && provider === "anthropic") scan.fixedTokens += ANTHROPIC_TOOL_SYSTEM;
  if ((list.length || Array.isArray(body.functions)) && provider === "openai") scan.fixedTokens += OPENAI_TOOLS_PREAMBLE;
  const server: string[] = [];
  for (const t of list) {
    if (!isObj(t) || typeof t.type !== "string" || CLIENT_TOOL_TYPES.has(t.type)) continue;
    if (provider === "anthropic" && ANTHROPIC_TYPED.test(t.type)) {
      scan.fixedTokens += ANTHROPIC_TYPED_TOOL;
      continue;
    }
    if (provider === "openai" && kind !== "responses") continue; // chat tools are functions
    if (UNPRICED_TOOLS.has(t.type)) scan.unpriced = `the ${t.type} tool is billed at prices the price table does not hold`;
    const name = serverToolName(provider, t.type);
    server.push(name);
    if (provider === "anthropic") {
      const uses = typeof t.max_uses === "number" && t.max_uses > 0 ? Math.floor(t.max_uses) : DEFAULT_TOOL_USES;
      if (typeof t.max_uses !== "number" && name !== "code_execution") scan.patch.anthropicMaxUses = DEFAULT_TOOL_USES;
      const per = name === "web_fetch" && typeof t.max_content_tokens === "number" ? t.max_content_tokens : SERVER_TOOL_ALLOWANCE[name] ?? UNKNOWN_TOOL_ALLOWANCE;
      scan.toolTokens += uses * per;
      scan.toolFeesUsd += uses * (TOOL_FEES.anthropic[name] ?? Math.max(...Object.values(TOOL_FEES.anthropic)));
    }
  }
  if (provider === "anthropic" && Array.isArray(body.mcp_servers) && body.mcp_servers.length) {
    server.push("mcp");
    scan.toolTokens += DEFAULT_TOOL_USES * UNKNOWN_TOOL_ALLOWANCE;
  }
  if (provider === "openai" && server.length) {
    // max_tool_calls caps all built-in tool calls of a response together.
    const given = typeof body.max_tool_calls === "number" && body.max_tool_calls > 0 ? Math.floor(body.max_tool_calls) : undefined;
    if (given === undefined) scan.patch.openaiMaxToolCalls = DEFAULT_TOOL_USES;
    const uses = given ?? DEFAULT_TOOL_USES;
    scan.toolTokens += uses * Math.max(...server.map((s) => SERVER_TOOL_ALLOWANCE[s] ?? UNKNOWN_TOOL_ALLOWANCE));
    scan.toolFeesUsd += uses * Math.max(...server.map((s) => TOOL_FEES.openai[s] ?? Math.max(...Object.values(TOOL_FEES.openai))));
  }
  if (server.length) scan.profile = "server-tools";
}

/** Deeper than any real request: refused before recursive code (counting, hashing) meets it. */
export const MAX_DEPTH = 64;

/**
 * The cheap pass. `bodyBytes` is the UTF-8 size of the body as received (the gateway has it
 * without re-encoding). Work is proportional to the number of JSON nodes, not to the text;
 * the same walk refuses a body nested deeper than MAX_DEPTH (a 400), so the proxy needs no
 * second walk for that.
 */
export function scanPrompt(provider: Provider, path: string, body: Obj, bodyBytes: number, family: string, model: string): PromptScan {
  const kind = endpointKind(provider, path);
  const scan: PromptScan = { provider, kind, encoding: encodingFor(provider, model), textBytes: bodyBytes, fixedTokens: 0, toolTokens: 0, toolFeesUsd: 0, profile: "text", cacheWrite: "none", margin: provider === "anthropic" ? claudeTokenizerMargin(family) : 1, patch: {} };
  if (provider === "openai" && (body.audio !== undefined || (Array.isArray(body.modalities) && body.modalities.includes("audio")))) {
    scan.unpriced = "audio output is billed at audio-token prices, which the price table does not hold";
  }
  const stack: unknown[] = [body];
  const depths: number[] = [0];
  while (stack.length) {
    const v = stack.pop();
    const depth = depths.pop()!;
    if (depth >= MAX_DEPTH) throw new BadRequestError(`body is nested more than ${MAX_DEPTH} levels deep`, "body");
    if (Array.isArray(v)) {
      for (const x of v) if (typeof x === "object" && x !== null) stack.push(x), depths.push(depth + 1);
      continue;
    }
    if (!isObj(v)) continue;
    if (isObj(v.cache_control)) scan.cacheWrite = v.cache_control.ttl === "1h" || scan.cacheWrite === "1h" ? "1h" : "5m";
    const type = typeof v.type === "string" ? v.type : "";
    if (type && (IMAGE_TYPES.has(type) || FILE_TYPES.has(type) || type === "input_audio") && v !== body) {
      const a = attachment(provider, family, v);
      if (a.unpriced) scan.unpriced = a.unpriced;
      if (a.tokens || a.payloadBytes) {
        scan.textBytes -= a.payloadBytes;
        scan.fixedTokens += a.tokens;
        continue;
      }
    }
    for (const x of Object.values(v)) if (typeof x === "object" && x !== null) stack.push(x), depths.push(depth + 1);
  }
  tools(provider, kind, body, scan);
  return scan;
}

/** Upper bound on billed input tokens, capped by the context window; tool results come on top. */
export function boundTokens(scan: PromptScan, context: number): number {
  return Math.min(scan.textBytes + scan.fixedTokens, context) + scan.toolTokens;
}

// ---------------------------------------------------------------- exact side

// OpenAI cookbook accounting for chat formats, applied to Claude's too.
const PER_MESSAGE = 3;
const PER_NAME = 1;
const REPLY_PRIMING = 3;
const ATTACHMENT_PARTS = new Set([...IMAGE_TYPES, ...FILE_TYPES, "input_audio"]);

const sum = (xs: unknown, f: (x: unknown) => number) => (Array.isArray(xs) ? xs.reduce((n: number, x) => n + f(x), 0) : 0);

/** Text tokens of one message or part; attachments are bounded by scanPrompt, not here. */
function content(enc: Tiktoken, part: unknown): number {
  if (typeof part === "string") return countWith(enc, part);
  if (Array.isArray(part)) return sum(part, (x) => content(enc, x));
  if (!isObj(part)) return 0;
  if (typeof part.text === "string") return countWith(enc, part.text);
  if (typeof part.type === "string" && ATTACHMENT_PARTS.has(part.type)) {
    const source = isObj(part.source) ? part.source : undefined;
    if (source?.type === "text") return countWith(enc, source.data);
    if (source?.type === "content") return content(enc, source.content);
    return 0;
  }
  switch (part.type) {
    case "tool_use":
      return countWith(enc, part.name) + json(enc, part.input);
    case "function_call":
      return countWith(enc, part.name) + countWith(enc, part.arguments);
    case "tool_result":
      return content(enc, part.content);
    case "function_call_output":
      return content(enc, part.output);
    case "thinking":
      return countWith(enc, part.thinking);
    case "refusal":
      return countWith(enc, part.refusal);
  }
  return json(enc, part);
}

function json(enc: Tiktoken, v: unknown): number {
  return v === undefined || v === null ? 0 : countWith(enc, JSON.stringify(v));
}

function message(enc: Tiktoken, m: unknown): number {
  if (!isObj(m) || typeof m.role !== "string") return content(enc, m); // a Responses item such as function_call
  let n = PER_MESSAGE + countWith(enc, m.role) + content(enc, m.content);
  if (typeof m.name === "string") n += PER_NAME + countWith(enc, m.name);
  const calls = Array.isArray(m.tool_calls) ? m.tool_calls : m.function_call ? [{ function: m.function_call }] : [];
  for (const call of calls) {
    const fn = isObj(call) && isObj(call.function) ? call.function : {};
    n += countWith(enc, fn.name) + countWith(enc, fn.arguments);
  }
  return n;
}

// Counts by a native hash of the unit's JSON. A context-appending agent re-sends the same
// messages on every call; only the new ones are tokenized.
const CACHE_ENTRIES = 50_000;
const counts = new Map<string, number>();
let hits = 0;
let misses = 0;

function cached(enc: Tiktoken, name: EncodingName, unit: unknown, count: (enc: Tiktoken, u: unknown) => number): number {
  if (unit === undefined || unit === null) return 0;
  const key = createHash("sha1").update(name).update("\0").update(typeof unit === "string" ? unit : JSON.stringify(unit)).digest("base64");
  const have = counts.get(key);
  if (have !== undefined) {
    hits++;
    // Re-inserted so the map's order is recency: the oldest entry is the one evicted.
    counts.delete(key);
    counts.set(key, have);
    return have;
  }
  misses++;
  const n = count(enc, unit);
  counts.set(key, n);
  if (counts.size > CACHE_ENTRIES) counts.delete(counts.keys().next().value as string);
  return n;
}

export function countCacheStats() {
  return { entries: counts.size, hits, misses };
}

// Embeddings `input` and legacy completions `prompt`: string | string[] | token ids | token id arrays.
function textOrIds(enc: Tiktoken, input: unknown): number {
  if (typeof input === "string") return countWith(enc, input);
  if (!Array.isArray(input)) return 0;
  if (input.every((x) => typeof x === "number")) return input.length; // already token ids
  return sum(input, (x) => textOrIds(enc, x));
}

/** Tokenizer count of the prompt's text (no attachments, no margins). */
export function countText(enc: Tiktoken, name: EncodingName, kind: EndpointKind, b: Obj): number {
  const msgs = (xs: unknown) => sum(xs, (m) => cached(enc, name, m, message));
  const asMessage = (v: unknown, role = "system") => (v ? cached(enc, name, { role, content: v }, message) : 0);
  const blob = (v: unknown) => cached(enc, name, v, json);
  switch (kind) {
    case "chat":
      return msgs(b.messages) + REPLY_PRIMING + blob(b.tools) + blob(b.functions) + blob(b.response_format);
    case "completions":
      return textOrIds(enc, b.prompt);
    case "responses": {
      const input = typeof b.input === "string" ? asMessage(b.input, "user") : msgs(b.input);
      const format = isObj(b.text) ? b.text.format : undefined;
      return asMessage(b.instructions) + input + REPLY_PRIMING + blob(b.tools) + blob(format);
    }
    case "embeddings":
      return textOrIds(enc, b.input);
    case "messages":
      return asMessage(b.system) + msgs(b.messages) + REPLY_PRIMING + blob(b.tools);
    case "other":
      return blob(b);
  }
}

/**
 * The counted estimate: never above the bound (the bound's text part is a true upper bound,
 * so the smaller of the two is still one). Waits for the encoder's background load if the
 * isolate is still cold; it never decodes a table itself.
 */
export async function countPrompt(scan: PromptScan, body: Obj, context: number): Promise<number> {
  const enc = await loadEncoding(scan.encoding);
  let text = countText(enc, scan.encoding, scan.kind, body);
  if (scan.margin !== 1) text = Math.ceil(text * scan.margin);
  return Math.min(Math.min(text, scan.textBytes) + scan.fixedTokens, context) + scan.toolTokens;
}

/** Synchronous tokenizer count (decodes the table at once if needed): tests and tools only. */
export function countPromptTokens(provider: Provider, path: string, body: unknown): number {
  const b = isObj(body) ? body : {};
  const model = typeof b.model === "string" ? b.model : "";
  const family = priceFor(provider, model)?.family ?? "";
  const name = encodingFor(provider, model);
  const scan = scanPrompt(provider, path, b, 0, family, model);
  return countText(encoderNow(name), name, scan.kind, b) + scan.fixedTokens;
}

/** UTF-8 size of a text; exported for callers that bound a text they hold. */
export { utf8Bytes };
