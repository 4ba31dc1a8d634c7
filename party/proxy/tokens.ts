import { Tiktoken } from "js-tiktoken/lite";
import o200kBase from "js-tiktoken/ranks/o200k_base";
import cl100kBase from "js-tiktoken/ranks/cl100k_base";
import type { Provider } from "../../schema/pricing";

export type EndpointKind = "chat" | "completions" | "responses" | "embeddings" | "messages" | "other";

/** `path` is the provider path after the proxy prefix: "v1/chat/completions", "/messages", ... */
export function endpointKind(provider: Provider, path: string): EndpointKind {
  const p = path.split("?")[0].replace(/^\/+/, "").replace(/^v1\//, "").replace(/\/+$/, "");
  if (provider === "anthropic") return p === "messages" ? "messages" : "other";
  if (p === "chat/completions") return "chat";
  if (p === "completions" || p === "responses" || p === "embeddings") return p;
  return "other";
}

// Building a Tiktoken decodes its whole rank table (~0.3s cl100k, ~0.7s o200k of CPU), so each
// is built on first use and kept for the life of the isolate.
let o200k: Tiktoken | undefined;
let cl100k: Tiktoken | undefined;

// gpt-4 (not 4o/4.1/4.5), gpt-3.5 and the embedding models predate o200k; anything newer or
// unrecognised from OpenAI is assumed to use it.
const CL100K_OPENAI = /^(?:ft:)?(?:gpt-4(?![o.])|gpt-3\.5|gpt-35|text-embedding|davinci|babbage)/;

function encoderFor(provider: Provider, model: string): Tiktoken {
  // Anthropic publishes no tokenizer for Claude 3+; cl100k is a stand-in that tends to count
  // somewhat fewer tokens than Claude bills, so treat Anthropic estimates as approximate.
  if (provider === "openai" && !CL100K_OPENAI.test(model)) return (o200k ??= new Tiktoken(o200kBase));
  return (cl100k ??= new Tiktoken(cl100kBase));
}

// js-tiktoken's BPE is quadratic in the length of one pre-token: 16K chars of "aaaa…" takes
// ~18s. Cutting whitespace-free runs into RUN-char pieces bounds that; it only ever prevents
// merges, so counts can rise slightly, never drop. Past EXACT_BUDGET chars per count we
// extrapolate from the ratio seen so far instead of spending more CPU.
const RUN = 32;
const LONG_RUN = new RegExp(`\\S{${RUN + 1}}`, "u");
const RUN_PIECE = new RegExp(`\\S{${RUN}}`, "gu");
const EXACT_BUDGET = 262_144;

class Counter {
  private chars = 0;
  private tokens = 0;
  constructor(private readonly enc: Tiktoken) {}

  text(s: unknown): number {
    if (typeof s !== "string" || s.length === 0) return 0;
    const room = EXACT_BUDGET - this.chars;
    if (s.length <= room) return this.exact(s);
    const head = room > 0 ? this.exact(s.slice(0, room)) : 0;
    return head + Math.ceil(((s.length - Math.max(room, 0)) * this.tokens) / this.chars);
  }

  json(v: unknown): number {
    return v === undefined || v === null ? 0 : this.text(JSON.stringify(v, dropBinary));
  }

  private exact(s: string): number {
    let n = 0;
    if (!LONG_RUN.test(s)) n = this.encode(s);
    else {
      let from = 0;
      for (const m of s.matchAll(RUN_PIECE)) {
        const cut = m.index + m[0].length;
        n += this.encode(s.slice(from, cut));
        from = cut;
      }
      n += this.encode(s.slice(from));
    }
    this.chars += s.length;
    this.tokens += n;
    return n;
  }

  // No special tokens: user text containing "<|endoftext|>" is just text (and must not throw).
  private encode(s: string): number {
    return s ? this.enc.encode(s, [], []).length : 0;
  }
}

// Base64 payloads and opaque blobs are not prompt text; tokenising them would wildly overcount.
const BINARY_KEYS = new Set(["data", "url", "image_url", "file_data", "b64_json", "encrypted_content", "signature"]);
function dropBinary(key: string, value: unknown): unknown {
  return BINARY_KEYS.has(key) && typeof value !== "object" ? undefined : value;
}

// OpenAI cookbook accounting for chat formats; close enough for Claude too.
const PER_MESSAGE = 3;
const PER_NAME = 1;
const REPLY_PRIMING = 3;
// Images/files cannot be sized without decoding them: charge a large high-detail image
// (gpt-4o 2048x768 = 1445 tokens; Claude's ~1.15MP cap ≈ 1600). PDFs may cost far more.
const ATTACHMENT: Record<Provider, number> = { openai: 1445, anthropic: 1600 };
const ATTACHMENT_TYPES = new Set(["image_url", "input_image", "image", "document", "file", "input_file", "input_audio"]);

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const sum = (xs: unknown, f: (x: unknown) => number) => (Array.isArray(xs) ? xs.reduce((n: number, x) => n + f(x), 0) : 0);

function content(c: Counter, provider: Provider, part: unknown): number {
  if (typeof part === "string") return c.text(part);
  if (Array.isArray(part)) return sum(part, (x) => content(c, provider, x));
  if (!isObj(part)) return 0;
  if (typeof part.text === "string") return c.text(part.text);
  if (typeof part.type === "string" && ATTACHMENT_TYPES.has(part.type)) return ATTACHMENT[provider];
  switch (part.type) {
    case "tool_use":
      return c.text(part.name) + c.json(part.input);
    case "function_call":
      return c.text(part.name) + c.text(part.arguments);
    case "tool_result":
      return content(c, provider, part.content);
    case "function_call_output":
      return content(c, provider, part.output);
    case "thinking":
      return c.text(part.thinking);
    case "refusal":
      return c.text(part.refusal);
  }
  return c.json(part);
}

function message(c: Counter, provider: Provider, m: unknown): number {
  if (!isObj(m)) return content(c, provider, m);
  if (typeof m.role !== "string") return content(c, provider, m); // a Responses item such as function_call
  let n = PER_MESSAGE + c.text(m.role) + content(c, provider, m.content);
  if (typeof m.name === "string") n += PER_NAME + c.text(m.name);
  const calls = Array.isArray(m.tool_calls) ? m.tool_calls : m.function_call ? [{ function: m.function_call }] : [];
  for (const call of calls) {
    const fn = isObj(call) && isObj(call.function) ? call.function : {};
    n += c.text(fn.name) + c.text(fn.arguments);
  }
  return n;
}

// Embeddings `input` and legacy completions `prompt`: string | string[] | token ids | token id arrays.
function textOrIds(c: Counter, input: unknown): number {
  if (typeof input === "string") return c.text(input);
  if (!Array.isArray(input)) return 0;
  if (input.every((x) => typeof x === "number")) return input.length; // already token ids
  return sum(input, (x) => textOrIds(c, x));
}

export function countPromptTokens(provider: Provider, path: string, body: unknown): number {
  const b: Obj = isObj(body) ? body : {};
  const c = new Counter(encoderFor(provider, typeof b.model === "string" ? b.model : ""));
  const messages = (xs: unknown) => sum(xs, (m) => message(c, provider, m));
  // Instructions / system prompts are rendered as one more message, overhead included.
  const asMessage = (v: unknown, role = "system") => (v ? message(c, provider, { role, content: v }) : 0);
  switch (endpointKind(provider, path)) {
    case "chat":
      return messages(b.messages) + REPLY_PRIMING + c.json(b.tools) + c.json(b.functions) + c.json(b.response_format);
    case "completions":
      return textOrIds(c, b.prompt);
    case "responses": {
      const input = typeof b.input === "string" ? asMessage(b.input, "user") : messages(b.input);
      const format = isObj(b.text) ? b.text.format : undefined;
      return asMessage(b.instructions) + input + REPLY_PRIMING + c.json(b.tools) + c.json(format);
    }
    case "embeddings":
      return textOrIds(c, b.input);
    case "messages":
      return asMessage(b.system) + messages(b.messages) + REPLY_PRIMING + c.json(b.tools);
    case "other":
      return c.json(body);
  }
}

export function countTextTokens(provider: Provider, model: string, text: string): number {
  return new Counter(encoderFor(provider, model)).text(text);
}


