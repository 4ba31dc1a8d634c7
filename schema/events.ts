import { z } from "zod";
import { Policy } from "./policy";
import { RatesSchema } from "./pricing";

// Every fact the session actor knows is one of these, appended in order, hash-chained.
// The machine folds them; nothing else about a session is authoritative.

const Id = z.string().min(1).max(256);
const Usd = z.number().finite().nonnegative();
const Str = z.string().max(4096);

export const UsageData = z.object({
  inputTokens: z.number().int().nonnegative(),
  outputTokens: z.number().int().nonnegative(),
  cachedInputTokens: z.number().int().nonnegative().default(0),
  cacheWriteTokens: z.number().int().nonnegative().default(0),
  cacheWrite1hTokens: z.number().int().nonnegative().optional(),
  serverTools: z.record(z.string().max(64), z.number().int().nonnegative()).optional(),
});

/**
 * What a what-if replay needs to price a call again under another policy: how many choices
 * it asked for, whether its output cap was its own or the policy's `default_max_tokens` (and
 * what it was), the output price the estimate used (USD per 1M tokens), and whether the
 * model had a price.
 */
const Repricing = {
  choices: z.number().int().positive().optional(),
  capFrom: z.enum(["call", "policy"]).optional(),
  /** The output cap per choice before budget.fit_output lowered it (if it did). */
  outputCap: z.number().int().nonnegative().optional(),
  outputPrice: z.number().finite().nonnegative().optional(),
  unpriced: z.literal(true).optional(),
  /** Why a call of a priced model could not be priced (audio, an unpriced tool): a declared price does not change that. */
  unpricedReason: Str.optional(),
  /** USD per 1M input tokens the estimate used (the worst-case rate: cache writes, long context). */
  inputPrice: z.number().finite().nonnegative().optional(),
  /** The call may write to the prompt cache with this TTL, and was priced at that write rate. */
  cacheWrite: z.enum(["5m", "1h"]).optional(),
  /** Server-side tool fees in the estimate, USD; recorded on every proxied call since declared prices existed. */
  feesUsd: Usd.optional(),
  /**
   * The rates the call was priced at, and its settles are charged at, when they are not the
   * gateway's table: a price the session's policy declares (`pricing`). A what-if that
   * prices the call again (another declaration, or none) says where its rates came from.
   */
  rates: RatesSchema.extend({ source: z.enum(["policy", "table"]), key: Str.optional() }).optional(),
};

/** Who asked: the attribution headers of a proxied call, or an action's caller. */
export const Attribution = z.object({
  agent: Str.optional(),
  user: Str.optional(),
  run: Str.optional(),
  action: Str.optional(),
  task: Str.optional(),
});

/** A tool call seen in a proxied LLM request's history: counted by loop detection once. */
export const SeenToolCall = z.object({
  name: Str,
  argsHash: Str,
  /** The provider's tool call id (or the call's place in the history when there is none). */
  key: Str,
});

/** Where an action was asked from. */
export const ActionSource = z.enum(["http", "socket", "mcp"]);

