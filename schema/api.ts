import { z } from "zod";
import { MAX_ARG_NAME, MAX_ARGS, MAX_ID, MAX_KIND, MAX_TEXT } from "../lib/limits";
import { MAX_EVENT_USD } from "../lib/money";
import { isWellFormed, toWellFormed, truncate } from "../lib/text";
import { jsonText, text } from "./text";

// Bodies of the HTTP routes. The same schemas validate WebSocket messages, so a check
// over HTTP and over a socket cannot drift apart.

export const SessionId = z
  .string()
  .regex(/^[A-Za-z0-9._~-]{1,128}$/, "use 1-128 letters, digits, '.', '_', '~' or '-'");
export const TenantId = SessionId;

const Text = text(MAX_TEXT);
const ClientId = text(MAX_ID, 1);
/** One call's or action's cost: bounded so nano-dollar sums stay exact (lib/money.ts). */
const Usd = z.number().finite().nonnegative().max(MAX_EVENT_USD);

/** An action's arguments: any JSON, its names and strings well-formed, its size bounded. */
export const Args = z
  .record(z.string().max(MAX_ARG_NAME), z.unknown())
  .refine((a) => Object.keys(a).length <= MAX_ARGS, `at most ${MAX_ARGS} arguments`)
  .superRefine(jsonText());

export const OpenSessionBody = z.strictObject({
  id: SessionId,
  // Checked whole by the policy schema (schema/policy.ts), strings included.
  policy: z.unknown().optional(),
  agent: Text.optional(),
  user: Text.optional(),
  task: Text.optional(),
});

export const ActionBody = z.strictObject({
  id: ClientId.optional(),
  action: ClientId,
  args: Args.default({}),
  costUsd: Usd.default(0),
  run: Text.optional(),
  agent: Text.optional(),
  user: Text.optional(),
});

export const CostFact = z.strictObject({
  id: ClientId.optional(),
  type: z.literal("cost"),
  usd: Usd,
  action: Text.optional(),
  run: Text.optional(),
});

export const ViolationFact = z.strictObject({
  id: ClientId.optional(),
  type: z.literal("violation"),
  kind: text(MAX_KIND, 1),
  detail: Text.optional(),
});

// A tool's failure, as a fact: loop detection on repeated errors builds on it. The message
// is stored only under `keep_raw`; otherwise only its signature is.
export const ErrorFact = z.strictObject({
  id: ClientId.optional(),
  type: z.literal("error"),
  action: Text.optional(),
  code: text(MAX_KIND, 1).optional(),
  message: Text.optional(),
});

export const ReportBody = z.discriminatedUnion("type", [CostFact, ViolationFact, ErrorFact]);

export const ApprovalBody = z.strictObject({
  decision: z.enum(["approve", "deny"]),
  note: Text.optional(),
});

export const KillBody = z.strictObject({
  reason: Text.optional(),
});

/**
 * The headers a call is attributed by, as the log records them. Header values are byte
 * strings, so only their size can be wrong; a longer one is refused, not cut.
 */
export const AttributionHeaders = z.object({
  "X-Agent-ID": Text.optional(),
  "X-User-ID": Text.optional(),
  "X-Run-ID": Text.optional(),
  "X-Action": Text.optional(),
  "X-Task-Context": Text.optional(),
  "Idempotency-Key": ClientId.optional(),
});

export interface KillReason {
  reason: string;
  /** Why the operator's reason could not be kept as sent, when it could not. */
  replaced?: string;
}

/**
 * The kill switch takes any request: a reason that is not well-formed text, too long, of
 * the wrong type, or a body that is not JSON at all is replaced (and says so), never a
 * reason to leave the session running.
 */
export function killReason(raw: unknown, fallback = "killed by an operator"): KillReason {
  if (raw === undefined || raw === null) return { reason: fallback };
  if (typeof raw !== "string") return { reason: fallback, replaced: `the reason sent was a ${Array.isArray(raw) ? "list" : typeof raw}, not text` };
  let reason = raw;
  const why: string[] = [];
  if (!isWellFormed(reason)) {
    reason = toWellFormed(reason);
    why.push("it held lone UTF-16 surrogates, each replaced with U+FFFD");
  }
  if (reason.length > MAX_TEXT) {
    reason = `${truncate(reason, MAX_TEXT - 1)}…`;
    why.push(`it was longer than ${MAX_TEXT} characters and was cut`);
  }
  if (!reason.trim()) return { reason: fallback, ...(why.length && { replaced: why.join("; ") }) };
  return why.length ? { reason, replaced: `the reason was changed: ${why.join("; ")}` } : { reason };
}

/** A kill body as sent: JSON `{reason?}` when it parses, anything else is a replaced reason. */
export function killRequest(body: string): KillReason {
  if (!body.trim()) return killReason(undefined);
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return { reason: "killed by an operator", replaced: "the request body was not JSON" };
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) return { reason: "killed by an operator", replaced: "the request body was not a JSON object" };
  return killReason((parsed as { reason?: unknown }).reason);
}

/** `POST /v1/audit/erasures`: the subject's id, as the attribution carried it (X-User-ID, `user`). */
export const ErasureBody = z.strictObject({ user: text(MAX_TEXT, 1) });

export type ErasureBody = z.infer<typeof ErasureBody>;
export type OpenSessionBody = z.infer<typeof OpenSessionBody>;
export type ActionBody = z.infer<typeof ActionBody>;
export type ReportBody = z.infer<typeof ReportBody>;
export type ApprovalBody = z.infer<typeof ApprovalBody>;
