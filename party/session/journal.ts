import type * as Party from "partykit/server";
import { GENESIS } from "../../lib/chain";
import { GovernorError } from "../../lib/errors";
import { toUsd } from "../../lib/money";
import { remainingUsd, type View } from "../../machines/decide";
import { scrub, seal, type Pii } from "../../lib/pii";
import { appendDrafts } from "../../machines/log";
import { initialSnapshot, restore, stateOf, step, type SessionSnapshot, type SessionState } from "../../machines/session";
import type { SessionContext } from "../../machines/context";
import { summarize } from "../../machines/summary";
import type { EventDraft, GovernorEvent } from "../../schema/events";
import { putAll, Vault } from "./vault";

// The session's log: the folded state in memory, the events in storage, and the
// idempotency records that make a retry get the first answer.
//
// The actor decides in one synchronous turn; `commit` validates, chains and folds a batch
// on the side, takes it only when all of it is good, and stores it in one `put`. Whoever
// listens (sockets, webhooks, waiters, timers) hears of the events only once they are stored.

const SNAPSHOT_EVERY = 256;
// Durable Object values hold at most 128 KiB; an event stays well under it.
const MAX_EVENT_BYTES = 100_000;
const SNAPSHOT_KEY = "snapshot";
const IDEM_CACHE = 4096;

export const eventKey = (seq: number) => `e:${String(seq).padStart(12, "0")}`;

interface Persisted {
  seq: number;
  hash: string;
  value: SessionState;
  context: SessionContext;
}

/** Extra records a batch stores with its events (e.g. final approval decisions), keyed by storage key. */
export type Extras = Map<string, unknown>;

export interface Committed {
  events: GovernorEvent[];
  /** The values beside each event (`pii[i]` for `events[i]`), stored under `p:<seq>`. */
  pii: Array<Pii | undefined>;
  before: SessionSnapshot;
  after: SessionSnapshot;
  extras: Extras;
}

export class Journal {
  snapshot: SessionSnapshot = initialSnapshot();
  head = { seq: 0, hash: GENESIS };
  private idem = new Map<string, unknown>();
  private inflight = new Map<string, Promise<unknown>>();
  /** Adds records to a batch before it is stored (runs inside the decision's turn). */
  extrasFor: (events: GovernorEvent[], before: SessionSnapshot, after: SessionSnapshot) => Extras = () => new Map();
  /** Follow-ups once a batch is stored; each runs on its own, so one failing does not stop the rest. */
  private listeners: Array<(c: Committed) => void> = [];

  readonly vault: Vault;

  constructor(private readonly storage: Party.Storage) {
    this.vault = new Vault(storage);
  }

  onCommitted(fn: (c: Committed) => void) {
    this.listeners.push(fn);
  }

  async load() {
    const saved = await this.storage.get<Persisted>(SNAPSHOT_KEY);
    let snap = saved ? restore(saved.value, saved.context) : initialSnapshot();
    let head = saved ? { seq: saved.seq, hash: saved.hash } : { seq: 0, hash: GENESIS };
    const tail = await this.storage.list<GovernorEvent>({ prefix: "e:", start: eventKey(head.seq + 1) });
    for (const e of tail.values()) {
      snap = step(snap, e);
      head = { seq: e.seq, hash: e.hash };
    }
    this.snapshot = snap;
    this.head = head;
    await this.vault.load(snap.context);
  }

  get view(): View {
    return { state: stateOf(this.snapshot), context: this.snapshot.context };
  }

  get context(): SessionContext {
    return this.snapshot.context;
  }

  isLive(): boolean {
    const s = stateOf(this.snapshot);
    return s !== "killed" && s !== "closed";
  }

  money(): { spentUsd: number; remainingUsd: number | null } {
    const c = this.snapshot.context;
    return { spentUsd: toUsd(c.spentNanos), remainingUsd: remainingUsd(c) };
  }

  /**
   * Validates, chains and folds every draft on the side; only when all are good does the
   * actor take them, so a bad draft leaves neither memory nor storage half-written.
   */
  commit(drafts: EventDraft[], idem?: { key: string; answer: (v: View) => unknown; fresh?: boolean }): { events: GovernorEvent[]; write: Promise<void>; answer?: unknown } {
    const before = this.snapshot;
    // Personal fields and policy secrets are committed to inside the event; their values
    // are stored beside it (lib/pii.ts), where an erasure can delete them.
    const { events, snapshot: snap, head, pii } = appendDrafts(this.snapshot, this.head, drafts, Date.now(), (type, data) => seal(type, data, newSalt));
    const puts: Record<string, unknown> = {};
    events.forEach((e, i) => {
      const size = JSON.stringify(e).length + (pii[i] ? JSON.stringify(pii[i]).length : 0);
      if (size > MAX_EVENT_BYTES) throw new GovernorError("payload_too_large", 413, `the ${e.type} event would be ${size} bytes (limit ${MAX_EVENT_BYTES}): send smaller arguments or leave keep_raw off`);
      puts[eventKey(e.seq)] = e;
    });
    this.vault.stage(puts, events, pii);
    const extras = events.length ? this.extrasFor(events, before, snap) : new Map<string, unknown>();
    for (const [key, value] of extras) {
      puts[`i:${key}`] = value;
      this.remember(key, value);
    }
    this.snapshot = snap;
    this.head = head;
    this.vault.track(events, pii, snap.context);
    let answer: unknown;
    if (idem) {
      answer = idem.answer(this.view);
      // A key we generated cannot come back in a retry: nothing to remember it by.
      if (!idem.fresh) {
        puts[`i:${idem.key}`] = answer;
        this.remember(idem.key, answer);
      }
    }
    const stored = Object.keys(puts).length ? putAll(this.storage, puts).then(() => undefined) : Promise.resolve();
    const write = stored.then(
      () => {
        if (!events.length) return;
        const c: Committed = { events, pii, before, after: snap, extras };
        for (const fn of this.listeners) {
          try {
            fn(c);
          } catch (e) {
            console.error("after-commit step failed", e);
          }
        }
        // The snapshot (of the batch's end) goes in its own write, after the events it
        // covers: if it is too large to store, the session still works, waking a bit slower.
        if (events.some((e) => e.seq % SNAPSHOT_EVERY === 0)) {
          const snapshot: Persisted = { seq: head.seq, hash: head.hash, value: stateOf(snap), context: snap.context };
          this.storage.put(SNAPSHOT_KEY, snapshot).catch((e) => console.error("snapshot not stored; the next wake-up folds more events", e));
        }
      },
      (e) => this.writeFailed(e),
    );
    return { events, write, answer };
  }

