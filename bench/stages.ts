import { createHash } from "node:crypto";
import { performance } from "node:perf_hooks";
import { canonicalJson, eventHash, sha256Hex } from "../lib/chain";
import { decideAction, decideReserve, decideSettle, type View } from "../machines/decide";
import { reduce } from "../machines/context";
import { appendDrafts, EMPTY_HEAD } from "../machines/log";
import { initialSnapshot, stateOf, step, type SessionSnapshot } from "../machines/session";
import { summarize } from "../machines/summary";
import { authenticate } from "../party/auth";
import { countPromptTokens } from "../party/proxy/tokens";
import { usageFromJson, withStreamUsage } from "../party/proxy/usage";
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

const sha256Native = (s: string) => createHash("sha256").update(s).digest("hex");

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
    { stage: `${label}:   hash chain (canonical JSON + SHA-256, JS)`, side: "actor", us: chain, note: `with node:crypto: ${timeit(each((e) => sha256Native(canonicalJson({ seq: e.seq, id: e.id, ts: e.ts, type: e.type, data: e.data, prev: e.prev })))).toFixed(1)} us` },
    { stage: `${label}:   fold: context reducer`, side: "actor", us: reducer },
    { stage: `${label}:   fold: XState transition around it`, side: "actor", us: Math.max(0, transition - reducer) },
  ];
}

/** Every stage of one proxied, non-streamed chat completion with `body`, in call order. */
export function proxyStages(body: Record<string, unknown>, answer: string): Stage[] {
  const tokens = JSON.stringify(TOKEN_MAP);
  const text = JSON.stringify(body);
  const bytes = new TextEncoder().encode(text);
  const path = "v1/chat/completions";
  const price = priceFor("openai", String(body.model))?.price ?? null;
  const promptTokens = countPromptTokens("openai", path, body);
  const messages = JSON.stringify(body.messages);
  const input = {
    requestId: crypto.randomUUID(),
    clientKey: false,
    provider: "openai" as const,
    model: String(body.model),
    path,
    promptTokens,
    maxOutputTokens: 16,
    choices: 1,
    price: price ? { input: price.input, output: price.output } : null,
    promptHash: sha256Hex(messages),
    attribution: {},
  };
  const reserveOp = JSON.stringify({ op: "reserve", input });
  const { view, head, snapshot } = openedView();
  const priced = { ...input, estimateUsd: 0.01, priced: true, maxOutputTokens: 16 };
  const reserve = decideReserve(view, priced, Date.now());
  const reserved = appendDrafts(snapshot, head, reserve.drafts, Date.now());
  const afterView: View = { state: stateOf(reserved.snapshot), context: reserved.snapshot.context };
  const usage = usageFromJson("openai", path, JSON.parse(answer))!;
  const settleOp = { op: "settle", requestId: input.requestId, costUsd: 0.0001, outcome: "completed" as const, usage };
  const settle = decideSettle(afterView, settleOp, Date.now())!;
  const reservedEvent = reserved.events[0];

  return [
    { stage: "auth (SHA-256 of the token, JS)", side: "gateway", us: timeit(() => authenticate(TOKENS.agent, tokens)) },
    { stage: "body read (UTF-8 decode)", side: "gateway", us: timeit(() => new TextDecoder().decode(bytes)) },
    { stage: "body parse (JSON.parse)", side: "gateway", us: timeit(() => JSON.parse(text)) },
    { stage: "token counting (js-tiktoken)", side: "gateway", us: timeit(() => countPromptTokens("openai", path, body), 2_000) },
    { stage: "prompt hash: stringify messages", side: "gateway", us: timeit(() => JSON.stringify(body.messages)) },
    { stage: "prompt hash: SHA-256 (JS, @noble)", side: "gateway", us: timeit(() => sha256Hex(messages)), note: `node:crypto: ${timeit(() => sha256Native(messages)).toFixed(1)} us` },
    { stage: "reserve op: stringify + parse", side: "gateway", us: timeit(() => JSON.parse(JSON.stringify({ op: "reserve", input }))) },
    { stage: "reserve: decide (policy engine)", side: "actor", us: timeit(() => decideReserve(view, priced, Date.now())) },
    ...appendParts("reserve", snapshot, head, reserve.drafts),
    { stage: "reserve: event size check (stringify)", side: "actor", us: timeit(() => JSON.stringify(reservedEvent)) },
    { stage: "reserve: answer (stringify)", side: "actor", us: timeit(() => JSON.stringify({ requestId: input.requestId, decision: "allow", spentUsd: 0, remainingUsd: 1 })) },
    { stage: "upstream body (stringify)", side: "gateway", us: timeit(() => JSON.stringify(withStreamUsage("openai", path, body))) },
    { stage: "answer usage (JSON.parse of the reply)", side: "gateway", us: timeit(() => usageFromJson("openai", path, JSON.parse(answer))) },
    { stage: "settle op: stringify + parse", side: "gateway", us: timeit(() => JSON.parse(JSON.stringify(settleOp))) },
    { stage: "settle: decide (previews with zod parse)", side: "actor", us: timeit(() => decideSettle(afterView, settleOp, Date.now())) },
    ...appendParts("settle", reserved.snapshot, reserved.head, settle.drafts),
    { stage: "summary for subscribers/index (summarize)", side: "actor", us: timeit(() => summarize(reserved.snapshot)), note: "only with sockets open, and the index every 200 ms" },
    { stage: "reserve op size", side: "gateway", us: 0, note: `${reserveOp.length} bytes; body ${text.length} bytes, ${promptTokens} prompt tokens` },
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
    { stage: "args hash (canonical JSON + SHA-256 JS)", side: "actor", us: timeit(() => sha256Hex(canonicalJson(body))) },
    { stage: "decide (policy engine)", side: "actor", us: timeit(() => decideAction(view, input, Date.now())) },
    ...appendParts("action", snapshot, head, decision.drafts),
    { stage: "event size check (stringify)", side: "actor", us: timeit(() => JSON.stringify(appended.events[0])) },
  ];
}