export const EventData = {
  "session.opened": z.object({
    tenant: Id,
    session: Id,
    policy: Policy,
    agent: Str.optional(),
    user: Str.optional(),
    task: Str.optional(),
    // The key the actor signs this session's checkpoints with: an export of this log that
    // ends without a checkpoint has lost its tail (lib/checkpoint.ts).
    signingKid: Str.optional(),
  }),
  "request.reserved": z.object({
    requestId: Id,
    kind: z.enum(["llm", "action"]),
    provider: z.enum(["openai", "anthropic"]).optional(),
    model: Str.optional(),
    path: Str.optional(),
    estimateUsd: Usd,
    /** Input tokens the reservation assumed (after the learned ratio). */
    promptTokens: z.number().int().nonnegative().optional(),
    maxOutputTokens: z.number().int().nonnegative().optional(),
    promptHash: Str.optional(),
    expiresAt: z.number().int(),
    attribution: Attribution.default({}),
    // How the input side was estimated: "bound" (from the UTF-8 size, an upper bound) or
    // "count" (tokenizer count with the provider's margin); `estimateTokens` is that figure
    // before `inputRatio` (the tenant's learned billed/estimated ratio) raised it.
    inputMethod: z.enum(["bound", "count"]).optional(),
    estimateTokens: z.number().int().nonnegative().optional(),
    inputRatio: z.number().positive().optional(),
    /** What runaway detection compares call to call: the prompt's size bound in tokens. */
    promptSize: z.number().int().nonnegative().optional(),
    /** "server-tools" when the call may run provider-side tools (their results are input too). */
    profile: Str.optional(),
    /** The output cap per choice sent upstream, when budget.fit_output lowered it. */
    fittedCap: z.number().int().nonnegative().optional(),
    /** Tool calls the request's history shows for the first time (loop detection). */
    toolCalls: z.array(SeenToolCall).optional(),
    ...Repricing,
  }),
  "request.settled": z.object({
    requestId: Id,
    costUsd: Usd,
    // completed: usage from the provider; aborted: client went away, counted what was produced;
    // expired: no settle arrived, charged at the estimate; released: upstream failed, nothing charged;
    // reported: a cost reported from outside (a tool's bill).
    outcome: z.enum(["completed", "aborted", "expired", "released", "reported"]),
    usage: UsageData.optional(),
    model: Str.optional(),
    attribution: Attribution.default({}),
    /** What the settle charged above its reservation: the estimate was not an upper bound. */
    overrunUsd: Usd.optional(),
    /** Billed input tokens over the reservation's estimate of them. */
    inputRatio: z.number().nonnegative().optional(),
  }),
  "request.denied": z.object({
    requestId: Id,
    kind: z.enum(["llm", "action"]),
    code: Str,
    rule: Str,
    reason: Str,
    model: Str.optional(),
    estimateUsd: Usd.optional(),
    attribution: Attribution.default({}),
    // A refused call carries what its reservation would have, so a what-if can decide it again.
    provider: z.enum(["openai", "anthropic"]).optional(),
    path: Str.optional(),
    promptTokens: z.number().int().nonnegative().optional(),
    maxOutputTokens: z.number().int().nonnegative().optional(),
    promptHash: Str.optional(),
    promptSize: z.number().int().nonnegative().optional(),
    ...Repricing,
    /** Tool calls the refused request's history showed for the first time (a loop refusal). */
    toolCalls: z.array(SeenToolCall).optional(),
  }),
  "action.checked": z.object({
    requestId: Id,
    action: Str,
    argsHash: Str,
    args: z.unknown().optional(),
    decision: z.enum(["allow", "deny", "review"]),
    costUsd: Usd,
    code: Str.optional(),
    rule: Str.optional(),
    reason: Str.optional(),
    approvalId: Id.optional(),
    attribution: Attribution.default({}),
    source: ActionSource.optional(),
  }),
  "violation.recorded": z.object({
    kind: Str,
    detail: Str.optional(),
    source: z.enum(["scanner", "policy"]),
  }),
  "error.recorded": z.object({
    // tool: reported by the agent, or an MCP upstream's error; llm: a proxied call that failed.
    source: z.enum(["tool", "llm"]),
    action: Str.optional(),
    code: Str.optional(),
    /** sha256 hex of `${action}\n${code}\n${message}` (absent parts empty): equal failures share it. */
    signature: z.string().length(64),
    message: Str.optional(),
  }),
  "anomaly.detected": z.object({
    // runaway: prompts kept growing; repeat_call: the same call again and again;
    // repeat_error: the same upstream error again and again.
    kind: z.enum(["runaway", "repeat_call", "repeat_error"]),
    reason: Str,
    /** Prompt sizes of the window (runaway only). */
    promptTokens: z.array(z.number().int().nonnegative()).optional(),
    onDetect: z.enum(["alert", "review", "kill"]),
    rule: Str.optional(),
    action: Str.optional(),
    /** The repeated call's or error's signature. */
    signature: Str.optional(),
    count: z.number().int().positive().optional(),
  }),
  "alert.raised": z.object({
    kind: Str,
    rule: Str,
    reason: Str,
    spentUsd: Usd.optional(),
    limitUsd: Usd.optional(),
    // An overrun alert names the model, how far billed input went past the estimate, and the overrun.
    model: Str.optional(),
    ratio: z.number().nonnegative().optional(),
    overrunUsd: Usd.optional(),
  }),
  "approval.requested": z.object({
    approvalId: Id,
    requestId: Id,
    action: Str,
    argsHash: Str,
    args: z.unknown().optional(),
    costUsd: Usd,
    rule: Str,
    reason: Str,
    deadline: z.number().int(),
    attribution: Attribution.default({}),
  }),
  "approval.granted": z.object({ approvalId: Id, by: Str, note: Str.optional() }),
  "approval.denied": z.object({ approvalId: Id, by: Str, note: Str.optional(), timedOut: z.boolean().default(false) }),
  // `replaced`: why the operator's reason could not be kept as sent (the kill happened anyway).
  "session.killed": z.object({ by: Str, rule: Str.optional(), reason: Str, replaced: Str.optional() }),
  "session.closed": z.object({ by: Str, reason: Str.optional() }),
  // An erasure (GDPR Art. 17): `subject` is a keyed digest of the person (never the id),
  // `fields` the JSON pointers whose values were deleted, `seqs` the events they were
  // deleted from ("3-5,9" ranges), `kept` events whose values sit in plain text inside the
  // hash (written before commitments) and so could not be erased; `by` the operator, `ts`
  // when. One erasure may take several of these events when it names many events.
  "subject.redacted": z.object({ subject: Str, fields: z.array(Str), by: Str, erasure: Id.optional(), seqs: z.array(Str).optional(), kept: z.array(Str).optional() }),
} as const;

