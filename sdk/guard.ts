import type { BoundSession } from "./bound";
import { UNREACHABLE } from "./client";
import { ActionDeniedError } from "./errors";
import type { ActionDecision, FailMode } from "./types";

// guard(): a tool function that asks Governor before it runs, waits for an operator when
// the policy wants one, is charged its cost, and leaves a fact behind when it fails. The
// tool's own exceptions always reach the caller unchanged.

export interface GuardOptions<A extends unknown[], R> {
  /** Declared cost in USD, charged when the action is allowed (or approved). */
  costUsd?: number | ((...args: A) => number);
  /** Cost known only once the tool has run (say, from its answer); reported as a cost fact. */
  cost?: (result: Awaited<R>, ...args: A) => number | null | undefined;
  /**
   * The arguments as the policy sees them (`actions.rules.<name>.<field>`). Default: the
   * first argument when it is a plain object, else `{ args: [...] }`.
   */
  args?: (...args: A) => Record<string, unknown>;
  /** An idempotency key per call: a retried call with the same id is not decided (or charged) twice. */
  id?: (...args: A) => string | undefined;
  /** What to do when Governor cannot be reached; default: the client's, else the policy's fail_mode. */
  failMode?: FailMode;
  /** Called once when the action waits for an operator (the review's approvalId is in the decision). */
  onReview?: (decision: ActionDecision) => void;
  /** A failed cost or error report; the tool's outcome stands either way. Default: console.warn. */
  onReportError?: (error: unknown) => void;
  signal?: AbortSignal;
}

export interface DecideInput {
  id: string;
  args: Record<string, unknown>;
  costUsd?: number;
  failMode?: FailMode;
  signal?: AbortSignal;
  onReview?: (decision: ActionDecision) => void;
}

/** How long a review survives Governor being unreachable before it counts as denied. */
const REVIEW_OUTAGE_MS = 30_000;
/** Each long poll for an operator's decision; the server holds at most 120 s. */
const REVIEW_POLL_SECONDS = 60;

/** The first answer to the check, without waiting on a review. */
export async function firstDecision(session: BoundSession, name: string, input: DecideInput): Promise<ActionDecision> {
  await session.ensurePolicyKnown();
  return session.check(name, { id: input.id, args: input.args, costUsd: input.costUsd, failMode: input.failMode, signal: input.signal });
}

/**
 * Waits out a review: the same check id asked again answers the operator's decision once
 * there is one (or the policy's on_timeout at the approval deadline, decided by the actor).
 * An outage while waiting is retried for a while, then denies: a human was asked, so no
 * fail-open applies.
 */
export async function awaitDecision(session: BoundSession, name: string, input: DecideInput, first: ActionDecision): Promise<ActionDecision> {
  let d = first;
  if (d.decision !== "review") return d;
  input.onReview?.(d);
  let outageSince: number | undefined;
  while (d.decision === "review") {
    input.signal?.throwIfAborted();
    const next = await session.check(name, { id: input.id, args: input.args, costUsd: input.costUsd, waitSeconds: REVIEW_POLL_SECONDS, failMode: "closed", signal: input.signal });
    if (next.code !== UNREACHABLE) {
      outageSince = undefined;
      d = next;
      continue;
    }
    outageSince ??= Date.now();
    if (Date.now() - outageSince > REVIEW_OUTAGE_MS) return { ...next, approvalId: first.approvalId };
    await new Promise((r) => setTimeout(r, 1000));
  }
  return d;
}

export function deniedError(name: string, d: ActionDecision): ActionDeniedError {
  return new ActionDeniedError(name, { code: d.code, rule: d.rule, reason: d.reason, approvalId: d.approvalId, retryAfter: d.retryAfter });
}

/** The final decision (allow or deny), waiting out a review. */
export async function decide(session: BoundSession, name: string, input: DecideInput): Promise<ActionDecision> {
  return awaitDecision(session, name, input, await firstDecision(session, name, input));
}

function errorCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === "string" && code.length > 0) return code.slice(0, 128);
  if (typeof code === "number") return String(code);
  const name = (e as { name?: unknown } | null)?.name;
  return typeof name === "string" && name.length > 0 ? name.slice(0, 128) : undefined;
}

function errorMessage(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.slice(0, 1024);
}

const warn = (e: unknown) => console.warn(`governor: a report did not reach Governor: ${(e as Error)?.message ?? e}`);

/**
 * Runs an allowed tool: a throw is reported as an `error` fact and rethrown as it was; a
 * cost known only afterwards is reported as a `cost` fact. Report ids derive from the
 * check's id, so a retried run does not count twice.
 */
export async function runAllowed<R>(
  session: BoundSession,
  name: string,
  id: string,
  run: () => R | Promise<R>,
  opts: { cost?: (result: R) => number | null | undefined; onReportError?: (e: unknown) => void } = {},
): Promise<R> {
  const onReportError = opts.onReportError ?? warn;
  let result: R;
  try {
    result = await run();
  } catch (e) {
    await session.report({ id: `${id}:error`, type: "error", action: name, code: errorCode(e), message: errorMessage(e) }).catch(onReportError);
    throw e;
  }
  let usd: number | null | undefined;
  try {
    usd = opts.cost?.(result);
  } catch (e) {
    onReportError(e);
  }
  if (typeof usd === "number" && Number.isFinite(usd) && usd > 0) {
    await session.report({ id: `${id}:cost`, type: "cost", usd, action: name, run: session.attribution.run }).catch(onReportError);
  }
  return result;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

export function argsOf(args: unknown[]): Record<string, unknown> {
  if (args.length === 0) return {};
  if (args.length === 1 && isPlainObject(args[0])) return args[0];
  return { args };
}

/**
 * Wraps a tool function (sync or async; the guarded one is async). Allow runs it; deny
 * throws `ActionDeniedError` naming the rule; review waits for an operator.
 */
export function guard<A extends unknown[], R>(session: BoundSession, name: string, fn: (...args: A) => R, opts: GuardOptions<A, R> = {}): (...args: A) => Promise<Awaited<R>> {
  return async (...args: A): Promise<Awaited<R>> => {
    const id = opts.id?.(...args) ?? crypto.randomUUID();
    const costUsd = typeof opts.costUsd === "function" ? opts.costUsd(...args) : opts.costUsd;
    const d = await decide(session, name, { id, args: opts.args ? opts.args(...args) : argsOf(args), costUsd, failMode: opts.failMode, signal: opts.signal, onReview: opts.onReview });
    if (d.decision !== "allow") throw deniedError(name, d);
    return runAllowed<Awaited<R>>(session, name, id, () => fn(...args) as Awaited<R> | Promise<Awaited<R>>, {
      cost: opts.cost && ((r) => opts.cost!(r, ...args)),
      onReportError: opts.onReportError,
    });
  };
}
