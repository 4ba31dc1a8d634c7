import type * as Party from "partykit/server";
import { BadRequestError, GovernorError } from "../../lib/errors";
import { sha256Hex } from "../../lib/chain";
import { costUsd, priceFor, type Provider, type Usage } from "../../schema/pricing";
import { countPromptTokens, countTextTokens } from "./tokens";
import { StreamUsageTracker, usageFromJson, withStreamUsage } from "./usage";
import type { Principal } from "../auth";
import { callSession } from "../calls";
import { attributionOf, parseJson, readText } from "../http";
import type { ReserveAnswer, ReserveRequest } from "../ops";

// The proxy: reserve the worst case in the session's actor, forward with the gateway's
// provider key, pass the answer through as it arrives, and settle with the real usage.

const MAX_PROXY_BODY = 16 * 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 120_000;
const HEARTBEAT_MS = 1_000;
const DEFAULT_STALL_MS = 10_000;

const UPSTREAM = {
  openai: { base: "OPENAI_BASE_URL", key: "OPENAI_API_KEY", fallback: "https://api.openai.com" },
  anthropic: { base: "ANTHROPIC_BASE_URL", key: "ANTHROPIC_API_KEY", fallback: "https://api.anthropic.com" },
} as const;

// Client headers that mean something to the provider; everything else (our token, our
// attribution headers, cookies) stays here.
const FORWARDED = /^(content-type|accept|user-agent|openai-organization|openai-project|openai-beta|anthropic-version|anthropic-beta|x-stainless-[a-z-]+)$/i;

/** The provider's own error shape, so its SDK raises its usual error class. */
export function providerError(provider: Provider, status: number, code: string, message: string, extra: { rule?: string; retryAfter?: number; field?: string } = {}, headers: Record<string, string> = {}): Response {
  const body =
    provider === "openai"
      ? { error: { message, type: code, param: extra.field ?? null, code, ...(extra.rule && { rule: extra.rule }) } }
      : { type: "error", error: { type: code, message, ...(extra.rule && { rule: extra.rule }) } };
  const h: Record<string, string> = { "content-type": "application/json", ...headers };
  if (extra.retryAfter !== undefined) h["retry-after"] = String(Math.max(1, Math.ceil(extra.retryAfter)));
  return new Response(JSON.stringify(body), { status, headers: h });
}

function upstreamUrl(env: Record<string, unknown>, provider: Provider, path: string, search: string): string {
  const cfg = UPSTREAM[provider];
  const base = ((env[cfg.base] as string | undefined) || cfg.fallback).replace(/\/+$/, "");
  // OPENAI_BASE_URL conventionally ends in /v1; the client's path starts with v1/ too.
  const rel = base.endsWith("/v1") && path.startsWith("v1/") ? path.slice(3) : path;
  return `${base}/${rel}${search}`;
}

