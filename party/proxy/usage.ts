import type { Provider, Usage } from "../../schema/pricing";
import { countTextTokens } from "./tokens";
import { endpointKind } from "./estimate";

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const obj = (v: unknown): Obj => (isObj(v) ? v : {});
const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) && v > 0 ? Math.floor(v) : 0);

// OpenAI counts cached tokens and cache writes (`cache_write_tokens`, billed above input from
// GPT-5.6 on) inside prompt_tokens/input_tokens, as its breakdown; Usage wants them apart.
function openaiUsage(u: unknown): Usage | undefined {
  if (!isObj(u)) return undefined;
  const chat = typeof u.prompt_tokens === "number";
  if (!chat && typeof u.input_tokens !== "number") return undefined;
  const prompt = num(chat ? u.prompt_tokens : u.input_tokens);
  const details = obj(chat ? u.prompt_tokens_details : u.input_tokens_details);
  const cached = Math.min(prompt, num(details.cached_tokens));
  const written = Math.min(prompt - cached, num(details.cache_write_tokens));
  return {
    inputTokens: prompt - cached - written,
    outputTokens: num(chat ? u.completion_tokens : u.output_tokens),
    cachedInputTokens: cached,
    cacheWriteTokens: written,
  };
}

// cache_creation_input_tokens counts writes of both TTLs; the 1-hour ones cost more, so they
// are split out when the breakdown is there.
function anthropicWrites(u: Obj): Pick<Usage, "cacheWriteTokens" | "cacheWrite1hTokens"> {
  const all = num(u.cache_creation_input_tokens);
  const hour = Math.min(all, num(obj(u.cache_creation).ephemeral_1h_input_tokens));
  return hour ? { cacheWriteTokens: all - hour, cacheWrite1hTokens: hour } : { cacheWriteTokens: all };
}

function anthropicTools(u: Obj): Pick<Usage, "serverTools"> {
  const s = obj(u.server_tool_use);
  const tools: Record<string, number> = {};
  if (num(s.web_search_requests)) tools.web_search = num(s.web_search_requests);
  if (num(s.web_fetch_requests)) tools.web_fetch = num(s.web_fetch_requests);
  return Object.keys(tools).length ? { serverTools: tools } : {};
}

function anthropicUsage(u: unknown): Usage | undefined {
  if (!isObj(u) || (typeof u.input_tokens !== "number" && typeof u.output_tokens !== "number")) return undefined;
  return {
    inputTokens: num(u.input_tokens),
    outputTokens: num(u.output_tokens),
    cachedInputTokens: num(u.cache_read_input_tokens),
    ...anthropicWrites(u),
    ...anthropicTools(u),
  };
}

// OpenAI reports built-in tool calls as output items, not in usage.
const OPENAI_TOOL_ITEMS: Record<string, string> = { web_search_call: "web_search", file_search_call: "file_search", code_interpreter_call: "code_interpreter" };
function openaiTools(output: unknown): Pick<Usage, "serverTools"> {
  const tools: Record<string, number> = {};
  if (Array.isArray(output)) for (const item of output) {
    const tool = OPENAI_TOOL_ITEMS[String(obj(item).type)];
    if (tool) tools[tool] = (tools[tool] ?? 0) + 1;
  }
  return Object.keys(tools).length ? { serverTools: tools } : {};
}

/** Usage from a non-streamed response body; undefined when the body carries none (e.g. errors). */
export function usageFromJson(provider: Provider, path: string, json: unknown): Usage | undefined {
  if (!isObj(json)) return undefined;
  if (provider === "anthropic") return anthropicUsage(json.usage);
  const usage = openaiUsage(json.usage);
  if (!usage) return undefined;
  return endpointKind(provider, path) === "embeddings" ? { ...usage, outputTokens: 0 } : { ...usage, ...openaiTools(json.output) };
}

// Responses API deltas that are billed output text (audio deltas are base64, not text).
const DELTAS = new Set(["response.output_text.delta", "response.function_call_arguments.delta", "response.refusal.delta"]);
const FINAL = new Set(["response.completed", "response.incomplete", "response.failed"]);

// Named events whose payload we read; the rest (pings, *.done events repeating the whole text)
// are skipped before JSON.parse. Chat completion chunks carry no event name and are always read.
const WANTED = new Set([
  ...DELTAS,
  ...FINAL,
  "message_start",
  "message_delta",
  "content_block_delta",
]);

/**
 * Follows an SSE response as it is relayed, keeping only what billing needs: the provider's
 * usage and the generated text (for counting when the stream ends early). Work per chunk is
 * proportional to the chunk: only the unterminated tail of the previous chunk is carried over.
 */
export class StreamUsageTracker {
  private readonly decoder = new TextDecoder();
  private pending = "";
  private skipLF = false; // a chunk ended in CR: a leading LF in the next one is the same line break
  private event = "";
  private data: string[] = [];
  private readonly text: string[] = [];
  private usage?: Usage;
  private started?: Usage; // Anthropic message_start: input side known, output not yet

  constructor(
    private readonly provider: Provider,
    private readonly path: string,
    private readonly model: string,
  ) {}

