// Local stand-in for the OpenAI and Anthropic HTTP APIs. It plays the provider
// behind the proxy in integration tests, the demo and benchmarks, so bodies and
// SSE framing follow the real APIs closely enough for the official SDKs to parse.
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { getEncoding, type Tiktoken } from "js-tiktoken";
import { imageSize } from "image-size";

export type Behavior = {
  status?: number;
  delayMs?: number;
  hang?: boolean;
  chunkDelayMs?: number;
  chunks?: number;
  promptTokens?: number;
  completionTokens?: number;
  cachedTokens?: number;
  omitUsage?: boolean;
  /** Bills this many times the counted input tokens (a provider whose tokenizer counts more than ours). */
  inputFactor?: number;
  /** Streams: waits this long before the final event, with everything else (usage included) sent. */
  holdBeforeEndMs?: number;
  /** Answer with these tool calls instead of text (non-streaming answers only). */
  toolCalls?: ToolCall[];
};

export type ToolCall = { name: string; arguments: Record<string, unknown> };

export type Recorded = {
  method: string;
  /** Pathname only; the query string lives in `url`. */
  path: string;
  url: string;
  headers: Record<string, string>;
  body: any;
  aborted: boolean;
  at: number;
  /** Stream events written so far, in order. */
  sent: string[];
};

export interface Upstream {
  url: string;
  requests: Recorded[];
  next(b: Behavior, times?: number): void;
  setDefault(b: Behavior): void;
  reset(): void;
  close(): Promise<void>;
}

type Provider = "openai" | "anthropic";
type Route = "chat" | "responses" | "embeddings" | "messages";

// ---------------------------------------------------------------- tokens

const encoders = new Map<string, Tiktoken>();
function encoder(name: "o200k_base" | "cl100k_base"): Tiktoken {
  let enc = encoders.get(name);
  if (!enc) {
    enc = getEncoding(name);
    encoders.set(name, enc);
  }
  return enc;
}

function tokenize(text: string, anthropic: boolean): number {
  if (!text) return 0;
  return encoder(anthropic ? "cl100k_base" : "o200k_base").encode(text).length;
}

// Non-text parts are billed the way the providers publish it, from the attachment itself:
// images by their pixel size per model family, PDFs per page (an image of the page plus its
// text). Written here from the providers' documentation, independently of the proxy's own
// bounds, so the tests compare Governor's reservations with a provider's bill.
const IMAGE_FALLBACK = 85;
const PDF_TEXT_PER_PAGE = 1_500;
const TILE_MODELS: Array<[RegExp, number, number]> = [
  [/^gpt-4o-mini/, 2833, 5667],
  [/^(o1|o3)(?!-mini)/, 75, 150],
  [/^gpt-5(-chat)?(-\d|$|-latest)/, 70, 140],
  [/^(gpt-4o|gpt-4\.1(?!-)|gpt-4-turbo|chatgpt-4o)/, 85, 170],
];
const PATCH_MODELS: Array<[RegExp, number]> = [
  [/^gpt-4\.1-mini/, 1.62],
  [/^gpt-4\.1-nano/, 2.46],
  [/^gpt-5-mini/, 1.2],
  [/^gpt-5-nano/, 1.5],
  [/^o4-mini/, 1.72],
];

function imageDims(part: any): { width: number; height: number } | undefined {
  const raw = part?.source?.data ?? part?.image_url?.url ?? part?.image_url ?? part?.file?.file_data ?? part?.file_data;
  if (typeof raw !== "string") return undefined;
  const b64 = raw.startsWith("data:") ? raw.slice(raw.indexOf(",") + 1) : raw;
  try {
    const r = imageSize(Buffer.from(b64, "base64"));
    return r.width && r.height ? { width: r.width, height: r.height } : undefined;
  } catch {
    return undefined;
  }
}

