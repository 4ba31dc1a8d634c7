import { z } from "zod";

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
