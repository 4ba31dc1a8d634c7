import type * as Party from "partykit/server";
import { GovernorError } from "../../lib/errors";
import { toWellFormed, truncate } from "../../lib/text";
import { callCostUsd, ratesCostUsd, type Provider, type Usage } from "../../schema/pricing";
import type { Principal } from "../auth";
import { callSession } from "../calls";
import type { ReserveAnswer, SessionOp, SettleOp } from "../ops";
import { readCall, type ProxiedCall } from "./call";
import { governorHeaders, providerError } from "./errors";
import { countPrompt } from "./estimate";
import { refusesUsageChunk, UsageChunkFilter } from "./hide-usage";
import { StreamRelay, type Outcome } from "./relay";
import { callSessionCarrying, carryMs, settleSoon } from "./settles";
import { countTextTokens, isReady, loadEncoding, warmTokenizers } from "./tokens";
import { outgoingBody, upstreamHeaders, upstreamUrl } from "./upstream";
import { StreamUsageTracker, usageFromJson } from "./usage";
import { llmErrorOf, withoutRequestIds } from "./tool-calls";
import { watchCall, type Produced } from "./watch";

export { providerError } from "./errors";

const MAX_SAID = 300;

// The proxy: reserve the worst case in the session's actor, forward with the gateway's
// provider key, pass the answer through as it arrives, and settle with the real usage
// (carried by the session's next reserve when one follows soon: settles.ts).

const DEFAULT_TIMEOUT_MS = 120_000;
const DEFAULT_STALL_MS = 10_000;
/** A call still waiting for the provider this long starts reporting to (and listening to) its actor. */
const WATCH_AFTER_MS = 250;
/**
 * The rank tables are decoded this long after an isolate's first proxied call, in small
 * slices: started at once, the slices would interleave with that first call's own steps.
 * Until they are ready, calls are decided on the size bound; a budget tight enough to need
 * a count in the isolate's first seconds waits for them.
 */
const WARM_AFTER_MS = 2_000;

let warming = false;

type Money = { spentUsd: number; remainingUsd: number | null };
type AbortInfo = { code: string; reason: string };

export async function proxy(req: Request, lobby: Party.FetchLobby, ctx: Party.ExecutionContext, p: Principal, provider: Provider, path: string): Promise<Response> {
  // The first proxied call in an isolate starts decoding the rank tables in the background.
  if (!warming) {
    warming = true;
    ctx.waitUntil(
      new Promise((r) => setTimeout(r, WARM_AFTER_MS))
        .then(() => warmTokenizers())
        .catch((e) => console.error("tokenizer warm-up failed", e)),
    );
  }
  const env = lobby.env as Record<string, unknown>;
  const fail = (e: GovernorError) => providerError(provider, e.status, e.code, e.message, { field: e.field, rule: e.rule, retryAfter: e.retryAfter });
  let call: ProxiedCall;
  try {
    call = await readCall(req, provider, path);
  } catch (e) {
    if (e instanceof GovernorError) return fail(e);
    throw e;
  }
  const send = (op: SessionOp) => callSession(lobby, p, call.session, op);
  const carry = carryMs(env);
  const later = (op: SettleOp) => settleSoon(lobby, p, call.session, op, carry);

  // Finished calls of this session waiting to be settled ride along with this reserve.
  const answer = await reserve(call, (op) => callSessionCarrying(lobby, ctx, p, call.session, op));
  if ("error" in answer) return answer.error;
  if (answer.decision !== "allow") {
    return providerError(provider, answer.status, answer.code ?? "policy_violation", answer.reason ?? "refused by policy", { rule: answer.rule, retryAfter: answer.retryAfterMs === undefined ? undefined : answer.retryAfterMs / 1000 }, governorHeaders(call.reserve.requestId, answer));
  }
  return forward(req, env, ctx, call, answer, send, later);
}

/** Reserves with the size bound; when that does not fit, the actor asks for the counted estimate once. */
async function reserve(call: ProxiedCall, send: (op: SessionOp) => Promise<Response>): Promise<(ReserveAnswer & { status: number }) | { error: Response }> {
  for (let attempt = 0; ; attempt++) {
    const res = await send({ op: "reserve", input: call.reserve });
    const answer = (await res.json()) as ReserveAnswer & { error?: { code: string; message: string; field?: string } };
    if (answer.error) return { error: providerError(call.provider, res.status, answer.error.code, answer.error.message, { field: answer.error.field }) };
    if (answer.decision !== "count" || attempt > 0) return { ...answer, status: res.status };
    call.reserve = { ...call.reserve, prompt: { ...call.reserve.prompt, counted: await countPrompt(call.scan, call.body, call.context) } };
  }
}

