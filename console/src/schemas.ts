import { z } from "zod";
import { WhatIfReport } from "../../schema/whatif";

// The console's own reading of answers: the spend groupings it offers, and the what-if
// answer's two shapes. The answers themselves are schema/answers.ts, shared with the server.
export { ApprovalAnswer, AuditEventItem, AuditEventsAnswer, AuditSpendAnswer } from "../../schema/answers";

export const SPEND_BY = ["agent", "user", "model", "day"] as const;
export type SpendBy = (typeof SPEND_BY)[number];

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
