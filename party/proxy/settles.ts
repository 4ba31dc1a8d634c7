import type * as Party from "partykit/server";
import type { Principal } from "../auth";
import { callSession } from "../calls";
import type { SessionOp, SettleOp } from "../ops";

// Settles of finished calls, carried to the session's actor on its next hop instead of a
// hop of their own: a settle waits up to CARRY_MS for the same session's next hop from
// this isolate (a reserve, mostly), which takes every waiting settle along (the actor
// applies them before it handles the op, in the same turn); if none comes, it goes on its
// own then.
// An agent calling in a loop thus pays one actor round trip per call instead of two.
//
// Nothing is lost or counted twice by waiting: the reservation covers the call's cost
// until its settle lands, a settle is applied only to a reservation still open, and one
// that never arrives is charged at its estimate by the actor's alarm. The queue lives in
// this isolate's memory; each settle keeps its own request alive (waitUntil) until it
// has been handed to the actor, by whichever request sends it.

/**
 * A tight agent loop's turnaround (answer received, next call sent), with room for a busy
 * machine; a settle is delayed by at most this. Meanwhile any hop to the session from this
 * isolate carries it (a budget check, an action), so only readers elsewhere (the console,
 * socket checks) see the reservation a little longer than the call.
 * GOVERNOR_SETTLE_CARRY_MS sets it (0: every settle goes at once, on its own hop).
 */
export const CARRY_MS = 25;
const MAX_CARRY_MS = 1_000;

export function carryMs(env: Record<string, unknown>): number {
  const raw = env.GOVERNOR_SETTLE_CARRY_MS;
  const ms = typeof raw === "string" && raw.trim() !== "" ? Number(raw) : NaN;
  return Number.isFinite(ms) && ms >= 0 ? Math.min(ms, MAX_CARRY_MS) : CARRY_MS;
}

type Lobby = { parties: Party.Context["parties"] };
/** Settles waiting for a hop, by tenant and session. */
const waiting = new Map<string, SettleOp[]>();
/** Settles sent on their own whose hop has not been answered yet. */
const sending = new Map<string, Set<SettleOp>>();
const keyOf = (p: Principal, session: string) => `${p.tenant}:${session}`;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Queues a finished call's settle; it goes with the session's next hop, or alone after
 * `ms`. The caller keeps its request alive until the promise resolves (waitUntil): by
 * then the settle is sent, or taken by a request that sends it.
 */
export function settleSoon(lobby: Lobby, p: Principal, session: string, op: SettleOp, ms = CARRY_MS): Promise<void> {
  if (ms <= 0) return sendSettles(lobby, p, session, [...take(p, session), op]);
  const key = keyOf(p, session);
  const queue = waiting.get(key) ?? [];
  queue.push(op);
  waiting.set(key, queue);
  return sleep(ms).then(() => {
    // Taken by a hop meanwhile: that request sends it (and sends it again if its hop fails).
    if (waiting.get(key) !== queue) return;
    return sendSettles(lobby, p, session, take(p, session));
  });
}

/** The settles waiting for this session, removed from the queue: the caller now sends them. */
export function take(p: Principal, session: string): SettleOp[] {
  const key = keyOf(p, session);
  const queue = waiting.get(key);
  if (!queue) return [];
  waiting.delete(key);
  return queue;
}

/**
 * A hop to the session's actor that takes the settles waiting for it along (any op: the
 * actor applies them before it handles the op, so a reserve, an action or a budget check
 * sees the calls' real costs). Settles already on their way on a hop of their own go along
 * again: the hops are not ordered, and the actor applies a settle only once (a repeat finds
 * its reservation closed). If this hop fails, the waiting ones are sent again on their own.
 */
export async function callSessionCarrying(lobby: Lobby, ctx: Party.ExecutionContext, p: Principal, session: string, op: SessionOp): Promise<Response> {
  const taken = take(p, session);
  const settles = [...(sending.get(keyOf(p, session)) ?? []), ...taken];
  if (!settles.length) return callSession(lobby, p, session, op);
  try {
    return await callSession(lobby, p, session, { ...op, settles });
  } catch (e) {
    ctx.waitUntil(sendSettles(lobby, p, session, taken));
    throw e;
  }
}

/** Sends settles on their own (one hop, one write for all of them). */
export async function sendSettles(lobby: Lobby, p: Principal, session: string, settles: SettleOp[]): Promise<void> {
  if (!settles.length) return;
  const key = keyOf(p, session);
  const inFlight = sending.get(key) ?? new Set<SettleOp>();
  for (const s of settles) inFlight.add(s);
  sending.set(key, inFlight);
  try {
    const res = await callSession(lobby, p, session, { op: "settles", settles });
    await res.body?.cancel();
    if (!res.ok) throw new Error(`the session answered ${res.status}`);
  } catch (e) {
    console.error(`${settles.length} settle(s) not delivered; their reservations will expire at their estimates`, e);
  } finally {
    for (const s of settles) inFlight.delete(s);
    if (!inFlight.size && sending.get(key) === inFlight) sending.delete(key);
  }
}
