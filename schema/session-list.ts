import { z } from "zod";
import { BadRequestError } from "../lib/errors";
import { parseDuration } from "../lib/duration";
import { SessionSummary } from "./protocol";

// `GET /v1/sessions`: one page of the tenant's index, newest opened first. Sessions keep
// their place while they update (openedAt never changes), so a cursor stays valid and a
// client walking the pages sees each session once.

export const SESSION_STATES = SessionSummary.shape.state.options;
export type SessionStateName = (typeof SESSION_STATES)[number];

export const DEFAULT_PAGE = 100;
export const MAX_PAGE = 500;

/** Where a page ends: the last session it returned, in index order. */
export interface PagePosition {
  openedAt: number;
  session: string;
}

export interface SessionListQuery {
  limit: number;
  after?: PagePosition;
  states?: SessionStateName[];
  agent?: string;
  user?: string;
  /** openedAt >= since (epoch ms). */
  since?: number;
  /** openedAt < until (epoch ms). */
  until?: number;
}

export const SessionListAnswer = z.object({
  sessions: z.array(SessionSummary),
  nextCursor: z.string().nullable(),
  total: z.number().int().nonnegative(),
});
export type SessionListAnswer = z.infer<typeof SessionListAnswer>;

const base64url = (s: string) => btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const unbase64url = (s: string) => atob(s.replace(/-/g, "+").replace(/_/g, "/"));

export function encodeCursor(p: PagePosition): string {
  return base64url(JSON.stringify([p.openedAt, p.session]));
}

const CursorBody = z.tuple([z.number().int().nonnegative(), z.string().min(1).max(256)]);

export function decodeCursor(cursor: string): PagePosition {
  try {
    const [openedAt, session] = CursorBody.parse(JSON.parse(unbase64url(cursor)));
    return { openedAt, session };
  } catch {
    throw new BadRequestError("cursor: not a cursor this server issued (pass nextCursor from the previous page as it is)", "cursor");
  }
}

/**
 * An instant as a caller writes it: epoch milliseconds, an ISO date, or a duration such as
 * `30d` / `12h` meaning that long before `now`.
 */
export function parseInstant(raw: string, now: number, field: string): number {
  const v = raw.trim();
  if (/^\d+$/.test(v)) return Number(v);
  const ago = parseDuration(v);
  if (ago !== undefined) return now - ago;
  if (/^\d{4}-\d{2}-\d{2}/.test(v)) {
    const t = Date.parse(v);
    if (Number.isFinite(t)) return t;
  }
  throw new BadRequestError(`${field}: expected epoch milliseconds, an ISO date (2025-01-31 or 2025-01-31T12:00:00Z) or a duration ago such as 30d or 12h (got ${JSON.stringify(raw.slice(0, 64))})`, field);
}

const PARAMS = new Set(["limit", "cursor", "state", "agent", "user", "since", "until"]);

/** Reads the query of `GET /v1/sessions`; a bad or unknown parameter is a 400 naming it. */
export function parseSessionListQuery(params: URLSearchParams, now: number): SessionListQuery {
  for (const key of params.keys()) {
    if (!PARAMS.has(key)) throw new BadRequestError(`${key}: unknown parameter; use ${[...PARAMS].join(", ")}`, key);
  }
  const one = (key: string) => {
    const all = params.getAll(key);
    if (all.length > 1) throw new BadRequestError(`${key}: given ${all.length} times; give it once`, key);
    return all[0] === undefined || all[0] === "" ? undefined : all[0];
  };
  const q: SessionListQuery = { limit: DEFAULT_PAGE };
  const limit = one("limit");
  if (limit !== undefined) {
    const n = Number(limit);
    if (!/^\d+$/.test(limit) || n < 1 || n > MAX_PAGE) throw new BadRequestError(`limit: expected an integer from 1 to ${MAX_PAGE} (got ${JSON.stringify(limit.slice(0, 32))})`, "limit");
    q.limit = n;
  }
  const cursor = one("cursor");
  if (cursor !== undefined) q.after = decodeCursor(cursor);
  const state = one("state");
  if (state !== undefined) {
    const states = [...new Set(state.split(",").map((s) => s.trim()).filter(Boolean))];
    for (const s of states) {
      if (!(SESSION_STATES as readonly string[]).includes(s)) throw new BadRequestError(`state: unknown state ${JSON.stringify(s.slice(0, 64))}; use a comma list of ${SESSION_STATES.join(", ")}`, "state");
    }
    if (states.length) q.states = states as SessionStateName[];
  }
  for (const key of ["agent", "user"] as const) {
    const v = one(key);
    if (v === undefined) continue;
    if (v.length > 1024) throw new BadRequestError(`${key}: at most 1024 characters`, key);
    q[key] = v;
  }
  const since = one("since");
  const until = one("until");
  if (since !== undefined) q.since = parseInstant(since, now, "since");
  if (until !== undefined) q.until = parseInstant(until, now, "until");
  if (q.since !== undefined && q.until !== undefined && q.since >= q.until) throw new BadRequestError("until: must be later than since", "until");
  return q;
}
