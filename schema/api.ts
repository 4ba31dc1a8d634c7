import { z } from "zod";

// Bodies of the HTTP routes. The same schemas validate WebSocket messages, so a check
// over HTTP and over a socket cannot drift apart.

export const SessionId = z
  .string()
  .regex(/^[A-Za-z0-9._~-]{1,128}$/, "use 1-128 letters, digits, '.', '_', '~' or '-'");
export const TenantId = SessionId;

const Text = z.string().max(1024);

export const OpenSessionBody = z.strictObject({
  id: SessionId,
  policy: z.unknown().optional(),
  agent: Text.optional(),
  user: Text.optional(),
  task: Text.optional(),
});

export const ActionBody = z.strictObject({
  id: z.string().min(1).max(256).optional(),
  action: z.string().min(1).max(256),
  args: z.record(z.string(), z.unknown()).default({}),
  costUsd: z.number().finite().nonnegative().default(0),
  run: Text.optional(),
  agent: Text.optional(),
  user: Text.optional(),
});

export const CostFact = z.strictObject({
  id: z.string().min(1).max(256).optional(),
  type: z.literal("cost"),
  usd: z.number().finite().nonnegative(),
  action: Text.optional(),
  run: Text.optional(),
});

export const ViolationFact = z.strictObject({
  id: z.string().min(1).max(256).optional(),
  type: z.literal("violation"),
  kind: z.string().min(1).max(128),
  detail: Text.optional(),
});

export const ReportBody = z.discriminatedUnion("type", [CostFact, ViolationFact]);

export const ApprovalBody = z.strictObject({
  decision: z.enum(["approve", "deny"]),
  note: Text.optional(),
});

export const KillBody = z.strictObject({
  reason: Text.optional(),
});

export type OpenSessionBody = z.infer<typeof OpenSessionBody>;
export type ActionBody = z.infer<typeof ActionBody>;
export type ReportBody = z.infer<typeof ReportBody>;
export type ApprovalBody = z.infer<typeof ApprovalBody>;