  /** Memory ran ahead of a write that failed: start again from what storage holds. */
  private async writeFailed(e: unknown): Promise<never> {
    console.error("storage write failed; reloading the session", e);
    this.idem.clear();
    await this.load();
    throw new GovernorError("internal_error", 503, "the event could not be stored; nothing was recorded, try again");
  }

  /**
   * An erasure: stored answers (kept for retries) lose the erased values, and the cache of
   * them is dropped so nothing older is served. Returns how many were changed.
   */
  async purgeAnswers(values: readonly unknown[], pageSize = 1000): Promise<number> {
    this.idem.clear();
    let changed = 0;
    let start: string | undefined;
    for (;;) {
      const page = await this.storage.list<unknown>({ prefix: "i:", ...(start !== undefined && { start }), limit: pageSize });
      const puts: Record<string, unknown> = {};
      for (const [key, answer] of page) {
        if (key === start) continue;
        const clean = scrub(answer, values);
        if (clean !== answer) puts[key] = clean;
      }
      if (Object.keys(puts).length) {
        await putAll(this.storage, puts);
        changed += Object.keys(puts).length;
      }
      if (page.size < pageSize) return changed;
      start = [...page.keys()].at(-1);
    }
  }

  remember(key: string, answer: unknown) {
    this.idem.set(key, answer);
    if (this.idem.size > IDEM_CACHE) this.idem.delete(this.idem.keys().next().value as string);
  }

  async recall(key: string): Promise<unknown> {
    if (this.idem.has(key)) return this.idem.get(key);
    const stored = await this.storage.get(`i:${key}`);
    if (stored !== undefined) this.remember(key, stored);
    return stored;
  }

  /**
   * Runs `decide` once per idempotency key: a retry, or a duplicate racing the first,
   * gets the first answer instead of being charged again.
   */
  async once<T>(key: string, decide: () => Promise<T>, fresh = false): Promise<T> {
    const running = this.inflight.get(key);
    if (running) return running as Promise<T>;
    const p = (async () => {
      // An id we generated ourselves cannot have been seen before: skip the storage read.
      const prior = fresh ? undefined : await this.recall(key);
      if (prior !== undefined) return prior as T;
      return decide();
    })();
    this.inflight.set(key, p);
    try {
      return await p;
    } finally {
      this.inflight.delete(key);
    }
  }

  /**
   * `trailer`: a last line for the page that reaches the head (the signed checkpoint).
   * Each event carries its values beside it; `secrets` readers (operators) get the
   * policy's secrets among them too.
   */
  async log(after: number, limit: number, secrets: boolean, trailer?: (reached: { seq: number; hash: string }) => Promise<string | undefined>): Promise<Response> {
    const page = await this.page(after, limit, secrets);
    const lines = page.map((e) => JSON.stringify(e));
    const last = page.at(-1);
    const headers: Record<string, string> = { "content-type": "application/x-ndjson", "x-governor-head-seq": String(this.head.seq) };
    if (last && last.seq < this.head.seq) headers["x-governor-next-after"] = String(last.seq);
    else if (trailer && this.head.seq > 0 && (last ?? (after === this.head.seq ? this.head : undefined))) {
      const line = await trailer(last ?? this.head);
      if (line) lines.push(line);
    }
    return new Response(lines.length ? `${lines.join("\n")}\n` : "", { headers });
  }

  /** Up to `limit` events after `after`, with their values beside them. */
  async page(after: number, limit: number, secrets: boolean): Promise<GovernorEvent[]> {
    const page = await this.storage.list<GovernorEvent>({ prefix: "e:", start: eventKey(after + 1), limit });
    return this.vault.join([...page.values()], secrets);
  }

  /** Events after `after`, page by page, with their values beside them. */
  async *events(after: number, secrets: boolean, pageSize = 500): AsyncGenerator<GovernorEvent> {
    let from = after;
    for (;;) {
      const page = await this.page(from, pageSize, secrets);
      for (const e of page) {
        yield e;
        from = e.seq;
      }
      if (page.length < pageSize) return;
    }
  }

  /** The live summary: the folded state with the values it refers to revealed (until erased). */
  summary(snapshot: SessionSnapshot = this.snapshot) {
    return this.vault.summary(summarize(snapshot));
  }
}

/** 16 random bytes, hex: each committed value gets its own. */
function newSalt(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  let out = "";
  for (const x of b) out += x.toString(16).padStart(2, "0");
  return out;
}