function imageTokens(model: string, anthropic: boolean, dims: { width: number; height: number } | undefined, detail?: string): number {
  if (!dims) return IMAGE_FALLBACK;
  let { width: w, height: h } = dims;
  if (anthropic) {
    const scale = Math.min(1, 1568 / Math.max(w, h), Math.sqrt(1_150_000 / (w * h)));
    return Math.ceil((Math.floor(w * scale) * Math.floor(h * scale)) / 750);
  }
  const patch = PATCH_MODELS.find(([re]) => re.test(model));
  if (patch) return Math.ceil(Math.min(1536, Math.ceil(w / 32) * Math.ceil(h / 32)) * patch[1]);
  const [, base, tile] = TILE_MODELS.find(([re]) => re.test(model)) ?? [/x/, 85, 170];
  if (detail === "low") return base;
  const fit = Math.min(1, 2048 / Math.max(w, h));
  (w = Math.floor(w * fit)), (h = Math.floor(h * fit));
  const short = Math.min(1, 768 / Math.min(w, h));
  (w = Math.floor(w * short)), (h = Math.floor(h * short));
  return base + tile * Math.ceil(w / 512) * Math.ceil(h / 512);
}

function pdfTokens(part: any, model: string, anthropic: boolean): number {
  const raw = part?.source?.data ?? part?.file?.file_data ?? part?.file_data;
  if (typeof raw !== "string") return IMAGE_FALLBACK;
  const b64 = raw.startsWith("data:") ? raw.slice(raw.indexOf(",") + 1) : raw;
  const pages = Buffer.from(b64, "base64").toString("latin1").match(/\/Type\s*\/Page(?![a-zA-Z])/g)?.length ?? 1;
  const pageImage = anthropic ? 1_600 : imageTokens(model, false, { width: 1224, height: 1584 });
  return pages * (pageImage + PDF_TEXT_PER_PAGE);
}

let billingModel = "";
let billingAnthropic = false;

function partText(part: any): { text: string; extra: number } {
  if (part == null) return { text: "", extra: 0 };
  if (typeof part === "string") return { text: part, extra: 0 };
  if (Array.isArray(part)) {
    let text = "";
    let extra = 0;
    for (const p of part) {
      const r = partText(p);
      text += r.text;
      extra += r.extra;
    }
    return { text, extra };
  }
  if (typeof part !== "object") return { text: String(part), extra: 0 };
  const t = part.type;
  if (t === "image_url" || t === "image" || t === "input_image") {
    return { text: "", extra: imageTokens(billingModel, billingAnthropic, imageDims(part), part?.image_url?.detail ?? part?.detail) };
  }
  if (t === "document" || t === "input_file" || t === "file") {
    if (part?.source?.type === "text") return { text: String(part.source.data ?? ""), extra: 0 };
    return { text: "", extra: pdfTokens(part, billingModel, billingAnthropic) };
  }
  if (typeof part.text === "string") return { text: part.text, extra: 0 };
  if (part.content !== undefined) return partText(part.content);
  if (part.input !== undefined) return { text: JSON.stringify(part.input), extra: 0 };
  if (typeof part.arguments === "string") return { text: part.arguments, extra: 0 };
  if (typeof part.output === "string") return { text: part.output, extra: 0 };
  return { text: "", extra: 0 };
}

// Mirrors OpenAI's cookbook accounting (3 per message + role + content, 3 to
// prime the reply) so numbers look plausible; exactness is not the point,
// determinism is.
function countMessages(messages: any[], anthropic: boolean): number {
  let n = 3;
  for (const m of messages) {
    if (m == null) continue;
    if (typeof m === "string") {
      n += 3 + tokenize(m, anthropic);
      continue;
    }
    n += 3 + tokenize(typeof m.role === "string" ? m.role : "", anthropic);
    if (typeof m.name === "string") n += 1 + tokenize(m.name, anthropic);
    const { text, extra } = partText(m.content !== undefined ? m.content : m);
    n += tokenize(text, anthropic) + extra;
    if (Array.isArray(m.tool_calls)) n += tokenize(JSON.stringify(m.tool_calls), anthropic);
  }
  return n;
}

/**
 * The prompt-token count the stand-in reports for a request body when no
 * `promptTokens` override is set. Exported so tests can predict it.
 */
