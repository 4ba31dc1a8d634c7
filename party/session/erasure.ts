import type * as Party from "partykit/server";
import { personalFields, plainValue, toRanges, valueAt, type Pii } from "../../lib/pii";
import type { EventDraft, GovernorEvent } from "../../schema/events";
import type { SessionSummary } from "../../schema/protocol";
import type { Notifier } from "../notify";
import type { HeldArgs } from "./held-args";
import type { Journal } from "./journal";
import { deleteAll, piiKey, putAll } from "./vault";

// An erasure in one session (GDPR Art. 17): the values and salts behind the commitments
// of every event that belongs to the subject are deleted from `p:<seq>` (the events
// themselves, and so the chain, stay as they are), copies kept outside the log lose them
// (stored answers, the notification outbox, arguments held for pending approvals), and a
// `subject.redacted` event says who erased whom (a keyed digest, never the id) and when.
// Events written before commitments hold their values inside the hash: they are reported
// (`kept`), not touched.
//
// An event belongs to the subject when its own user is the subject's id, or when it names
// no user of its own and the session's user is: a call or action of someone else in the
// subject's session stays theirs.

export interface EraseRequest {
  /** The subject's id, as the attribution carried it. */
  user: string;
  /** Keyed digest of the subject (the tenant's key): what the log records. */
  subject: string;
  erasure: string;
}

export interface EraseAnswer {
  session: string;
  /** Events whose values were deleted now. */
  erased: number[];
  /** Values deleted. */
  values: number;
  /** Events of the subject whose values are inside the hash (written before commitments). */
  kept: number[];
  /** The subject.redacted events appended. */
  appended: number[];
  /** Copies outside the log that were changed: stored answers, outbox bodies, arguments held for pending approvals. */
  purged: { answers: number; outbox: number; held: number };
  summary: SessionSummary;
}

const PAGE = 500;
// Ranges strings per subject.redacted event: ~4000 characters each, so an event stays far below the size limit.
const RANGES_PER_EVENT = 12;

interface Found {
  erase: Map<number, { pii: Pii; pointers: string[] }>;
  kept: Set<number>;
  /** This subject's erasure was recorded here before (a kept-only erasure is not recorded twice). */
  recorded: boolean;
  /** Where the scan ended. */
  seq: number;
}

