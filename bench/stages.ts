import { createHash } from "node:crypto";
import { performance } from "node:perf_hooks";
import { canonicalJson, eventHash, sha256Hex, useNativeSha256 } from "../lib/chain";
import { decideAction, decideReserve, decideSettle, type ReserveInput, type View } from "../machines/decide";
import { reduce } from "../machines/context";
import { appendDrafts, EMPTY_HEAD } from "../machines/log";
import { initialSnapshot, stateOf, step, type SessionSnapshot } from "../machines/session";
import { summarize } from "../machines/summary";
import { authenticate } from "../party/auth";
import { assertWellFormed } from "../party/http";
import { readCall } from "../party/proxy/call";
import { countText, scanPrompt } from "../party/proxy/estimate";
import { loadEncoding } from "../party/proxy/tokens";
import { outgoingBody } from "../party/proxy/upstream";
import { usageFromJson } from "../party/proxy/usage";
import { EventData, type EventDraft, type GovernorEvent } from "../schema/events";
import { parsePolicy } from "../schema/policy";
import { priceFor } from "../schema/pricing";
import { TOKEN_MAP, TOKENS } from "../test/support/server";

// The CPU each stage of a proxied call (and of an action) costs, measured on the project's
// own code, one stage at a time, in this Node process. workerd's isolate runs the same
// code on a V8 of the same generation, so the proportions carry over; what this cannot see
// (the runtime's HTTP, the hop to the actor, storage, partykit dev's logging) is measured
// from outside by profile.ts.
//
// Why here and not inside workerd: stage timers in the gateway and the actor would sit in
// the very files being rewritten now (token counting, the actor split), and on Cloudflare
// the clocks only advance on I/O (a Spectre mitigation), so they would read zero there.
// Timing the same functions from outside needs no hook in the product.

export interface Stage {
  stage: string;
  side: "gateway" | "actor";
  us: number;
  note?: string;
}

/**
 * Microseconds per call: the fastest of several batches, each long enough for the clock.
 * The fastest, not the median: on a shared machine other work only ever adds time, so the
 * minimum is the closest estimate of what the code itself costs.
 */
export function timeit(fn: () => unknown, budgetMs = 300): number {
  // Warm up until the JIT has had its go: a cold first batch would only measure the interpreter.
  const warm = performance.now() + Math.min(50, budgetMs / 4);
  for (let i = 0; i < 3 || performance.now() < warm; i++) fn();
  const one = (() => {
    const t = performance.now();
    fn();
    return Math.max(performance.now() - t, 0.001);
  })();
  const perBatch = Math.max(1, Math.min(10_000, Math.round(5 / one)));
  const batches: number[] = [];
  const stop = performance.now() + budgetMs;
  while (batches.length < 5 || (performance.now() < stop && batches.length < 50)) {
    const t = performance.now();
    for (let i = 0; i < perBatch; i++) fn();
    batches.push(((performance.now() - t) * 1000) / perBatch);
    if (batches.length >= 5 && performance.now() > stop) break;
  }
  return Math.min(...batches);
}

const POLICY = parsePolicy({ budget: { session_usd: 1_000_000 } });

function openedView(): { view: View; head: { seq: number; hash: string }; snapshot: ReturnType<typeof initialSnapshot> } {
  const { snapshot, head } = appendDrafts(initialSnapshot(), EMPTY_HEAD, [{ type: "session.opened", id: "open:bench", data: { tenant: "acme", session: "bench", policy: POLICY } }], Date.now());
  return { view: { state: stateOf(snapshot), context: snapshot.context }, head, snapshot };
}

/** `fn` timed with lib/chain's digest in JavaScript (@noble), as browsers and older runtimes have it. */
function withJsDigest(fn: () => unknown): number {
  useNativeSha256(undefined);
  try {
    return timeit(fn);
  } finally {
    useNativeSha256(createHash);
  }
}

/**
 * An append split in its parts: validating each draft (zod), chaining it (canonical JSON
 * + SHA-256), and folding it: the context reducer, and XState's transition around it.
 */