export function countPromptTokens(route: Route, body: any): number {
  const b = body && typeof body === "object" ? body : {};
  billingModel = typeof b.model === "string" ? b.model : "";
  billingAnthropic = route === "messages";
  switch (route) {
    case "chat": {
      let n = countMessages(Array.isArray(b.messages) ? b.messages : [], false);
      if (b.tools) n += tokenize(JSON.stringify(b.tools), false);
      return n;
    }
    case "responses": {
      const items: any[] = [];
      if (b.instructions) items.push({ role: "system", content: b.instructions });
      if (typeof b.input === "string") items.push({ role: "user", content: b.input });
      else if (Array.isArray(b.input)) items.push(...b.input);
      let n = countMessages(items, false);
      if (b.tools) n += tokenize(JSON.stringify(b.tools), false);
      return n;
    }
    case "messages": {
      const items: any[] = [];
      if (b.system) items.push({ role: "system", content: b.system });
      if (Array.isArray(b.messages)) items.push(...b.messages);
      let n = countMessages(items, true);
      // Anthropic's tool-use system prompt (~346 tokens for Claude 4 with tool_choice auto).
      if (Array.isArray(b.tools) && b.tools.length) n += tokenize(JSON.stringify(b.tools), true) + 346;
      return n;
    }
    case "embeddings": {
      const input = b.input;
      const list: any[] = Array.isArray(input) ? input : [input];
      let n = 0;
      // A flat number[] is one pre-tokenised input; number[][] is several.
      if (list.length > 0 && list.every((x) => typeof x === "number")) return list.length;
      for (const x of list) {
        if (typeof x === "string") n += tokenize(x, false);
        else if (Array.isArray(x)) n += x.length;
      }
      return n;
    }
  }
}

// ---------------------------------------------------------------- reply text

const WORDS = ["Hello", " from", " the", " upstream", " stand", " in", " model", " with", " a", " reply"];

/** Text pieces the stand-in emits for a reply of `n` pieces. */
export function replyPieces(n: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    out.push(i < WORDS.length ? WORDS[i] : ` word${i}`);
  }
  return out;
}

type Plan = {
  pieces: string[];
  text: string;
  promptTokens: number;
  outputTokens: number;
  cachedTokens: number;
  truncated: boolean;
};

function maxTokensOf(route: Route, body: any): number | undefined {
  const b = body ?? {};
  const v =
    route === "chat"
      ? b.max_completion_tokens ?? b.max_tokens
      : route === "responses"
        ? b.max_output_tokens
        : route === "messages"
          ? b.max_tokens
          : undefined;
  return typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : undefined;
}

function plan(route: Route, body: any, b: Behavior): Plan {
  let n = Math.max(0, Math.floor(b.chunks ?? 5));
  const cap = maxTokensOf(route, body);
  let truncated = false;
  let outputTokens = n * 2;
  if (cap !== undefined && outputTokens > cap) {
    truncated = true;
    outputTokens = cap;
    n = Math.min(n, Math.ceil(cap / 2));
  }
  if (b.completionTokens !== undefined) outputTokens = b.completionTokens;
  const pieces = replyPieces(n);
  return {
    pieces,
    text: pieces.join(""),
    promptTokens: b.promptTokens ?? Math.ceil(countPromptTokens(route, body) * (b.inputFactor ?? 1)),
    outputTokens,
    cachedTokens: b.cachedTokens ?? 0,
    truncated,
  };
}

// ---------------------------------------------------------------- helpers

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
function rid(prefix: string, len = 24): string {
  const bytes = randomBytes(len);
  let s = prefix;
  for (let i = 0; i < len; i++) s += ALNUM[bytes[i] % ALNUM.length];
  return s;
}

function nowSec(): number {
  return Math.floor(Date.now() / 1000);
}

function routeOf(pathname: string): Route | undefined {
  let p = pathname.replace(/\/+$/, "");
  if (p.startsWith("/v1/")) p = p.slice(3);
  switch (p) {
    case "/chat/completions":
      return "chat";
    case "/responses":
      return "responses";
    case "/embeddings":
      return "embeddings";
    case "/messages":
      return "messages";
    default:
      return undefined;
  }
}