export class Erasures {
  private running: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly room: Party.Room,
    private readonly journal: Journal,
    private readonly notifier: Notifier,
    private readonly held: HeldArgs,
    private readonly afterErasure: () => Promise<void>,
  ) {}

  /** One erasure at a time: two at once would both find, and both record, the same values. */
  erase(req: EraseRequest, by: string): Promise<EraseAnswer> {
    const next = this.running.then(() => this.run(req, by));
    this.running = next.catch(() => undefined);
    return next;
  }

  private async run(req: EraseRequest, by: string): Promise<EraseAnswer> {
    const j = this.journal;
    const found: Found = { erase: new Map(), kept: new Set(), recorded: false, seq: 0 };
    let sessionUser: unknown;
    // Scan to the head; events appended meanwhile are scanned too, and the writes below
    // happen in one turn with no await, so nothing is appended between the last look and them.
    for (;;) {
      const page = await j.page(found.seq, PAGE, true);
      for (const e of page) sessionUser = this.look(e, req, found, sessionUser);
      if (page.length) found.seq = page[page.length - 1].seq;
      if (page.length < PAGE && found.seq >= j.head.seq) break;
    }

    const puts: Record<string, Pii> = {};
    const deletes: string[] = [];
    const remaining = new Map<number, Pii | undefined>();
    const values: unknown[] = [req.user];
    let count = 0;
    const pointers = new Set<string>();
    for (const [seq, { pii, pointers: gone }] of found.erase) {
      const rest: Pii = {};
      for (const [p, r] of Object.entries(pii)) {
        if (gone.includes(p)) {
          values.push(r.v);
          pointers.add(p);
          count++;
        } else rest[p] = r;
      }
      if (Object.keys(rest).length) puts[piiKey(seq)] = rest;
      else deletes.push(piiKey(seq));
      remaining.set(seq, Object.keys(rest).length ? rest : undefined);
    }
    const record = found.erase.size > 0 || (found.kept.size > 0 && !found.recorded);
    const drafts = record ? redactions(req, by, [...found.erase.keys()], [...found.kept], [...pointers]) : [];
    // One turn: the values go, and the event saying so is appended, together.
    const writes: Array<Promise<unknown>> = [];
    if (Object.keys(puts).length) writes.push(putAll(this.room.storage, puts));
    if (deletes.length) writes.push(deleteAll(this.room.storage, deletes));
    const committed = drafts.length ? j.commit(drafts) : undefined;
    j.vault.forget(new Set(found.erase.keys()), remaining);
    await Promise.all([...writes, committed?.write]);

    // Copies outside the log: stored answers name no subject (they never held personal
    // fields), but ones from before may quote the id; outbox bodies quote the summary and event.
    const answers = await j.purgeAnswers([req.user]);
    const outbox = found.erase.size || found.kept.size ? await this.notifier.purge(values) : 0;
    // Arguments held whole for pending approvals (held-args.ts) name their requester.
    const held = await this.held.erase(req.user);
    await this.afterErasure();
    return {
      session: j.context.session,
      erased: [...found.erase.keys()].sort((a, b) => a - b),
      values: count,
      kept: [...found.kept].sort((a, b) => a - b),
      appended: committed?.events.map((e) => e.seq) ?? [],
      purged: { answers, outbox, held },
      summary: j.summary(),
    };
  }

  /** Notes what of `e` belongs to the subject; returns the session's user as known so far. */
  private look(e: GovernorEvent, req: EraseRequest, found: Found, sessionUser: unknown): unknown {
    if (e.type === "subject.redacted" && e.data.subject === req.subject) found.recorded = true;
    if (e.type === "session.opened") sessionUser = plainValue(e.data, e.pii, "/user");
    const own = e.type === "session.opened" ? "/user" : valueAt(e.data, "/attribution/user") !== undefined ? "/attribution/user" : undefined;
    const who = own ? plainValue(e.data, e.pii, own) : sessionUser;
    if (who !== req.user) return sessionUser;
    const fields = personalFields(e.type, e.data, e.pii);
    const revealed = fields.filter((f) => f.status === "revealed").map((f) => f.pointer);
    if (revealed.length && e.pii) found.erase.set(e.seq, { pii: e.pii, pointers: revealed });
    if (fields.some((f) => f.status === "plain")) found.kept.add(e.seq);
    return sessionUser;
  }
}

/** The subject.redacted events of one erasure: one, or several when it names many events. */
function redactions(req: EraseRequest, by: string, erased: number[], kept: number[], fields: string[]): EventDraft[] {
  const seqs = toRanges(erased);
  const plain = toRanges(kept);
  const drafts: EventDraft[] = [];
  for (let i = 0; i === 0 || i < seqs.length + plain.length; i += RANGES_PER_EVENT) {
    const part = [...seqs.map((r) => ["seqs", r] as const), ...plain.map((r) => ["kept", r] as const)].slice(i, i + RANGES_PER_EVENT);
    const s = part.filter(([k]) => k === "seqs").map(([, r]) => r);
    const k = part.filter(([k]) => k === "kept").map(([, r]) => r);
    drafts.push({
      type: "subject.redacted",
      id: `erase:${req.erasure}${i ? `#${i / RANGES_PER_EVENT}` : ""}`,
      data: { subject: req.subject, fields: fields.sort(), by, erasure: req.erasure, ...(s.length && { seqs: s }), ...(k.length && { kept: k }) },
    });
  }
  return drafts;
}