function appendParts(label: string, snapshot: SessionSnapshot, head: { seq: number; hash: string }, drafts: EventDraft[]): Stage[] {
  const { events } = appendDrafts(snapshot, head, drafts, Date.now());
  const each = <T>(f: (e: GovernorEvent, i: number) => T) => () => events.map(f);
  const whole = timeit(() => appendDrafts(snapshot, head, drafts, Date.now()));
  const validate = timeit(() => drafts.map((d) => EventData[d.type].safeParse(d.data)));
  const chain = timeit(each((e) => eventHash(e)));
  const reducer = timeit(() => events.reduce((c, e) => reduce(c, e), snapshot.context));
  const transition = timeit(() => events.reduce((s, e) => step(s, e), snapshot));
  return [
    { stage: `${label}: append, whole (${events.length} event${events.length > 1 ? "s" : ""})`, side: "actor", us: 0, note: `${whole.toFixed(1)} us = the four rows below` },
    { stage: `${label}:   validate (zod)`, side: "actor", us: validate },
    { stage: `${label}:   hash chain (canonical JSON + native SHA-256)`, side: "actor", us: chain, note: `with @noble's JS SHA-256: ${withJsDigest(each((e) => eventHash(e))).toFixed(1)} us` },
    { stage: `${label}:   fold: context reducer`, side: "actor", us: reducer },
    { stage: `${label}:   fold: XState transition around it`, side: "actor", us: Math.max(0, transition - reducer) },
  ];
}

/** Every stage of one proxied, non-streamed chat completion with `body`, in call order. */
export async function proxyStages(body: Record<string, unknown>, answer: string): Promise<Stage[]> {
  const tokens = JSON.stringify(TOKEN_MAP);
  const text = JSON.stringify(body);
  const bytes = new TextEncoder().encode(text);
  const path = "v1/chat/completions";
  const model = String(body.model);
  const priced = priceFor("openai", model);
  const request = () =>
    new Request("http://gateway/v1/proxy/openai/v1/chat/completions", { method: "POST", headers: { "content-type": "application/json", "x-session-id": "bench" }, body: bytes });
  const call = await readCall(request(), "openai", path);
  const scan = scanPrompt("openai", path, body, bytes.byteLength, priced?.family ?? "", model);
  const enc = await loadEncoding(scan.encoding);
  // The first count of a body tokenizes every message; later ones find each message's count
  // in the cache (by content), which is what a context-appending agent's next call sees.
  const t0 = performance.now();
  countText(enc, scan.encoding, scan.kind, body);
  const coldCount = (performance.now() - t0) * 1000;
  const input: ReserveInput = { requestId: call.reserve.requestId, provider: "openai", model, path, estimateUsd: 0.01, priced: true, promptTokens: call.reserve.prompt.bound, maxOutputTokens: 16, promptHash: call.reserve.promptHash, attribution: {}, inputMethod: "bound", estimateTokens: call.reserve.prompt.bound, inputRatio: 1 };
  const { view, head, snapshot } = openedView();
  const reserve = decideReserve(view, input, Date.now());
  const reserved = appendDrafts(snapshot, head, reserve.drafts, Date.now());
  const afterView: View = { state: stateOf(reserved.snapshot), context: reserved.snapshot.context };
  const usage = usageFromJson("openai", path, JSON.parse(answer))!;
  const settleOp = { op: "settle", requestId: input.requestId, costUsd: 0.0001, outcome: "completed" as const, usage };
  const settle = decideSettle(afterView, settleOp, Date.now())!;
  const reservedEvent = reserved.events[0];

  return [
    { stage: "auth (SHA-256 of the token, JS)", side: "gateway", us: timeit(() => authenticate(TOKENS.agent, tokens)) },
    { stage: "read the call (readCall): body UTF-8 decode + JSON.parse", side: "gateway", us: timeit(() => JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes))) },
    { stage: "  size bound and depth (scanPrompt)", side: "gateway", us: timeit(() => scanPrompt("openai", path, body, bytes.byteLength, priced?.family ?? "", model)) },
    { stage: "  well-formed text (assertWellFormed)", side: "gateway", us: timeit(() => assertWellFormed(body)) },
    { stage: "  prompt hash (node:crypto SHA-256 of the body's bytes)", side: "gateway", us: timeit(() => createHash("sha256").update(bytes).digest("hex")), note: `of the text (encoded again): ${timeit(() => createHash("sha256").update(text).digest("hex")).toFixed(1)} us; @noble: ${withJsDigest(() => sha256Hex(text)).toFixed(1)} us` },
    { stage: "token count, only when the actor asks (tight budget)", side: "gateway", us: 0, note: `${(coldCount / 1000).toFixed(1)} ms first time, ${timeit(() => countText(enc, scan.encoding, scan.kind, body)).toFixed(1)} us when every message was counted before` },
    { stage: "reserve op: stringify + parse", side: "gateway", us: timeit(() => JSON.parse(JSON.stringify({ op: "reserve", input: call.reserve }))) },
    { stage: "reserve: decide (policy engine)", side: "actor", us: timeit(() => decideReserve(view, input, Date.now())) },
    ...appendParts("reserve", snapshot, head, reserve.drafts),
    { stage: "reserve: event size check (stringify)", side: "actor", us: timeit(() => JSON.stringify(reservedEvent)) },
    { stage: "upstream body (outgoingBody: the bytes as they came)", side: "gateway", us: timeit(() => outgoingBody("openai", path, model, bytes, body, { value: 16, replace: false }, scan.patch)) },
    { stage: "answer usage (JSON.parse of the reply)", side: "gateway", us: timeit(() => usageFromJson("openai", path, JSON.parse(answer))) },
    { stage: "settle op (carried by the next hop): stringify + parse", side: "gateway", us: timeit(() => JSON.parse(JSON.stringify(settleOp))) },
    { stage: "settle: decide (previews with zod parse)", side: "actor", us: timeit(() => decideSettle(afterView, settleOp, Date.now())) },
    ...appendParts("settle", reserved.snapshot, reserved.head, settle.drafts),
    { stage: "summary for subscribers/index (summarize)", side: "actor", us: timeit(() => summarize(reserved.snapshot)), note: "only with sockets open, and the index every 200 ms" },
    { stage: "sizes", side: "gateway", us: 0, note: `body ${text.length} bytes, size bound ${call.reserve.prompt.bound} tokens` },
  ];
}

