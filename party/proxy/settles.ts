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
 */
export const CARRY_MS = 25;

type Lobby = { parties: Party.Context["parties"] };
const waiting = new Map<string, SettleOp[]>();
const keyOf = (p: Principal, session: string) => `${p.tenant}:${session}`;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Queues a finished call's settle; it goes with the session's next reserve, or alone after
 * CARRY_MS. The caller keeps its request alive until the promise resolves (waitUntil): by
 * then the settle is sent, or taken by a request that sends it.
 */
export function settleSoon(lobby: Lobby, p: Principal, session: string, op: SettleOp): Promise<void> {
  const key = keyOf(p, session);
  const queue = waiting.get(key) ?? [];
  queue.push(op);
  waiting.set(key, queue);
  return sleep(CARRY_MS).then(() => {
    // Taken by a reserve meanwhile: that request sends it (and sends it again if its hop fails).
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
 * sees the calls' real costs). If the hop fails, they are sent again on their own.
 */
export async function callSessionCarrying(lobby: Lobby, ctx: Party.ExecutionContext, p: Principal, session: string, op: SessionOp): Promise<Response> {
  const settles = take(p, session);
  if (!settles.length) return callSession(lobby, p, session, op);
  try {
    return await callSession(lobby, p, session, { ...op, settles });
  } catch (e) {
    ctx.waitUntil(sendSettles(lobby, p, session, settles));
    throw e;
  }
}

/** Sends settles on their own (one hop, one write for all of them). */
export async function sendSettles(lobby: Lobby, p: Principal, session: string, settles: SettleOp[]): Promise<void> {
  if (!settles.length) return;
  try {
    const res = await callSession(lobby, p, session, { op: "settles", settles });
    await res.body?.cancel();
    if (!res.ok) throw new Error(`the session answered ${res.status}`);
  } catch (e) {
    console.error(`${settles.length} settle(s) not delivered; their reservations will expire at their estimates`, e);
  }
}
