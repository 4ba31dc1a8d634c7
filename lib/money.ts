// Money is summed as integer nano-dollars: float sums drift (0.1 * 10 != 1), and a
// budget must hold to the last cent under any number of small charges.
const NANOS = 1_000_000_000;

/**
 * The most one call, action or reported cost may be, and the most one session may commit
 * (spent + reserved + awaiting approval). Far above any real bill, and far below where
 * nano-dollar integers stop being exact: 1e15 nanos is a ninth of Number.MAX_SAFE_INTEGER
 * (about 9.007e15), so sums of in-bound values stay exact with room to spare.
 */
export const MAX_EVENT_USD = 100_000;
export const MAX_SESSION_USD = 1_000_000;
export const MAX_EVENT_NANOS = MAX_EVENT_USD * NANOS;
export const MAX_SESSION_NANOS = MAX_SESSION_USD * NANOS;

/**
 * Saturating: a value no edge accepts today (a log written before the bounds held 1e300)
 * counts as Number.MAX_SAFE_INTEGER nanos, so folds stay finite and summaries never read
 * null, NaN or Infinity. Exact for every in-bound value.
 */
export function toNanos(usd: number): number {
  if (!(usd > 0)) return 0;
  const n = Math.round(usd * NANOS);
  return n > Number.MAX_SAFE_INTEGER ? Number.MAX_SAFE_INTEGER : n;
}

export function toUsd(nanos: number): number {
  if (!Number.isFinite(nanos)) return nanos > 0 ? Number.MAX_SAFE_INTEGER / NANOS : 0;
  return nanos / NANOS;
}

export interface MoneyLimitHit {
  rule: "max_event_usd" | "max_session_usd";
  reason: string;
}

/** Whether one more cost fits the hard bounds, whatever the policy says. */
export function moneyLimit(committedNanos: number, costNanos: number): MoneyLimitHit | undefined {
  if (costNanos > MAX_EVENT_NANOS) return { rule: "max_event_usd", reason: `$${toUsd(costNanos)} is above the $${MAX_EVENT_USD} that one call or action may cost` };
  if (committedNanos + costNanos > MAX_SESSION_NANOS) return { rule: "max_session_usd", reason: `would bring the session past $${MAX_SESSION_USD}, the most one session may commit` };
  return undefined;
}

/**
 * An amount as a plain decimal, exact to the nano-dollar it is stored as, with no exponent
 * and no trailing zeros: 2e-8 is "0.00000002", 0.25 is "0.25", 3 is "3". For exports read
 * by spreadsheets and scripts, where "2e-8" reads as text or as a different number.
 */
export function usdDecimal(usd: number): string {
  if (!Number.isFinite(usd)) return String(usd);
  const nanos = Math.round(Math.abs(usd) * NANOS);
  const whole = Math.floor(nanos / NANOS);
  const frac = String(nanos % NANOS).padStart(9, "0").replace(/0+$/, "");
  return `${usd < 0 && nanos > 0 ? "-" : ""}${whole}${frac ? `.${frac}` : ""}`;
}