function providerOf(route: Route | undefined, pathname: string): Provider {
  if (route === "messages") return "anthropic";
  if (!route && /(^|\/)(messages|complete)(\/|$)/.test(pathname)) return "anthropic";
  return "openai";
}

const OPENAI_ERRORS: Record<number, { type: string; code: string | null; message: string }> = {
  400: { type: "invalid_request_error", code: null, message: "Invalid request." },
  401: { type: "invalid_request_error", code: "invalid_api_key", message: "Incorrect API key provided." },
  403: { type: "invalid_request_error", code: "unsupported_country_region_territory", message: "Forbidden." },
  404: { type: "invalid_request_error", code: "not_found", message: "The requested resource does not exist." },
  429: { type: "requests", code: "rate_limit_exceeded", message: "Rate limit reached for requests." },
  500: { type: "server_error", code: null, message: "The server had an error while processing your request." },
  502: { type: "server_error", code: null, message: "Bad gateway." },
  503: { type: "server_error", code: null, message: "The engine is currently overloaded, please try again later." },
};

const ANTHROPIC_ERRORS: Record<number, { type: string; message: string }> = {
  400: { type: "invalid_request_error", message: "Invalid request." },
  401: { type: "authentication_error", message: "invalid x-api-key" },
  403: { type: "permission_error", message: "Your API key does not have permission to use the specified resource." },
  404: { type: "not_found_error", message: "The requested resource could not be found." },
  413: { type: "request_too_large", message: "Request exceeds the maximum allowed number of bytes." },
  429: { type: "rate_limit_error", message: "Number of request tokens has exceeded your per-minute rate limit." },
  500: { type: "api_error", message: "Internal server error" },
  529: { type: "overloaded_error", message: "Overloaded" },
};

function errorBody(provider: Provider, status: number, message?: string): unknown {
  if (provider === "anthropic") {
    const e = ANTHROPIC_ERRORS[status] ?? {
      type: status >= 500 ? "api_error" : "invalid_request_error",
      message: `Upstream stand-in error ${status}`,
    };
    return { type: "error", error: { type: e.type, message: message ?? e.message } };
  }
  const e = OPENAI_ERRORS[status] ?? {
    type: status >= 500 ? "server_error" : "invalid_request_error",
    code: null,
    message: `Upstream stand-in error ${status}`,
  };
  return { error: { message: message ?? e.message, type: e.type, param: null, code: e.code } };
}

function requestIdHeader(provider: Provider): [string, string] {
  return provider === "anthropic" ? ["request-id", rid("req_")] : ["x-request-id", rid("req_", 32)];
}

// ---------------------------------------------------------------- bodies

function chatCompletion(body: any, p: Plan, omitUsage: boolean): unknown {
  return {
    id: rid("chatcmpl-", 29),
    object: "chat.completion",
    created: nowSec(),
    model: body?.model ?? "gpt-4o-mini",
    choices: [
      {
        index: 0,
        message: { role: "assistant", content: p.text, refusal: null, annotations: [] },
        logprobs: null,
        finish_reason: p.truncated ? "length" : "stop",
      },
    ],
    ...(omitUsage ? {} : { usage: openaiChatUsage(p) }),
    service_tier: "default",
    system_fingerprint: "fp_upstream",
  };
}

