import { z } from "zod";

// Answers that cross from the server to a reader outside it (the console, the SDK): one
// zod schema each, so the server's type and the reader's check come from the same place.

/** `POST /v1/sessions/:id/approvals/:aid`: the decision as recorded. */
export const ApprovalAnswer = z.object({
  approvalId: z.string(),
  decision: z.enum(["allow", "deny"]),
  state: z.string(),
  spentUsd: z.number(),
  remainingUsd: z.number().nullable(),
});
export type ApprovalAnswer = z.infer<typeof ApprovalAnswer>;

/** One event of `GET /v1/audit/events` and of the exports: the row's columns and the event itself. */
export const AuditEventItem = z.object({
  tenant: z.string(),
  session: z.string(),
  seq: z.number(),
  ts: z.number(),
  type: z.string(),
  eventId: z.string(),
  user: z.string().nullable(),
  agent: z.string().nullable(),
  task: z.string().nullable(),
  run: z.string().nullable(),
  action: z.string().nullable(),
  model: z.string().nullable(),
  decision: z.string().nullable(),
  code: z.string().nullable(),
  rule: z.string().nullable(),
  costUsd: z.number(),
  estimateUsd: z.number().nullable(),
  hash: z.string(),
  prev: z.string(),
  event: z.unknown(),
});
export type AuditEventItem = z.infer<typeof AuditEventItem>;

export const AuditEventsAnswer = z.object({ events: z.array(AuditEventItem), nextCursor: z.string().nullable() });
export type AuditEventsAnswer = z.infer<typeof AuditEventsAnswer>;

/** One group of `GET /v1/audit/spend`; the key is null where the grouped column is. */
export const SpendRow = z.object({ key: z.string().nullable(), spentUsd: z.number(), calls: z.number() });
export type SpendRow = z.infer<typeof SpendRow>;

export const AuditSpendAnswer = z.object({ by: z.string(), rows: z.array(SpendRow) });
export type AuditSpendAnswer = z.infer<typeof AuditSpendAnswer>;