export type EventType = keyof typeof EventData;
export const EVENT_TYPES = Object.keys(EventData) as EventType[];

/**
 * Personal values and policy secrets of an event, beside it and outside its hash
 * (lib/pii.ts): JSON pointer into `data` -> the value and the salt of its commitment.
 */
export const EventPii = z.record(
  z.string().max(256).regex(/^(\/[^/]*)+$/, "a JSON pointer"),
  z.strictObject({ v: z.unknown(), s: z.string().regex(/^[0-9a-f]{32}$/, "32 hex digits") }),
);

const envelope = {
  seq: z.number().int().positive(),
  // Longer than a client id: follow-up events append what they follow from.
  id: z.string().min(1).max(4096),
  ts: z.number().int().nonnegative(),
  prev: z.string().length(64),
  hash: z.string().length(64),
  pii: EventPii.optional(),
};

function variant<T extends EventType>(type: T) {
  return z.object({ ...envelope, type: z.literal(type), data: EventData[type] });
}

export const GovernorEvent = z.discriminatedUnion("type", [
  variant("session.opened"),
  variant("request.reserved"),
  variant("request.settled"),
  variant("request.denied"),
  variant("action.checked"),
  variant("violation.recorded"),
  variant("error.recorded"),
  variant("anomaly.detected"),
  variant("alert.raised"),
  variant("approval.requested"),
  variant("approval.granted"),
  variant("approval.denied"),
  variant("session.killed"),
  variant("session.closed"),
  variant("subject.redacted"),
]);

export type GovernorEvent = z.infer<typeof GovernorEvent>;
export type EventOf<T extends EventType> = Extract<GovernorEvent, { type: T }>;
export type DataOf<T extends EventType> = z.infer<(typeof EventData)[T]>;

/** An event before the actor gives it a place in the chain. */
export type EventDraft = { [T in EventType]: { type: T; id: string; data: z.input<(typeof EventData)[T]> } }[EventType];

export type Usage = z.infer<typeof UsageData>;
export type Attribution = z.infer<typeof Attribution>;
export type SeenToolCall = z.infer<typeof SeenToolCall>;
export type ActionSource = z.infer<typeof ActionSource>;