function openaiChatUsage(p: Plan) {
  return {
    prompt_tokens: p.promptTokens,
    completion_tokens: p.outputTokens,
    total_tokens: p.promptTokens + p.outputTokens,
    prompt_tokens_details: { cached_tokens: p.cachedTokens, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: 0,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  };
}

function responsesUsage(p: Plan) {
  return {
    input_tokens: p.promptTokens,
    input_tokens_details: { cached_tokens: p.cachedTokens, cache_write_tokens: 0 },
    output_tokens: p.outputTokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: p.promptTokens + p.outputTokens,
  };
}

type ResponseState = "in_progress" | "completed" | "incomplete";

function responseObject(
  id: string,
  createdAt: number,
  body: any,
  state: ResponseState,
  output: unknown[],
  usage: unknown | undefined,
): Record<string, unknown> {
  const b = body ?? {};
  const obj: Record<string, unknown> = {
    id,
    object: "response",
    created_at: createdAt,
    status: state,
    background: false,
    completed_at: state === "in_progress" ? null : nowSec(),
    error: null,
    incomplete_details: state === "incomplete" ? { reason: "max_output_tokens" } : null,
    instructions: b.instructions ?? null,
    max_output_tokens: b.max_output_tokens ?? null,
    max_tool_calls: null,
    model: b.model ?? "gpt-4o-mini",
    output,
    parallel_tool_calls: true,
    previous_response_id: b.previous_response_id ?? null,
    prompt_cache_key: null,
    reasoning: { effort: null, summary: null },
    safety_identifier: null,
    service_tier: "default",
    store: b.store ?? true,
    temperature: b.temperature ?? 1,
    text: { format: { type: "text" }, verbosity: "medium" },
    tool_choice: b.tool_choice ?? "auto",
    tools: b.tools ?? [],
    top_logprobs: 0,
    top_p: b.top_p ?? 1,
    truncation: "disabled",
    user: null,
    metadata: b.metadata ?? {},
  };
  // In-progress snapshots carry usage: null, as the real stream does; undefined means omitUsage.
  if (usage !== undefined) obj.usage = usage;
  return obj;
}

function outputMessage(itemId: string, text: string, status: ResponseState) {
  return {
    id: itemId,
    type: "message",
    status,
    content: [{ type: "output_text", annotations: [], logprobs: [], text }],
    role: "assistant",
  };
}

function anthropicUsage(p: Plan, outputTokens: number) {
  return {
    input_tokens: p.promptTokens,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: p.cachedTokens,
    cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 },
    output_tokens: outputTokens,
    service_tier: "standard",
  };
}

function anthropicMessage(id: string, body: any, content: unknown[], stop: string | null, usage: unknown) {
  const msg: Record<string, unknown> = {
    id,
    type: "message",
    role: "assistant",
    model: body?.model ?? "claude-sonnet-4-6",
    content,
    stop_reason: stop,
    stop_sequence: null,
  };
  if (usage !== undefined) msg.usage = usage;
  return msg;
}

function embeddingVector(text: string, dims: number): number[] {
  // FNV-1a seeded xorshift: same input, same vector, across runs.
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  let s = h || 1;
  const v: number[] = [];
  let norm = 0;
  for (let i = 0; i < dims; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    const x = (s / 0xffffffff) * 2 - 1;
    v.push(x);
    norm += x * x;
  }
  norm = Math.sqrt(norm) || 1;
  // Round-trip through float32 so float and base64 encodings agree exactly.
  return Array.from(new Float32Array(v.map((x) => x / norm)));
}

// ---------------------------------------------------------------- server

