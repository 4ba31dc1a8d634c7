import { eventHash, GENESIS } from "../lib/chain";
import { BadRequestError } from "../lib/errors";
import { EventData, type EventDraft, type GovernorEvent } from "../schema/events";
import { step, type SessionSnapshot } from "./session";

export interface Head {
  seq: number;
  hash: string;
}

export const EMPTY_HEAD: Head = { seq: 0, hash: GENESIS };

/**
 * Validates, numbers, chains and folds drafts, all on the side: a bad draft throws before
 * anything is returned, so a caller never holds half a batch.
 */
export function appendDrafts(snapshot: SessionSnapshot, head: Head, drafts: EventDraft[], now: number) {
  let snap = snapshot;
  let h = head;
  const events: GovernorEvent[] = [];
  for (const d of drafts) {
    const parsed = EventData[d.type].safeParse(d.data);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const path = issue?.path.join(".") ?? "";
      throw new BadRequestError(`${d.type}: ${path}: ${issue?.message}`, path || undefined);
    }
    const base = { seq: h.seq + 1, id: d.id, ts: now, type: d.type, data: parsed.data, prev: h.hash };
    const event = { ...base, hash: eventHash(base) } as GovernorEvent;
    snap = step(snap, event);
    h = { seq: event.seq, hash: event.hash };
    events.push(event);
  }
  return { events, snapshot: snap, head: h };
}