/** The stages of one allowed action (`POST /v1/sessions/:id/actions`). */
export function actionStages(): Stage[] {
  const tokens = JSON.stringify(TOKEN_MAP);
  const body = { action: "t", costUsd: 0 };
  const text = JSON.stringify(body);
  const { view, head, snapshot } = openedView();
  const input = { id: crypto.randomUUID(), action: "t", args: {}, argsHash: sha256Hex(canonicalJson({})), costUsd: 0, attribution: { action: "t" } };
  const decision = decideAction(view, input, Date.now());
  const appended = appendDrafts(snapshot, head, decision.drafts, Date.now());
  return [
    { stage: "auth (SHA-256 of the token, JS)", side: "gateway", us: timeit(() => authenticate(TOKENS.agent, tokens)) },
    { stage: "body parse (JSON.parse)", side: "gateway", us: timeit(() => JSON.parse(text)) },
    { stage: "action op: stringify + parse", side: "gateway", us: timeit(() => JSON.parse(JSON.stringify({ op: "action", body, attribution: {}, waitMs: 0 }))) },
    { stage: "args hash (canonical JSON + native SHA-256)", side: "actor", us: timeit(() => sha256Hex(canonicalJson(body))) },
    { stage: "decide (policy engine)", side: "actor", us: timeit(() => decideAction(view, input, Date.now())) },
    ...appendParts("action", snapshot, head, decision.drafts),
    { stage: "event size check (stringify)", side: "actor", us: timeit(() => JSON.stringify(appended.events[0])) },
  ];
}