async function forward(
  req: Request,
  env: Record<string, unknown>,
  ctx: Party.ExecutionContext,
  call: ProxiedCall,
  answer: ReserveAnswer,
  send: (op: SessionOp) => Promise<Response>,
  later: (op: SettleOp) => Promise<void>,
): Promise<Response> {
  const { provider } = call;
  const requestId = call.reserve.requestId;
  // `error`: why the call failed, recorded so that the same failure again and again is caught as a loop.
  const settle = async (costUsdValue: number, outcome: "completed" | "aborted" | "released", usage?: Usage, error?: { code: string; message?: string }): Promise<Money> => {
    try {
      const res = await send({ op: "settle", requestId, costUsd: costUsdValue, outcome, usage, error });
      const settled = (await res.json()) as { spentUsd?: number; remainingUsd?: number | null };
      // A reservation that already expired was charged at its estimate; say what we knew.
      return settled.spentUsd === undefined ? answer : { spentUsd: settled.spentUsd, remainingUsd: settled.remainingUsd ?? null };
    } catch (e) {
      console.error("settle failed; the reservation will expire at its estimate", e);
      return answer;
    }
  };
  // A price the policy declares (the actor says so on the allow) comes before the table's.
  const costOf = (u: Usage) => (answer.rates ? ratesCostUsd(provider, answer.rates, u) : call.price && call.family ? callCostUsd(provider, call.family, call.price, u) : 0);

  // The cap the reservation assumed goes upstream where the call named none, or lower than it asked under fit_output.
  const body = outgoingBody(provider, call.path, call.model, call.bytes, call.body, { value: answer.outputCap, replace: Boolean(answer.fitted) }, call.scan.patch);
  const capHeaders: Record<string, string> = answer.outputCap !== undefined && (answer.fitted || call.reserve.maxOutputTokens === null) ? { "x-governor-output-cap": String(answer.outputCap) } : {};

  const timeoutMs = Number(env.GOVERNOR_UPSTREAM_TIMEOUT_MS ?? DEFAULT_TIMEOUT_MS) || DEFAULT_TIMEOUT_MS;
  const abort = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined = setTimeout(() => abort.abort(new Error("upstream timed out")), timeoutMs);
  const resetTimer = () => {
    clearTimeout(timer);
    timer = setTimeout(() => abort.abort(new Error("upstream timed out")), timeoutMs);
  };

  // Until the answer is in, the actor hears of the call and can end it (kill, close).
  let ended: AbortInfo | undefined;
  let relay: StreamRelay | undefined;
  let produced: () => Promise<Produced> = async () => ({ costUsd: answer.estimateUsd ?? 0, usage: { inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0 } });
  const watch = watchCall({
    requestId,
    send: (op) => send(op),
    produced: () => produced(),
    startAfterMs: WATCH_AFTER_MS,
    onAbort: (reason, code) => {
      ended = { code, reason };
      if (relay) relay.stop(ended.code, `the session ended while this answer streamed: ${reason}`);
      else abort.abort(new Error(reason));
    },
  });

  const url = new URL(req.url);
  url.searchParams.delete("token");
  let upstream: Response;
  try {
    upstream = await fetch(upstreamUrl(env, provider, call.path, url.search), { method: "POST", headers: upstreamHeaders(req, env, provider), body, signal: abort.signal });
  } catch (e) {
    clearTimeout(timer);
    watch.stop();
    if (ended) return endedAnswer(call, ended, answer, await settle(answer.estimateUsd ?? 0, "aborted"));
    const why = abort.signal.aborted ? `upstream did not answer within ${timeoutMs} ms` : `upstream unreachable: ${(e as Error).message}`;
    const money = await settle(0, "released", undefined, { code: abort.signal.aborted ? "timeout" : "unreachable", message: withoutRequestIds(why) });
    return providerError(provider, 502, "upstream_error", why, {}, governorHeaders(requestId, money));
  }

  if (!upstream.ok) {
    clearTimeout(timer);
    watch.stop();
    const text = await upstream.text().catch(() => "");
    const money = await settle(0, "released", undefined, llmErrorOf(upstream.status, text));
    // The provider's own 4xx (a bad request, its rate limit) passes through as it is;
    // a failure on its side is our 502.
    if (upstream.status < 500) {
      return new Response(text, { status: upstream.status, headers: { "content-type": upstream.headers.get("content-type") ?? "application/json", ...governorHeaders(requestId, money) } });
    }
    return providerError(provider, 502, "upstream_error", `upstream answered ${upstream.status}${saidBy(text)}`, {}, governorHeaders(requestId, money));
  }

  const isStream = (upstream.headers.get("content-type") ?? "").includes("text/event-stream");
  const passHeaders: Record<string, string> = { "content-type": upstream.headers.get("content-type") ?? "application/json", ...capHeaders };
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
      watch.stop();
      // Ended by a kill mid-answer: nothing shows what the provider produced, so the worst case is charged.
      if (ended) return endedAnswer(call, ended, answer, await settle(answer.estimateUsd ?? 0, "aborted"));
      const money = await settle(0, "released", undefined, { code: "broken_answer" });
      return providerError(provider, 502, "upstream_error", `upstream failed mid-answer: ${(e as Error).message}`, {}, governorHeaders(requestId, money));
    }
    clearTimeout(timer);
    watch.stop();
    let usage: Usage | undefined;
    try {
      usage = usageFromJson(provider, call.path, JSON.parse(text));
    } catch {
      usage = undefined;
    }
    // No usage in a successful answer: charge the worst case we reserved rather than guess low.
    const cost = usage ? costOf(usage) : answer.estimateUsd ?? 0;
    // The answer goes out before the settle is written, and the settle waits for the
    // session's next reserve to carry it (settles.ts): the reservation already covers the
    // cost (or the settle records the overrun), and if the settle were lost the alarm
    // would charge the estimate.
    ctx.waitUntil(later({ op: "settle", requestId, costUsd: cost, outcome: "completed", usage }));
    const money = { spentUsd: answer.spentUsd + cost, remainingUsd: answer.remainingUsd === null ? null : Math.max(0, answer.remainingUsd + (answer.estimateUsd ?? 0) - cost) };
    return new Response(text, { status: upstream.status, headers: { ...passHeaders, ...governorHeaders(requestId, money) } });
  }

  // ---------------------------------------------------------------- streams
  const tracker = new StreamUsageTracker(provider, call.path, call.model);
  // Registered before the first byte goes out: once a client disconnects, the runtime no
  // longer accepts new background work for this request, and the settle must still run.
  let done!: () => void;
  ctx.waitUntil(new Promise<void>((r) => (done = r)));
  const measure = streamMeasure(call, tracker);
  produced = async () => {
    const u = await measure(false);
    return { costUsd: costOf(u), usage: u };
  };
  const finish = (outcome: Outcome) => {
    clearTimeout(timer);
    clearInterval(stallCheck);
    watch.stop();
    void measure(true)
      .then((u) => later({ op: "settle", requestId, costUsd: costOf(u), outcome, usage: u }))
      .catch((e) => console.error("settle failed; the reservation will expire at its estimate", e))
      .finally(done);
  };
  const stallMs = Number(env.GOVERNOR_STREAM_STALL_MS ?? DEFAULT_STALL_MS) || DEFAULT_STALL_MS;
  relay = new StreamRelay({
    provider,
    reader: upstream.body.getReader(),
    tracker,
    abort,
    stallMs,
    finish,
    onChunk: resetTimer,
    // The provider's final figures are in: tell the actor now, not at the next heartbeat.
    onUsage: () => watch.report(),
    hideUsage: refusesUsageChunk(provider, call.path, call.body) ? new UsageChunkFilter() : undefined,
  });
  // A client that went away is not always reported: the runtime may just stop pulling.
  const stallCheck = setInterval(() => {
    if (relay?.stalled()) relay.stop("client_gone", "the client stopped reading");
  }, Math.min(1000, stallMs));
  return new Response(relay.stream, { status: upstream.status, headers: { ...passHeaders, "cache-control": "no-cache", ...governorHeaders(requestId, answer) } });
}