function upstreamHeaders(req: Request, env: Record<string, unknown>, provider: Provider): Headers {
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

function governorHeaders(requestId: string, money: { spentUsd: number; remainingUsd: number | null }): Record<string, string> {
  return {
    "x-governor-request-id": requestId,
    "x-governor-spent-usd": money.spentUsd.toFixed(6),
    "x-governor-remaining-usd": money.remainingUsd === null ? "unlimited" : money.remainingUsd.toFixed(6),
  };
}

function cachesPrompt(provider: Provider, body: Record<string, unknown>): boolean {
  return provider === "anthropic" && JSON.stringify([body.system, body.messages, body.tools]).includes('"cache_control"');
}

/**
 * The field that caps output for this call. A call that names no cap is sent with the
 * cap its reservation assumed, so the provider cannot bill past what was reserved.
 */
function capField(provider: Provider, path: string, model: string): string | undefined {
  if (/embeddings$/.test(path)) return undefined;
  if (provider === "anthropic") return "max_tokens";
  if (/responses$/.test(path)) return "max_output_tokens";
  return /^(o\d|gpt-5)/.test(model) ? "max_completion_tokens" : "max_tokens";
}

/** The output cap the provider honours on this path; a cap in a field it ignores is no cap. */
function maxOutputFrom(provider: Provider, path: string, body: Record<string, unknown>): number | null {
  if (/embeddings$/.test(path)) return 0;
  const fields = provider === "anthropic" ? ["max_tokens"] : /responses$/.test(path) ? ["max_output_tokens"] : ["max_completion_tokens", "max_tokens"];
  for (const k of fields) {
    const v = body[k];
    if (typeof v === "number" && Number.isInteger(v) && v >= 0) return v;
  }
  return null;
}

export async function proxy(req: Request, lobby: Party.FetchLobby, ctx: Party.ExecutionContext, p: Principal, provider: Provider, path: string): Promise<Response> {
  const env = lobby.env as Record<string, unknown>;
  const fail = (e: GovernorError) => providerError(provider, e.status, e.code, e.message, { field: e.field, rule: e.rule, retryAfter: e.retryAfter });
  let session: string;
  let body: Record<string, unknown>;
  let input: ReserveRequest;
  try {
    session = req.headers.get("x-session-id") ?? "";
    if (!/^[A-Za-z0-9._~-]{1,128}$/.test(session)) throw new BadRequestError(session ? "X-Session-ID: use 1-128 letters, digits, '.', '_', '~' or '-'" : "X-Session-ID header is required", "X-Session-ID");
    const { attribution, idempotencyKey: clientKey } = attributionOf(req);
    const text = await readText(req, MAX_PROXY_BODY);
    const parsed = parseJson(text);
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new BadRequestError("body must be a JSON object", "body");
    body = parsed as Record<string, unknown>;
    if (typeof body.model !== "string" || !body.model) throw new BadRequestError("model is required", "model");
    const model = body.model;
    const promptTokens = countPromptTokens(provider, path, body);
    const price = priceFor(provider, model);
    input = {
      requestId: clientKey || crypto.randomUUID(),
      clientKey: Boolean(clientKey),
      provider,
      model,
      path,
      promptTokens,
      maxOutputTokens: maxOutputFrom(provider, path, body),
      choices: typeof body.n === "number" && Number.isInteger(body.n) && body.n > 1 ? body.n : 1,
      // Anthropic bills prompt caching writes above the input price: that is the worst case.
      price: price ? { input: cachesPrompt(provider, body) ? Math.max(price.price.input, price.price.cacheWrite ?? 0) : price.price.input, output: price.price.output } : null,
      promptHash: sha256Hex(JSON.stringify(body.messages ?? body.input ?? body.system ?? "")),
      attribution,
    };
  } catch (e) {
    if (e instanceof GovernorError) return fail(e);
    throw e;
  }

  const reserved = await callSession(lobby, p, session, { op: "reserve", input });
  const answer = (await reserved.json()) as ReserveAnswer & { error?: { code: string; message: string; field?: string } };
  if (answer.error) return providerError(provider, reserved.status, answer.error.code, answer.error.message, { field: answer.error.field });
  if (answer.decision !== "allow") {
    return providerError(provider, reserved.status, answer.code ?? "policy_violation", answer.reason ?? "refused by policy", { rule: answer.rule, retryAfter: answer.retryAfterMs === undefined ? undefined : answer.retryAfterMs / 1000 }, governorHeaders(input.requestId, answer));
  }

  const settle = async (costUsdValue: number, outcome: "completed" | "aborted" | "released", usage?: Usage) => {
    try {
      const res = await callSession(lobby, p, session, { op: "settle", requestId: input.requestId, costUsd: costUsdValue, outcome, usage });
      const settled = (await res.json()) as { spentUsd?: number; remainingUsd?: number | null };
      // A reservation that already expired was charged at its estimate; say what we knew.
      return settled.spentUsd === undefined ? answer : { spentUsd: settled.spentUsd, remainingUsd: settled.remainingUsd ?? null };
    } catch (e) {
      console.error("settle failed; the reservation will expire at its estimate", e);
      return answer;
    }
  };
  const priceRow = priceFor(provider, input.model)?.price;
  const costOf = (u: Usage) => (priceRow ? costUsd(priceRow, u) : 0);

  const cap = capField(provider, path, input.model);
  const capped = cap && input.maxOutputTokens === null && answer.outputCap !== undefined ? { ...body, [cap]: answer.outputCap } : body;

  const timeoutMs = Number(env.GOVERNOR_UPSTREAM_TIMEOUT_MS ?? DEFAULT_TIMEOUT_MS) || DEFAULT_TIMEOUT_MS;
  const abort = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined = setTimeout(() => abort.abort(new Error("upstream timed out")), timeoutMs);
  const resetTimer = () => {
    clearTimeout(timer);
    timer = setTimeout(() => abort.abort(new Error("upstream timed out")), timeoutMs);
  };
  const url = new URL(req.url);
  url.searchParams.delete("token");
  let upstream: Response;
  try {
    upstream = await fetch(upstreamUrl(env, provider, path, url.search), {
      method: "POST",
      headers: upstreamHeaders(req, env, provider),
      body: JSON.stringify(withStreamUsage(provider, path, capped)),
      signal: abort.signal,
    });
  } catch (e) {
    clearTimeout(timer);
    const money = await settle(0, "released");
    const why = abort.signal.aborted ? `upstream did not answer within ${timeoutMs} ms` : `upstream unreachable: ${(e as Error).message}`;
    return providerError(provider, 502, "upstream_error", why, {}, governorHeaders(input.requestId, money));
  }

  if (!upstream.ok) {
    clearTimeout(timer);
    const text = await upstream.text().catch(() => "");
    const money = await settle(0, "released");
    // The provider's own 4xx (a bad request, its rate limit) passes through as it is;
    // a failure on its side is our 502.
    if (upstream.status < 500) {
      return new Response(text, { status: upstream.status, headers: { "content-type": upstream.headers.get("content-type") ?? "application/json", ...governorHeaders(input.requestId, money) } });
    }
    return providerError(provider, 502, "upstream_error", `upstream answered ${upstream.status}`, {}, governorHeaders(input.requestId, money));
  }

  const isStream = (upstream.headers.get("content-type") ?? "").includes("text/event-stream");
  const passHeaders: Record<string, string> = { "content-type": upstream.headers.get("content-type") ?? "application/json" };
  for (const h of ["x-request-id", "request-id", "openai-processing-ms"]) {
    const v = upstream.headers.get(h);
    if (v) passHeaders[h] = v;
  }

  if (!isStream || !upstream.body) {
    let text: string;
    try {
      text = await upstream.text();
    } catch (e) {
      clearTimeout(timer);
      const money = await settle(0, "released");
      return providerError(provider, 502, "upstream_error", `upstream failed mid-answer: ${(e as Error).message}`, {}, governorHeaders(input.requestId, money));
    }
    clearTimeout(timer);
    let usage: Usage | undefined;
    try {
      usage = usageFromJson(provider, path, JSON.parse(text));
    } catch {
      usage = undefined;
    }
    // No usage in a successful answer: charge the worst case we reserved rather than guess low.
    const cost = usage ? costOf(usage) : answer.estimateUsd ?? 0;
    // The answer goes out while the settle is written: the reservation already covers the
    // cost, and if the settle were lost the alarm would charge the (higher) estimate.
    ctx.waitUntil(settle(cost, "completed", usage).catch((e) => console.error("settle failed; the reservation will expire at its estimate", e)));
    const money = { spentUsd: answer.spentUsd + cost, remainingUsd: answer.remainingUsd === null ? null : answer.remainingUsd + (answer.estimateUsd ?? 0) - cost };
    return new Response(text, { status: upstream.status, headers: { ...passHeaders, ...governorHeaders(input.requestId, money) } });
  }

  const tracker = new StreamUsageTracker(provider, path, input.model);
  const reader = upstream.body.getReader();
  // Registered before the first byte goes out: once a client disconnects, the runtime no
  // longer accepts new background work for this request, and the settle must still run.
  let done!: () => void;
  ctx.waitUntil(new Promise<void>((r) => (done = r)));
  let settled = false;
  const counted = (final = false): Usage => {
    const { usage, outputText } = final ? tracker.finish() : tracker.peek();
    return usage ?? { inputTokens: input.promptTokens, outputTokens: countTextTokens(provider, input.model, outputText), cachedInputTokens: 0, cacheWriteTokens: 0 };
  };
  const finish = (outcome: "completed" | "aborted") => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    clearInterval(heartbeat);
    const u = counted(true);
    settle(costOf(u), outcome, u)
      .catch((e) => console.error("settle failed; the reservation will expire at its estimate", e))
      .finally(done);
  };
  // While the stream runs, the actor hears what it has cost so far. If the runtime drops
  // this request when the client goes away (and with it our cancel handler), the
  // heartbeats stop and the actor settles at the last cost it heard.
  // A client that went away is not always reported: the runtime may just stop pulling.
  // Not pulling for stallMs while the answer is unfinished means nobody is reading.
  const stallMs = Number(env.GOVERNOR_STREAM_STALL_MS ?? DEFAULT_STALL_MS) || DEFAULT_STALL_MS;
  let pulling = false;
  let lastPull = Date.now();
  let toClient: ReadableStreamDefaultController<Uint8Array> | undefined;
  const beat = () => {
    if (!pulling && Date.now() - lastPull > stallMs) {
      const why = new Error("the client stopped reading");
      abort.abort(why);
      finish("aborted");
      // Should the client still be there after all, its stream ends instead of hanging.
      try {
        toClient?.error(why);
      } catch {
        /* already closed */
      }
      return;
    }
    const u = counted();
    void callSession(lobby, p, session, { op: "progress", requestId: input.requestId, costUsd: costOf(u), usage: u }).catch(() => undefined);
  };
  // Heartbeats start once the first chunk is on its way, so they do not compete with it;
  // from then on the actor knows the stream exists.
  let heartbeat: ReturnType<typeof setInterval> | undefined;
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      toClient = controller;
    },
    async pull(controller) {
      pulling = true;
      try {
        const { done, value } = await reader.read();
        if (done) {
          finish("completed");
          controller.close();
          return;
        }
        resetTimer();
        tracker.push(value);
        controller.enqueue(value);
        if (!heartbeat && !settled) {
          beat();
          heartbeat = setInterval(beat, HEARTBEAT_MS);
        }
      } catch (e) {
        finish("aborted");
        controller.error(e);
      } finally {
        pulling = false;
        lastPull = Date.now();
      }
    },
    // The client went away: stop the provider from producing tokens nobody reads, and
    // charge what it produced so far.
    cancel(reason) {
      abort.abort(reason);
      finish("aborted");
    },
  });
  return new Response(stream, { status: upstream.status, headers: { ...passHeaders, "cache-control": "no-cache", ...governorHeaders(input.requestId, answer) } });
}
