import { z } from "zod";
import { WhatIfReport } from "../../schema/whatif";

// Answers the console reads that have no shared schema in schema/ yet: the approval
// decision of `POST /v1/sessions/:id/approvals/:aid`, and the audit store's rollups
// (`GET /v1/audit/spend`, ADDENDUM item 3).

export const ApprovalAnswer = z.object({
  approvalId: z.string(),
  decision: z.enum(["allow", "deny"]),
  state: z.string(),
  spentUsd: z.number(),
  remainingUsd: z.number().nullable(),
});

export const SPEND_BY = ["agent", "user", "model", "day"] as const;
export type SpendBy = (typeof SPEND_BY)[number];

export const AuditSpendAnswer = z.object({
  by: z.string(),
  rows: z.array(z.object({ key: z.string().nullable(), spentUsd: z.number(), calls: z.number() })),
});
export type AuditSpendAnswer = z.infer<typeof AuditSpendAnswer>;

/** One event of `GET /v1/audit/events` (audit/query.ts `AuditEventItem`). */
export const AuditEventItem = z.object({
  session: z.string(),
  seq: z.number(),
  ts: z.number(),
  type: z.string(),
  eventId: z.string(),
  user: z.string().nullable(),
  agent: z.string().nullable(),
  run: z.string().nullable(),
  action: z.string().nullable(),
  model: z.string().nullable(),
  decision: z.string().nullable(),
  code: z.string().nullable(),
  rule: z.string().nullable(),
  costUsd: z.number(),
  estimateUsd: z.number().nullable(),
  event: z.unknown(),
});
export type AuditEventItem = z.infer<typeof AuditEventItem>;

export const AuditEventsAnswer = z.object({ events: z.array(AuditEventItem), nextCursor: z.string().nullable() });
export type AuditEventsAnswer = z.infer<typeof AuditEventsAnswer>;

/** `POST /v1/sessions/:id/what-if`: the verified replay with the re-decision (lib/replay.ts), or why the log did not verify. */
export const WhatIfAnswer = z.union([
  z.object({
    ok: z.literal(true),
    state: z.string(),
    spentUsd: z.number(),
    events: z.number(),
    head: z.object({ seq: z.number(), hash: z.string() }),
    checkpoint: z.object({ seq: z.number(), ts: z.number(), kid: z.string() }).nullable(),
    warnings: z.array(z.string()),
    whatIf: WhatIfReport,
  }),
  z.object({ ok: z.literal(false), problem: z.string(), seq: z.number().optional(), reason: z.string() }),
]);
export type WhatIfAnswer = z.infer<typeof WhatIfAnswer>;