  push(chunk: Uint8Array | string): void {
    this.scan(typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true }));
  }

  /**
   * `usage` is the provider's own figure when the stream delivered it. If an Anthropic stream
   * stopped after message_start, the exact input side is kept and output is counted from the
   * text; otherwise `usage` is undefined and the caller must count `outputText` itself.
   */
  finish(): { usage?: Usage; outputText: string } {
    this.scan(this.decoder.decode());
    if (this.pending) this.line(this.pending);
    this.pending = "";
    this.dispatch(); // a final event may lack its blank line when the connection was cut
    return this.peek();
  }

  /** The provider's own usage, once the stream has delivered it. */
  peekUsage(): Usage | undefined {
    return this.usage;
  }

  /** Whether the provider reported the input side (Anthropic's message_start). */
  get inputKnown(): boolean {
    return this.usage !== undefined || this.started !== undefined;
  }

  /** What the stream has produced so far, without ending it. */
  peek(): { usage?: Usage; outputText: string } {
    const outputText = this.text.join("");
    let usage = this.usage;
    if (!usage && this.started) {
      const counted = countTextTokens(this.provider, this.model, outputText);
      usage = { ...this.started, outputTokens: Math.max(this.started.outputTokens, counted) };
    }
    if (usage && endpointKind(this.provider, this.path) === "embeddings") usage = { ...usage, outputTokens: 0 };
    return usage ? { usage, outputText } : { outputText };
  }

  private scan(s: string): void {
    let start = 0;
    if (this.skipLF && s.length > 0) {
      if (s.charCodeAt(0) === 10) start = 1;
      this.skipLF = false;
    }
    for (let i = start; i < s.length; i++) {
      const ch = s.charCodeAt(i);
      if (ch !== 10 && ch !== 13) continue;
      const line = this.pending + s.slice(start, i);
      this.pending = "";
      if (ch === 13) {
        if (i + 1 === s.length) this.skipLF = true;
        else if (s.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
      this.line(line);
    }
    if (start < s.length) this.pending += s.slice(start);
  }

  private line(l: string): void {
    if (l === "") return this.dispatch();
    if (l.charCodeAt(0) === 58) return; // ":" comment / keep-alive
    const colon = l.indexOf(":");
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? "" : l.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
  }

  private dispatch(): void {
    const { event, data } = this;
    this.event = "";
    this.data = [];
    if (data.length === 0 || (event !== "" && !WANTED.has(event))) return;
    const payload = data.join("\n");
    if (payload === "[DONE]") return;
    let json: unknown;
    try {
      json = JSON.parse(payload);
    } catch {
      return; // truncated or non-JSON event: nothing billable in it
    }
    if (!isObj(json)) return;
    if (this.provider === "anthropic") this.anthropic(json);
    else this.openai(json);
  }

  private out(v: unknown): void {
    if (typeof v === "string" && v !== "") this.text.push(v);
  }

  private openai(j: Obj): void {
    if (typeof j.type === "string") {
      // Responses API
      if (DELTAS.has(j.type)) this.out(j.delta);
      else if (FINAL.has(j.type)) {
        const u = openaiUsage(obj(j.response).usage);
        if (u) this.usage = { ...u, ...openaiTools(obj(j.response).output) };
      }
      return;
    }
    // Chat / legacy completions chunk; with include_usage the last one has choices: [] and usage.
    if (Array.isArray(j.choices)) {
      for (const c of j.choices) {
        const choice = obj(c);
        const delta = obj(choice.delta);
        this.out(choice.text);
        this.out(delta.content);
        this.out(delta.refusal);
        this.out(obj(delta.function_call).arguments);
        if (Array.isArray(delta.tool_calls)) for (const t of delta.tool_calls) this.out(obj(obj(t).function).arguments);
      }
    }
    this.usage = openaiUsage(j.usage) ?? this.usage;
  }

  private anthropic(j: Obj): void {
    if (j.type === "content_block_delta") {
      const d = obj(j.delta);
      this.out(d.text);
      this.out(d.partial_json);
      this.out(d.thinking);
    } else if (j.type === "message_start") {
      this.started = anthropicUsage(obj(j.message).usage);
    } else if (j.type === "message_delta" && isObj(j.usage)) {
      // output_tokens here is cumulative; newer API versions may also restate input/cache counts.
      const u = j.usage;
      const base = this.started ?? { inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0 };
      const pick = (v: unknown, fallback: number) => (typeof v === "number" ? num(v) : fallback);
      const restated = typeof u.cache_creation_input_tokens === "number" ? anthropicWrites(u) : { cacheWriteTokens: base.cacheWriteTokens, ...(base.cacheWrite1hTokens && { cacheWrite1hTokens: base.cacheWrite1hTokens }) };
      const tools = anthropicTools(u);
      this.usage = {
        inputTokens: pick(u.input_tokens, base.inputTokens),
        outputTokens: pick(u.output_tokens, base.outputTokens),
        cachedInputTokens: pick(u.cache_read_input_tokens, base.cachedInputTokens),
        ...restated,
        ...(tools.serverTools ? tools : base.serverTools ? { serverTools: base.serverTools } : {}),
      };
    }
  }
}

/**
 * OpenAI only reports usage on a chat/completions stream when asked, so always ask. Clients
 * that did not ask will see one extra final chunk with `choices: []` and `usage` (the official
 * SDKs handle it; hand-rolled `choices[0]` readers may not); clients that said `false` do not
 * (hide-usage.ts takes the chunk out of their stream).
 */
export function withStreamUsage<T>(provider: Provider, path: string, body: T): T {
  if (provider !== "openai" || !isObj(body) || body.stream !== true) return body;
  const kind = endpointKind(provider, path);
  if (kind !== "chat" && kind !== "completions") return body;
  const options = obj(body.stream_options);
  if (options.include_usage === true) return body;
  return { ...body, stream_options: { ...options, include_usage: true } } as T;
}
