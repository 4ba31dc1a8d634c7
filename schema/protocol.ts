import { z } from "zod";
import { MAX_ID, MAX_TEXT } from "../lib/limits";
import { ActionBody, ReportBody } from "./api";
import { GovernorEvent } from "./events";
import { SignedCheckpoint } from "../lib/checkpoint";
import { text } from "./text";

// WebSocket messages. Every message carries a `type`; the server validates each incoming
// one and answers a bad one with an `error` message instead of closing the socket.

export const Roles = ["agent", "operator", "auditor"] as const;
export const Role = z.enum(Roles);
export type Role = z.infer<typeof Role>;

export const SessionSummary = z.object({
  tenant: z.string(),
  session: z.string(),
  state: z.enum(["active", "alerting", "awaiting-approval", "killed", "closed"]),
  seq: z.number().int(),
  spentUsd: z.number(),
  reservedUsd: z.number(),
  budgetUsd: z.number().nullable(),
  remainingUsd: z.number().nullable(),
  /** What settles charged above their reservations (the estimate was not an upper bound). */
  overrunUsd: z.number().optional(),
  /** Spend above the session's ceiling (possible only through overruns). */
  overBudgetUsd: z.number().optional(),
  agent: z.string().optional(),
  user: z.string().optional(),
  task: z.string().optional(),
  openedAt: z.number(),
  lastActivity: z.number(),
  counters: z.object({
    llmCalls: z.number(),
    actions: z.number(),
    allowed: z.number(),
    denied: z.number(),
    reviews: z.number(),
    violations: z.number(),
    alerts: z.number(),
    anomalies: z.number(),
    // Absent from servers older than the error fact.
    errors: z.number().default(0),
  }),
  violations: z.record(z.string(), z.number()),
  reservations: z.array(
    z.object({ requestId: z.string(), kind: z.string(), estimateUsd: z.number(), expiresAt: z.number(), model: z.string().optional(), run: z.string().optional() }),
  ),
  pendingApprovals: z.array(
    z.object({
      approvalId: z.string(),
      requestId: z.string(),
      action: z.string(),
      costUsd: z.number(),
      rule: z.string(),
      reason: z.string(),
      deadline: z.number(),
      requestedAt: z.number(),
      /**
       * Every argument as the agent sent it when `argsFull` (held by the actor while the
       * approval is pending, shown to operators and auditors); otherwise the ones the log
       * keeps (those the policy's rules read).
       */
      args: z.unknown().optional(),
      argsFull: z.boolean().optional(),
      /** Size of the whole arguments' JSON; held ones too large for a summary are only named by it (GET /v1/sessions/:id/approvals/:aid has them). */
      argsBytes: z.number().optional(),
    }),
  ),
  alerts: z.array(z.string()),
  killed: z.object({ by: z.string(), reason: z.string(), rule: z.string().optional(), at: z.number() }).optional(),
  /** The policy's fail_mode: what the SDK does when it cannot reach Governor. */
  failMode: z.enum(["closed", "open"]).optional(),
});
export type SessionSummary = z.infer<typeof SessionSummary>;

export const DecisionMessage = z.object({
  type: z.literal("decision"),
  id: z.string(),
  decision: z.enum(["allow", "deny", "review"]),
  code: z.string().optional(),
  rule: z.string().optional(),
  reason: z.string().optional(),
  approvalId: z.string().optional(),
  retryAfter: z.number().optional(),
  spentUsd: z.number(),
  remainingUsd: z.number().nullable(),
  final: z.boolean(),
});
export type DecisionMessage = z.infer<typeof DecisionMessage>;

export const ServerMessage = z.discriminatedUnion("type", [
  z.object({ type: z.literal("state"), seq: z.number().int(), summary: SessionSummary }),
  z.object({ type: z.literal("event"), event: GovernorEvent }),
  DecisionMessage,
  z.object({ type: z.literal("error"), code: z.string(), message: z.string(), field: z.string().optional(), id: z.string().optional() }),
  z.object({ type: z.literal("sessions"), sessions: z.array(SessionSummary) }),
  z.object({ type: z.literal("session"), summary: SessionSummary }),
  // A signed head (lib/checkpoint.ts), to tail subscribers, after the events it covers.
  SignedCheckpoint.extend({ type: z.literal("checkpoint") }),
]);
export type ServerMessage = z.infer<typeof ServerMessage>;

const ClientId = text(MAX_ID, 1);
const Note = text(MAX_TEXT);

export const ClientMessage = z.discriminatedUnion("type", [
  ActionBody.extend({ type: z.literal("check"), id: ClientId }),
  z.object({ type: z.literal("report"), report: ReportBody }),
  z.object({ type: z.literal("approve"), approvalId: ClientId, note: Note.optional() }),
  z.object({ type: z.literal("deny"), approvalId: ClientId, note: Note.optional() }),
  // Any reason: the kill switch replaces one it cannot keep (see killReason) and kills anyway.
  z.object({ type: z.literal("kill"), reason: z.unknown().optional() }),
  z.object({ type: z.literal("subscribe"), tail: z.boolean().default(true), after: z.number().int().nonnegative().optional() }),
]);
export type ClientMessage = z.infer<typeof ClientMessage>;