export async function startUpstream(opts: { port?: number; host?: string } = {}): Promise<Upstream> {
  // Building the BPE tables takes ~0.5 s; doing it now keeps that cost out of
  // the first request, where it would distort latency measurements.
  encoder("o200k_base");
  encoder("cl100k_base");

  const host = opts.host ?? "127.0.0.1";
  const requests: Recorded[] = [];
  let queue: Behavior[] = [];
  let fallback: Behavior = {};
  let closing = false;
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();

  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
    return t;
  };

  const server = http.createServer((req, res) => {
    const at = Date.now();
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("error", () => {});
    req.on("end", () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      let body: any = null;
      let badJson = false;
      if (raw.length > 0) {
        try {
          body = JSON.parse(raw);
        } catch {
          body = raw;
          badJson = true;
        }
      }
      const url = req.url ?? "/";
      const pathname = url.split("?")[0];
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) {
        if (v !== undefined) headers[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : v;
      }
      const rec: Recorded = { method: req.method ?? "GET", path: pathname, url, headers, body, aborted: false, at, sent: [] };
      requests.push(rec);
      const behavior = queue.length > 0 ? queue.shift()! : fallback;
      try {
        handle(res, rec, behavior, badJson);
      } catch (e) {
        // A body no real provider would take (the fuzz tests send such): its 400, not a crash.
        if (!res.headersSent) {
          res.writeHead(400, { "content-type": "application/json" });
          res.end(JSON.stringify({ error: { type: "invalid_request_error", message: `stand-in could not read the body: ${(e as Error).message}` } }));
        } else res.destroy();
      }
    });
  });

  function handle(res: http.ServerResponse, rec: Recorded, b: Behavior, badJson: boolean) {
    let done = false;
    const pending = new Set<NodeJS.Timeout>();
    const wait = (ms: number, fn: () => void) => {
      const t = later(ms, () => {
        pending.delete(t);
        if (!done) fn();
      });
      pending.add(t);
    };
    // "close" before "finish" is the only reliable signal that the client went
    // away mid-response (req "close" fires as soon as the body is consumed).
    res.on("close", () => {
      if (!res.writableFinished && !closing) rec.aborted = true;
      done = true;
      for (const t of pending) {
        clearTimeout(t);
        timers.delete(t);
      }
    });
    const finish = () => {
      done = true;
    };
    res.on("finish", finish);

    if (b.hang) return;

    const route = routeOf(rec.path);
    const provider = providerOf(route, rec.path);
    const [ridName, ridValue] = requestIdHeader(provider);

    const sendJson = (status: number, obj: unknown) => {
      const data = JSON.stringify(obj);
      res.writeHead(status, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(data),
        [ridName]: ridValue,
      });
      res.end(data);
    };

    const respond = () => {
      if (done) return;
      if (b.status !== undefined && b.status >= 400) return sendJson(b.status, errorBody(provider, b.status));
      // Anthropic's free token count: the input the same body would bill.
      if (rec.method === "POST" && /^(\/v1)?\/messages\/count_tokens$/.test(rec.path) && rec.body && typeof rec.body === "object") {
        return sendJson(200, { input_tokens: countPromptTokens("messages", rec.body) });
      }
      if (!route || rec.method !== "POST") {
        return sendJson(404, errorBody(provider, 404, `Unknown request URL: ${rec.method} ${rec.path}`));
      }
      if (badJson || rec.body === null || typeof rec.body !== "object") {
        return sendJson(400, errorBody(provider, 400, "We could not parse the JSON body of your request."));
      }
      const status = b.status ?? 200;
      const body = rec.body;
      const stream = body.stream === true && route !== "embeddings";
      const p = plan(route, body, b);
      if (stream && b.toolCalls?.length) return sendJson(500, errorBody(provider, 500, "the stand-in streams text only; ask without stream for tool calls"));
      if (!stream) {
        return sendJson(status, nonStreaming(route, body, p, b));
      }
      res.writeHead(status, {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
        connection: "keep-alive",
        [ridName]: ridValue,
      });
      res.flushHeaders();
      const events = streamEvents(route, body, p, b);
      let i = 0;
      const step = () => {
        if (done) return;
        if (i >= events.length) {
          res.end();
          return;
        }
        rec.sent.push(events[i]);
        res.write(events[i++]);
        if (i >= events.length) {
          res.end();
          return;
        }
        if (i === events.length - 1 && b.holdBeforeEndMs) return wait(b.holdBeforeEndMs, step);
        const d = b.chunkDelayMs ?? 0;
        if (d > 0) wait(d, step);
        else setImmediate(step);
      };
      step();
    };

    if (b.delayMs && b.delayMs > 0) wait(b.delayMs, respond);
    else respond();
  }

  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  // Clients (undici, the SDKs, our proxy) pool connections; a server that drops
  // idle sockets sooner than they do causes sporadic ECONNRESET on reuse.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  server.requestTimeout = 0;

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const url = `http://${host}:${addr.port}`;

  return {
    url,
    requests,
    next(b: Behavior, times = 1) {
      for (let i = 0; i < times; i++) queue.push({ ...b });
    },
    setDefault(b: Behavior) {
      fallback = { ...b };
    },
    reset() {
      queue = [];
      fallback = {};
      requests.length = 0;
    },
    close() {
      closing = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        for (const s of sockets) s.destroy();
        sockets.clear();
      });
    },
  };
}

