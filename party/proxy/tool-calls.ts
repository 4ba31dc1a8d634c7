import { canonicalJson, sha256Hex } from "../../lib/chain";
import type { SeenToolCall } from "../../schema/events";
import type { Provider } from "../../schema/pricing";

// The tool calls a proxied request shows: those of its newest assistant turn, i.e. the
// calls the agent ran since its previous request. Loop detection counts each once (by
// the provider's call id); older turns were counted when they were the newest. A history
// kept by the provider (OpenAI's previous_response_id) shows no calls: nothing to count.

const MAX_CALLS = 32;

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

function argsHashOf(args: unknown): string {
  // OpenAI sends arguments as a JSON string: the same arguments spaced differently are the same call.
  let value = args ?? {};
  if (typeof args === "string") {
    try {
      value = JSON.parse(args);
    } catch {
      value = args;
    }
  }
  try {
    return sha256Hex(canonicalJson(value));
  } catch {
    return sha256Hex(String(args));
  }
}

function call(name: unknown, args: unknown, id: unknown, fallbackKey: string): SeenToolCall | undefined {
  if (typeof name !== "string" || !name) return undefined;
  const key = typeof id === "string" && id ? id.slice(0, 256) : fallbackKey;
  return { name: name.slice(0, 256), argsHash: argsHashOf(args), key };
}

function lastAssistant(messages: unknown[], has: (m: Json) => boolean): number {
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (isObject(m) && m.role === "assistant" && has(m)) return i;
  }
  return -1;
}

function openaiChat(messages: unknown[]): SeenToolCall[] {
  const i = lastAssistant(messages, (m) => (Array.isArray(m.tool_calls) && m.tool_calls.length > 0) || isObject(m.function_call));
  if (i < 0) return [];
  const m = messages[i] as Json;
  const out: Array<SeenToolCall | undefined> = [];
  if (Array.isArray(m.tool_calls)) {
    m.tool_calls.forEach((tc, j) => {
      if (isObject(tc) && isObject(tc.function)) out.push(call(tc.function.name, tc.function.arguments, tc.id, `#${i}.${j}`));
    });
  } else if (isObject(m.function_call)) {
    out.push(call(m.function_call.name, m.function_call.arguments, undefined, `#${i}.0`));
  }
  return out.filter((c): c is SeenToolCall => c !== undefined);
}

/** Responses API: the function_call items after the last item of another kind (outputs aside). */
function openaiResponses(input: unknown[]): SeenToolCall[] {
  const out: SeenToolCall[] = [];
  for (let i = input.length - 1; i >= 0; i--) {
    const item = input[i];
    if (!isObject(item)) break;
    if (item.type === "function_call_output") continue;
    if (item.type !== "function_call") break;
    const c = call(item.name, item.arguments, item.call_id ?? item.id, `#${i}`);
    if (c) out.unshift(c);
  }
  return out;
}

function anthropic(messages: unknown[]): SeenToolCall[] {
  const uses = (m: Json) => (Array.isArray(m.content) ? m.content.filter((b) => isObject(b) && b.type === "tool_use") : []);
  const i = lastAssistant(messages, (m) => uses(m).length > 0);
  if (i < 0) return [];
  return uses(messages[i] as Json)
    .map((b, j) => call((b as Json).name, (b as Json).input, (b as Json).id, `#${i}.${j}`))
    .filter((c): c is SeenToolCall => c !== undefined);
}

export function toolCallsOf(provider: Provider, path: string, body: Json): SeenToolCall[] {
  let calls: SeenToolCall[] = [];
  if (provider === "anthropic" && Array.isArray(body.messages)) calls = anthropic(body.messages);
  else if (provider === "openai" && /responses$/.test(path) && Array.isArray(body.input)) calls = openaiResponses(body.input);
  else if (provider === "openai" && Array.isArray(body.messages)) calls = openaiChat(body.messages);
  return calls.slice(0, MAX_CALLS);
}

/**
 * A failed call as an error fact: the provider's status and error type as the code, its
 * message with per-request identifiers taken out, so the same failure has one signature.
 */
export function llmErrorOf(status: number, text: string): { code: string; message?: string } {
  let type: string | undefined;
  let message: string | undefined;
  try {
    const body = JSON.parse(text) as Json;
    const err = isObject(body.error) ? body.error : body;
    if (typeof err.type === "string") type = err.type;
    else if (typeof err.code === "string") type = err.code;
    if (typeof err.message === "string") message = err.message;
  } catch {
    message = text.slice(0, 200) || undefined;
  }
  return { code: type ? `${status} ${type}`.slice(0, 128) : String(status), message: message === undefined ? undefined : withoutRequestIds(message) };
}

export function withoutRequestIds(message: string): string {
  return message
    .replace(/\b(req|request|msg|chatcmpl|resp)[_-][A-Za-z0-9]{6,}\b/g, "$1_*")
    .replace(/\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi, "*")
    .slice(0, 1024);
}
