import { z } from "zod";

// What `governor replay --policy --json` prints and `POST /v1/sessions/:id/what-if`
// answers: a recorded session re-decided under another policy. A schema (not only a type)
// so the console can check what it receives like every other answer.

const Decision = z.enum(["allow", "deny", "review", "hold"]);

export const WhatIfOutcome = z.object({
  decision: Decision,
  code: z.string().optional(),
  rule: z.string().optional(),
  reason: z.string().optional(),
  /**
   * What the call or action cost: the recorded charge where it ran, 0 where it did not,
   * null where it would have run but never did in the record (its cost is unknown).
   */
  costUsd: z.number().nullable().optional(),
  /** For a call allowed only in the what-if: the reservation, the most it could have cost. */
  reservedUsd: z.number().optional(),
});

const Request = {
  /** Sequence number of the recorded event that decided it. */
  seq: z.number().int(),
  ts: z.number(),
  requestId: z.string(),
  kind: z.enum(["llm", "action"]),
  /** `openai gpt-4o-mini` for a call, the action's name for an action. */
  subject: z.string(),
  happened: WhatIfOutcome,
};

export const WhatIfDifference = z.object({ ...Request, wouldHave: WhatIfOutcome });

/** A decision the log cannot settle; the replay went on assuming `assumed`. */
export const WhatIfUnknown = z.object({ ...Request, why: z.string(), assumed: WhatIfOutcome });

export const WhatIfKill = z.object({
  /** The recorded kill event, or (what-if) the recorded event whose re-decision killed it. */
  seq: z.number().int(),
  ts: z.number(),
  requestId: z.string().optional(),
  subject: z.string().optional(),
  by: z.string(),
  rule: z.string().optional(),
  reason: z.string(),
});

const Outcome = z.object({
  state: z.enum(["active", "alerting", "awaiting-approval", "killed", "closed"]),
  spentUsd: z.number(),
  killed: WhatIfKill.nullable(),
});

export const WhatIfReport = z.object({
  /** "merge": the given policy overrode the recorded one field by field; "replace": it stood alone. */
  mode: z.enum(["merge", "replace"]),
  policy: z.unknown(),
  /** Calls and actions re-decided. */
  requests: z.number().int(),
  differences: z.array(WhatIfDifference),
  unknown: z.array(WhatIfUnknown),
  recorded: Outcome,
  whatIf: Outcome.extend({
    /** Reservations of calls that would have run but never did in the record: their cost is unknown, at most this. */
    unsettledUsd: z.number(),
  }),
  /** recorded.spentUsd - whatIf.spentUsd; with unsettled calls, at least savedUsd - whatIf.unsettledUsd. */
  savedUsd: z.number(),
  notes: z.array(z.string()),
});

export type WhatIfOutcome = z.infer<typeof WhatIfOutcome>;
export type WhatIfDifference = z.infer<typeof WhatIfDifference>;
export type WhatIfUnknown = z.infer<typeof WhatIfUnknown>;
export type WhatIfKill = z.infer<typeof WhatIfKill>;
export type WhatIfReport = z.infer<typeof WhatIfReport>;