/** The provider's own shape of a turn that calls tools: what an agent framework acts on. */
function toolCallAnswer(route: Route, body: any, p: Plan, calls: ToolCall[], omit: boolean): unknown {
  const ids = calls.map(() => rid("call_", 24));
  switch (route) {
    case "chat":
      return {
        ...(chatCompletion(body, p, omit) as object),
        choices: [
          {
            index: 0,
            message: {
              role: "assistant",
              content: null,
              refusal: null,
              annotations: [],
              tool_calls: calls.map((c, i) => ({ id: ids[i], type: "function", function: { name: c.name, arguments: JSON.stringify(c.arguments) } })),
            },
            logprobs: null,
            finish_reason: "tool_calls",
          },
        ],
      };
    case "responses":
      return responseObject(
        rid("resp_", 40),
        nowSec(),
        body,
        "completed",
        calls.map((c, i) => ({ id: rid("fc_", 40), type: "function_call", status: "completed", call_id: ids[i], name: c.name, arguments: JSON.stringify(c.arguments) })),
        omit ? undefined : responsesUsage(p),
      );
    case "messages":
      return anthropicMessage(
        rid("msg_"),
        body,
        calls.map((c, i) => ({ type: "tool_use", id: ids[i].replace("call_", "toolu_"), name: c.name, input: c.arguments })),
        "tool_use",
        omit ? undefined : anthropicUsage(p, p.outputTokens),
      );
    default:
      return undefined;
  }
}

function nonStreaming(route: Route, body: any, p: Plan, b: Behavior): unknown {
  const omit = !!b.omitUsage;
  if (b.toolCalls?.length && route !== "embeddings") return toolCallAnswer(route, body, p, b.toolCalls, omit);
  switch (route) {
    case "chat":
      return chatCompletion(body, p, omit);
    case "responses": {
      const output = [outputMessage(rid("msg_", 40), p.text, p.truncated ? "incomplete" : "completed")];
      return responseObject(
        rid("resp_", 40),
        nowSec(),
        body,
        p.truncated ? "incomplete" : "completed",
        output,
        omit ? undefined : responsesUsage(p),
      );
    }
    case "messages":
      return anthropicMessage(
        rid("msg_"),
        body,
        [{ type: "text", text: p.text }],
        p.truncated ? "max_tokens" : "end_turn",
        omit ? undefined : anthropicUsage(p, p.outputTokens),
      );
    case "embeddings": {
      const input = body.input;
      const list: any[] =
        Array.isArray(input) && !input.every((x: unknown) => typeof x === "number") ? input : [input];
      const dims = typeof body.dimensions === "number" && body.dimensions > 0 ? Math.floor(body.dimensions) : 8;
      const base64 = body.encoding_format === "base64";
      const data = list.map((x, index) => {
        const vec = embeddingVector(typeof x === "string" ? x : JSON.stringify(x), dims);
        return {
          object: "embedding",
          index,
          embedding: base64 ? Buffer.from(new Float32Array(vec).buffer).toString("base64") : vec,
        };
      });
      const out: Record<string, unknown> = {
        object: "list",
        data,
        model: body.model ?? "text-embedding-3-small",
      };
      if (!omit) out.usage = { prompt_tokens: p.promptTokens, total_tokens: p.promptTokens };
      return out;
    }
  }
}

