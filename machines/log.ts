import { eventHash, GENESIS } from "../lib/chain";
import { BadRequestError } from "../lib/errors";
import type { Pii } from "../lib/pii";
import { EventData, type EventDraft, type GovernorEvent } from "../schema/events";
import { step, type SessionSnapshot } from "./session";

export interface Head {
  seq: number;
  hash: string;
}

export const EMPTY_HEAD: Head = { seq: 0, hash: GENESIS };

/** Takes the personal fields and secrets out of an event's data, leaving commitments (lib/pii.ts). */
export type Sealer = (type: string, data: unknown) => { data: unknown; pii?: Pii };

/**
 * Validates, numbers, chains and folds drafts, all on the side: a bad draft throws before
 * anything is returned, so a caller never holds half a batch. With `seal`, each event's
 * personal fields are committed to before it is hashed and folded; `pii[i]` holds what
 * was taken out of `events[i]` (to be stored beside it).
 */
export function appendDrafts(snapshot: SessionSnapshot, head: Head, drafts: EventDraft[], now: number, seal?: Sealer) {
  let snap = snapshot;
  let h = head;
  const events: GovernorEvent[] = [];
  const pii: Array<Pii | undefined> = [];
  for (const d of drafts) {
    const parsed = EventData[d.type].safeParse(d.data);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const path = issue?.path.join(".") ?? "";
      throw new BadRequestError(`${d.type}: ${path}: ${issue?.message}`, path || undefined);
    }
    const sealed = seal ? seal(d.type, parsed.data) : { data: parsed.data };
    const base = { seq: h.seq + 1, id: d.id, ts: now, type: d.type, data: sealed.data, prev: h.hash };
    const event = { ...base, hash: eventHash(base) } as GovernorEvent;
    snap = step(snap, event);
    h = { seq: event.seq, hash: event.hash };
    events.push(event);
    pii.push(sealed.pii);
  }
  return { events, snapshot: snap, head: h, pii };
}