/**
 * The provider's own reason for a failure on its side, so the caller sees why: its error
 * message (or the start of a body that is not its JSON shape), on one line, well-formed
 * and bounded, since it lands in a client's exception text and our logs.
 */
function saidBy(text: string): string {
  let said: string | undefined;
  try {
    const body = JSON.parse(text) as { error?: { message?: unknown } | string; message?: unknown };
    const err = typeof body.error === "object" && body.error ? body.error.message : body.error ?? body.message;
    if (typeof err === "string") said = err;
  } catch {
    said = text;
  }
  const line = toWellFormed(truncate((said ?? "").replace(/[\u0000-\u001f\u007f]+/g, " ").trim(), MAX_SAID));
  return line ? `: ${line}` : "";
}

/** The answer to a call that a kill or close ended before any of it reached the client. */
function endedAnswer(call: ProxiedCall, ended: AbortInfo, answer: ReserveAnswer, money: Money): Response {
  const h = governorHeaders(call.reserve.requestId, money ?? answer);
  return providerError(call.provider, 403, ended.code, `the session ended while this call was in flight: ${ended.reason}`, { rule: ended.code === "session_closed" ? "session.closed" : "session.killed" }, h);
}

/**
 * What a stream has cost so far: the provider's usage when it arrived, else the input side
 * counted (Anthropic states it at message_start; for OpenAI the local count is the provider's
 * own tokenizer) and the output text counted, with Claude's margin on counted output.
 */
function streamMeasure(call: ProxiedCall, tracker: StreamUsageTracker) {
  let input: Promise<number> | undefined;
  return async (final: boolean): Promise<Usage> => {
    const { usage, outputText } = final ? tracker.finish() : tracker.peek();
    if (usage) return usage;
    // A progress report never waits for a cold tokenizer (the report is how a kill gets
    // through): until the tables are ready it carries the input's size bound.
    if (!final && !isReady(call.scan.encoding) && !input) return { inputTokens: call.reserve.prompt.bound, outputTokens: countTextTokens(call.provider, call.model, outputText), cachedInputTokens: 0, cacheWriteTokens: 0 };
    input ??= countPrompt(call.scan, call.body, call.context);
    const inputTokens = await input;
    if (final) await loadEncoding(call.scan.encoding);
    let outputTokens = countTextTokens(call.provider, call.model, outputText);
    if (call.scan.margin !== 1) outputTokens = Math.ceil(outputTokens * call.scan.margin);
    return { inputTokens, outputTokens, cachedInputTokens: 0, cacheWriteTokens: 0 };
  };
}