function sse(data: unknown, event?: string): string {
  return (event ? `event: ${event}\n` : "") + `data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;
}

function streamEvents(route: Route, body: any, p: Plan, b: Behavior): string[] {
  const omit = !!b.omitUsage;
  const out: string[] = [];
  if (route === "chat") {
    const id = rid("chatcmpl-", 29);
    const created = nowSec();
    const model = body.model ?? "gpt-4o-mini";
    const includeUsage = body.stream_options?.include_usage === true;
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) => ({
      id,
      object: "chat.completion.chunk",
      created,
      model,
      service_tier: "default",
      system_fingerprint: "fp_upstream",
      choices,
      // Real OpenAI puts usage: null on every chunk once usage was requested.
      ...(includeUsage ? { usage: null } : {}),
      ...extra,
    });
    out.push(
      sse(chunk([{ index: 0, delta: { role: "assistant", content: "", refusal: null }, logprobs: null, finish_reason: null }])),
    );
    for (const piece of p.pieces) {
      out.push(sse(chunk([{ index: 0, delta: { content: piece }, logprobs: null, finish_reason: null }])));
    }
    out.push(sse(chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: p.truncated ? "length" : "stop" }])));
    if (includeUsage && !omit) out.push(sse(chunk([], { usage: openaiChatUsage(p) })));
    out.push(sse("[DONE]"));
    return out;
  }

  if (route === "responses") {
    const id = rid("resp_", 40);
    const itemId = rid("msg_", 40);
    const createdAt = nowSec();
    const final: ResponseState = p.truncated ? "incomplete" : "completed";
    let seq = 0;
    const ev = (type: string, data: Record<string, unknown>) => out.push(sse({ type, ...data, sequence_number: seq++ }, type));
    const inProgress = () => responseObject(id, createdAt, body, "in_progress", [], null);
    ev("response.created", { response: inProgress() });
    ev("response.in_progress", { response: inProgress() });
    ev("response.output_item.added", {
      output_index: 0,
      item: { id: itemId, type: "message", status: "in_progress", content: [], role: "assistant" },
    });
    ev("response.content_part.added", {
      item_id: itemId,
      output_index: 0,
      content_index: 0,
      part: { type: "output_text", annotations: [], logprobs: [], text: "" },
    });
    for (const piece of p.pieces) {
      ev("response.output_text.delta", { item_id: itemId, output_index: 0, content_index: 0, delta: piece, logprobs: [] });
    }
    ev("response.output_text.done", { item_id: itemId, output_index: 0, content_index: 0, text: p.text, logprobs: [] });
    ev("response.content_part.done", {
      item_id: itemId,
      output_index: 0,
      content_index: 0,
      part: { type: "output_text", annotations: [], logprobs: [], text: p.text },
    });
    const item = outputMessage(itemId, p.text, final);
    ev("response.output_item.done", { output_index: 0, item });
    // Truncation by max_output_tokens ends with response.incomplete, as upstream does.
    ev(p.truncated ? "response.incomplete" : "response.completed", {
      response: responseObject(id, createdAt, body, final, [item], omit ? undefined : responsesUsage(p)),
    });
    return out;
  }

  // Anthropic messages
  const id = rid("msg_");
  const ev = (type: string, data: Record<string, unknown>) => out.push(sse({ type, ...data }, type));
  ev("message_start", {
    message: anthropicMessage(id, body, [], null, omit ? undefined : anthropicUsage(p, 1)),
  });
  ev("content_block_start", { index: 0, content_block: { type: "text", text: "" } });
  ev("ping", {});
  for (const piece of p.pieces) {
    ev("content_block_delta", { index: 0, delta: { type: "text_delta", text: piece } });
  }
  ev("content_block_stop", { index: 0 });
  ev("message_delta", {
    delta: { stop_reason: p.truncated ? "max_tokens" : "end_turn", stop_sequence: null },
    ...(omit ? {} : { usage: { output_tokens: p.outputTokens } }),
  });
  ev("message_stop", {});
  return out;
}

// ---------------------------------------------------------------- CLI

function isMain(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return path.resolve(entry) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (isMain()) {
  const args = process.argv.slice(2);
  const flag = (name: string): string | undefined => {
    for (let i = 0; i < args.length; i++) {
      if (args[i] === `--${name}`) return args[i + 1];
      if (args[i].startsWith(`--${name}=`)) return args[i].slice(name.length + 3);
    }
    return undefined;
  };
  const num = (name: string) => {
    const v = flag(name);
    return v === undefined ? undefined : Number(v);
  };
  const upstream = await startUpstream({ port: num("port") ?? 0, host: flag("host") });
  const defaults: Behavior = {};
  if (num("delay-ms") !== undefined) defaults.delayMs = num("delay-ms");
  if (num("chunk-delay-ms") !== undefined) defaults.chunkDelayMs = num("chunk-delay-ms");
  if (num("chunks") !== undefined) defaults.chunks = num("chunks");
  upstream.setDefault(defaults);
  console.log(upstream.url);
  const stop = () => {
    void upstream.close().then(() => process.exit(0));
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
