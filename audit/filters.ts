import { z } from "zod";
import { parseDuration } from "../lib/duration";
import { BadRequestError } from "../lib/errors";

// The filters every audit query takes, the same for the routes, the CLI and exports.
// since/until: epoch ms, an ISO date or time, or a duration meaning "that long ago"
// (`30d`, `12h`); since is inclusive, until exclusive.

const Text = z.string().min(1).max(1024);
/** `type=request.denied,action.checked`: any of them. */
const List = z
  .string()
  .max(4096)
  .transform((s) => s.split(",").map((x) => x.trim()).filter(Boolean))
  .pipe(z.array(Text).min(1, "name at least one value"));

export function parseInstant(value: string, now: number): number | undefined {
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v);
  const ago = parseDuration(v);
  if (ago !== undefined) return now - ago;
  // Dates and date-times only: Date.parse also takes loose text like "1", which is no time.
  if (/^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(v)) {
    const t = Date.parse(v);
    if (Number.isFinite(t)) return t;
  }
  return undefined;
}

const instant = (now: number) =>
  z.string().transform((v, ctx) => {
    const t = parseInstant(v, now);
    if (t === undefined) {
      ctx.addIssue({ code: "custom", message: `expected epoch milliseconds, an ISO date like 2025-01-31, or a duration like 30d or 12h (got ${JSON.stringify(v)})` });
      return z.NEVER;
    }
    return t;
  });

function filterFields(now: number) {
  return {
    user: Text.optional(),
    agent: Text.optional(),
    session: Text.optional(),
    run: Text.optional(),
    model: Text.optional(),
    type: List.optional(),
    decision: List.optional(),
    since: instant(now).optional(),
    until: instant(now).optional(),
  };
}

export const MAX_PAGE = 1000;

/** Rollup keys: who or what spent, or a UTC time bucket (a chart of spend over time). */
export const SPEND_BY = ["agent", "user", "model", "session", "day", "hour", "minute"] as const;

function schemas(now: number) {
  const fields = filterFields(now);
  return {
    events: z.strictObject({
      ...fields,
      limit: z.coerce.number().int().min(1).max(MAX_PAGE).default(100),
      cursor: z.string().max(512).optional(),
    }),
    spend: z.strictObject({ ...fields, by: z.enum(SPEND_BY) }),
    export: z.strictObject({
      ...fields,
      format: z.enum(["csv", "json", "ndjson"]).default("ndjson"),
      // After the events, the signed checkpoints stored for the sessions they belong to.
      checkpoints: z
        .enum(["true", "false", "1", "0"])
        .optional()
        .transform((v) => v === "true" || v === "1"),
    }),
  };
}

type Schemas = ReturnType<typeof schemas>;
export type EventQuery = z.infer<Schemas["events"]>;
export type SpendQuery = z.infer<Schemas["spend"]>;
export type ExportQuery = z.infer<Schemas["export"]>;
export type Filter = Omit<EventQuery, "limit" | "cursor">;
export type SpendBy = SpendQuery["by"];

/** Query strings name each field once; a repeated one is refused rather than guessed at. */
function toObject(params: URLSearchParams): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of params) {
    if (k in out) throw new BadRequestError(`${k} is given more than once`, k);
    out[k] = v;
  }
  return out;
}

function parse<S extends z.ZodType>(schema: S, params: URLSearchParams): z.infer<S> {
  const r = schema.safeParse(toObject(params));
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const field = issue?.path.join(".") || (issue?.code === "unrecognized_keys" ? issue.keys[0] : "query");
  const message = issue?.code === "unrecognized_keys" ? `unknown parameter "${issue.keys[0]}"` : `${field}: ${issue?.message}`;
  throw new BadRequestError(message, field);
}

export const parseEventQuery = (p: URLSearchParams, now = Date.now()): EventQuery => parse(schemas(now).events, p);
export const parseSpendQuery = (p: URLSearchParams, now = Date.now()): SpendQuery => parse(schemas(now).spend, p);
export const parseExportQuery = (p: URLSearchParams, now = Date.now()): ExportQuery => parse(schemas(now).export, p);

// Paging is keyset on (ts, session, seq): stable while events are appended, and each
// page is one index range scan however deep the reader has paged.
export interface PageKey {
  ts: number;
  session: string;
  seq: number;
}

export function encodeCursor(k: PageKey): string {
  return Buffer.from(JSON.stringify([k.ts, k.session, k.seq])).toString("base64url");
}

export function decodeCursor(cursor: string): PageKey {
  try {
    const [ts, session, seq] = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8")) as unknown[];
    if (Number.isSafeInteger(ts) && typeof session === "string" && Number.isSafeInteger(seq)) return { ts: ts as number, session, seq: seq as number };
  } catch {
    /* refused below */
  }
  throw new BadRequestError("cursor is not one this service issued: pass nextCursor from the previous page", "cursor");
}
