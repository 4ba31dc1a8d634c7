import type { Provider } from "../../schema/pricing";
import type { PromptScan } from "./estimate";
import { withStreamUsage } from "./usage";

// Where a proxied call goes and what is sent: the gateway's provider key instead of the
// caller's token, and the body with the limits the reservation relies on.

const UPSTREAM = {
  openai: { base: "OPENAI_BASE_URL", key: "OPENAI_API_KEY", fallback: "https://api.openai.com" },
  anthropic: { base: "ANTHROPIC_BASE_URL", key: "ANTHROPIC_API_KEY", fallback: "https://api.anthropic.com" },
} as const;

// Client headers that mean something to the provider; everything else (our token, our
// attribution headers, cookies) stays here.
const FORWARDED = /^(content-type|accept|user-agent|openai-organization|openai-project|openai-beta|anthropic-version|anthropic-beta|x-stainless-[a-z-]+)$/i;

export function upstreamUrl(env: Record<string, unknown>, provider: Provider, path: string, search: string): string {
  const cfg = UPSTREAM[provider];
  const base = ((env[cfg.base] as string | undefined) || cfg.fallback).replace(/\/+$/, "");
  // OPENAI_BASE_URL conventionally ends in /v1; the client's path starts with v1/ too.
  const rel = base.endsWith("/v1") && path.startsWith("v1/") ? path.slice(3) : path;
  return `${base}/${rel}${search}`;
}

export function upstreamHeaders(req: Request, env: Record<string, unknown>, provider: Provider): Headers {
  const h = new Headers();
  req.headers.forEach((v, k) => {
    if (FORWARDED.test(k)) h.set(k, v);
  });
  const key = (env[UPSTREAM[provider].key] as string | undefined) ?? "";
  if (provider === "openai") h.set("authorization", `Bearer ${key}`);
  else {
    h.set("x-api-key", key);
    if (!h.has("anthropic-version")) h.set("anthropic-version", "2023-06-01");
  }
  h.set("content-type", "application/json");
  return h;
}

/**
 * The field that caps output for this call. A call that names no cap is sent with the
 * cap its reservation assumed, so the provider cannot bill past what was reserved.
 */
export function capField(provider: Provider, path: string, model: string): string | undefined {
  if (/embeddings$/.test(path)) return undefined;
  if (provider === "anthropic") return "max_tokens";
  if (/responses$/.test(path)) return "max_output_tokens";
  return /^(o\d|gpt-5)/.test(model) ? "max_completion_tokens" : "max_tokens";
}

/** The output cap the provider honours on this path; a cap in a field it ignores is no cap. */
export function maxOutputFrom(provider: Provider, path: string, body: Record<string, unknown>): number | null {
  if (/embeddings$/.test(path)) return 0;
  const fields = provider === "anthropic" ? ["max_tokens"] : /responses$/.test(path) ? ["max_output_tokens"] : ["max_completion_tokens", "max_tokens"];
  for (const k of fields) {
    const v = body[k];
    if (typeof v === "number" && Number.isInteger(v) && v >= 0) return v;
  }
  return null;
}

/**
 * The body that goes upstream. When nothing changes, the client's body goes out as it came
 * (`raw`: its bytes, or its text; no second JSON.stringify or UTF-8 encoding of a long
 * context); otherwise the parsed body with: the output
 * cap the reservation assumed (set where the call named none, or lowered by fit_output),
 * limits on server-side tool uses, and OpenAI's stream usage option.
 */
export function outgoingBody<Raw extends string | Uint8Array>(provider: Provider, path: string, model: string, raw: Raw, body: Record<string, unknown>, cap: { value?: number; replace: boolean }, patch: PromptScan["patch"]): Raw | string {
  let out = body;
  const field = capField(provider, path, model);
  if (field && cap.value !== undefined && (cap.replace || maxOutputFrom(provider, path, body) === null)) {
    out = { ...out, [field]: cap.value };
    // Both OpenAI chat fields may be present; the provider takes the smaller, so set both.
    if (provider === "openai" && field !== "max_output_tokens") for (const f of ["max_tokens", "max_completion_tokens"]) if (f !== field && typeof out[f] === "number") out = { ...out, [f]: cap.value };
  }
  if (patch.anthropicMaxUses !== undefined && Array.isArray(out.tools)) {
    const uses = patch.anthropicMaxUses;
    out = { ...out, tools: out.tools.map((t) => (t && typeof t === "object" && typeof (t as { type?: unknown }).type === "string" && /^(web_search|web_fetch)/.test((t as { type: string }).type) && (t as { max_uses?: unknown }).max_uses === undefined ? { ...(t as object), max_uses: uses } : t)) };
  }
  if (patch.openaiMaxToolCalls !== undefined) out = { ...out, max_tool_calls: patch.openaiMaxToolCalls };
  out = withStreamUsage(provider, path, out);
  return out === body ? raw : JSON.stringify(out);
}
