import type { ActionBody, ReportBody } from "../schema/api";
import type { ActionSource, Attribution, SeenToolCall, Usage } from "../schema/events";
import type { Policy } from "../schema/policy";
import type { Rates } from "../schema/pricing";

// What the gateway asks of the actors. These travel inside one deployment, after the
// gateway has authenticated the caller and validated the body, so they are plain types.

export const INTERNAL = {
  tenant: "x-governor-tenant",
  role: "x-governor-role",
  name: "x-governor-name",
} as const;

export type SessionOp =
  | { op: "open"; id: string; policy: Policy; agent?: string; user?: string; task?: string }
  | { op: "get" }
  | { op: "log"; after: number; limit: number }
  | { op: "action"; body: ActionBody; attribution: Attribution; waitMs: number; source?: ActionSource }
  | { op: "report"; body: ReportBody }
  | { op: "approval"; approvalId: string; decision: "approve" | "deny"; note?: string }
  | { op: "kill" | "close"; reason: string; /** why the operator's reason was replaced (see killReason) */ replaced?: string }
  | { op: "reserve"; input: ReserveRequest }
  | SettleOp
  /** Settles that found no reserve to ride along with in time. */
  | { op: "settles"; settles: SettleOp[] }
  | { op: "progress"; requestId: string; costUsd: number; usage: Usage; holdMs?: number }
  | { op: "deliveries" }
  /** A pending approval with every argument as the agent sent it (operators and auditors). */
  | { op: "held-args"; approvalId: string }
  | { op: "wake" }
  /** Which of these action names the session's allow/deny lists let through (MCP tools/list). */
  | { op: "listed"; actions: string[] }
  /** GDPR erasure of one subject in this session (party/session/erasure.ts). */
  | { op: "erase"; user: string; subject: string; erasure: string };

/** Any op, with the settles of finished calls of the session riding along (party/proxy/settles.ts); the actor applies them first. */
export type Carrying = SessionOp & { settles?: SettleOp[] };

export type SettleOp = { op: "settle"; requestId: string; costUsd: number; outcome: "completed" | "aborted" | "released"; usage?: Usage; error?: { code?: string; message?: string } };

export type TenantOp =
  | { op: "upsert"; summary: import("../schema/protocol").SessionSummary }
  | { op: "list" }
  | { op: "page"; query: import("../schema/session-list").SessionListQuery }
  | { op: "hit"; keys: Array<{ key: string; max: number; windowMs: number }>; now: number }
  | { op: "get-default" }
  | { op: "set-default"; policy: unknown }
  | { op: "ratios" }
  | { op: "learn"; key: string; ratio: number }
  /** Drops learned ratios: one model's (every profile, or one), or all when no model is named. */
  | { op: "forget-ratios"; model?: string; profile?: string }
  | { op: "wake-sessions" }
  /** The keyed digest of an erasure's subject; forgets the subject's cross-session rate counts. */
  | { op: "subject"; user: string };

export interface ReserveAnswer {
  requestId: string;
  /** "count": the size bound does not fit; ask again with the counted estimate. */
  decision: "allow" | "deny" | "count";
  code?: string;
  rule?: string;
  reason?: string;
  retryAfterMs?: number;
  /** What was reserved, on an allow. */
  estimateUsd?: number;
  /** The output cap the reservation assumed per choice, on an allow. */
  outputCap?: number;
  /** True when budget.fit_output lowered the cap below what the call asked for. */
  fitted?: boolean;
  spentUsd: number;
  remainingUsd: number | null;
  /** On an allow priced at a price the policy declares: what the gateway prices the answer's usage at. */
  rates?: Rates;
}

/** A proxied call as the gateway sees it; the actor prices the worst case with the session's policy. */
export interface ReserveRequest {
  requestId: string;
  /** The client named the request (Idempotency-Key), so a retry must find the first answer. */
  clientKey: boolean;
  provider: "openai" | "anthropic";
  model: string;
  path: string;
  /** The input side, in tokens (party/proxy/estimate.ts). */
  prompt: PromptEstimate;
  /** The call's own output cap per choice; null means the policy's default_max_tokens. */
  maxOutputTokens: number | null;
  /** Choices asked for (`n`): each may produce up to the cap. */
  choices: number;
  /** USD per 1M tokens at the worst-case input rate (cache writes); null when the call cannot be priced. */
  price: { input: number; output: number } | null;
  /** Rates past a long-context threshold of input tokens. */
  premium?: { above: number; input: number; output: number };
  /** Why the call cannot be priced although its model can (audio, an unpriced tool). */
  unpriced?: string;
  /** The call may write to the prompt cache with this TTL: a declared price is reserved at its write rate. */
  cacheWrite?: "5m" | "1h";
  /** The most input tokens the call can carry: whether a declared long-context tier can apply. */
  context?: number;
  promptHash?: string;
  attribution: Attribution;
  /** Tool calls of the request's newest assistant turn (party/proxy/tool-calls.ts). */
  toolCalls?: SeenToolCall[];
}

export interface PromptEstimate {
  /** Upper bound on billed input tokens from the UTF-8 size; always there. */
  bound: number;
  /** Tokenizer count (with the provider's margin); only when the actor asked for it. */
  counted?: number;
  /** Runaway detection's measure: the size bound, the same way on every call. */
  size: number;
  /** Server-side tool fees, USD. */
  feesUsd: number;
  /** Learned ratios are kept per model and profile. */
  profile: string;
}
