import type * as Party from "partykit/server";
import type { SessionSummary } from "../../schema/protocol";

// The arguments of an action waiting for a human, whole, as the agent sent them. The log
// keeps only the fields the policy's rules read (or hashes), unless `keep_raw`; the person
// deciding needs to see all of it. So the actor holds them beside the log, outside the hash
// chain, for as long as the approval is pending, and drops them once it is decided, times
// out or the session ends.
//
// Storage: everything lives under HELD_ARGS_PREFIX, one record per approval
// (`held-args:<approvalId>`: who it belongs to, its size, its parts) and the arguments'
// JSON in parts (`held-args:<approvalId>#<n>`), since one Durable Object value holds at most
// 128 KiB and an action's arguments may be as large as a request body (1 MiB). Erasing a
// person erases the records whose `user` is theirs (`erase`).

export const HELD_ARGS_PREFIX = "held-args:";
/** Characters per stored part: under 128 KiB even when every character takes two bytes. */
const PART_CHARS = 32_000;
/**
 * Summaries carry held arguments up to this many bytes of JSON per session; they are pushed
 * with every event and stored in the tenant's index. Larger ones are named by size, and
 * `GET /v1/sessions/:id/approvals/:aid` gives them whole.
 */
export const SUMMARY_ARGS_BYTES = 64 * 1024;
/**
 * What one session holds at most. Arguments past it are not held (the log's fields still
 * show): an agent that opens review after review with large arguments must not fill the
 * actor's memory or storage. Only arguments small enough for a summary stay in memory;
 * larger ones are read from storage when asked for.
 */
export const MAX_HELD_BYTES = 8 * 1024 * 1024;

export interface HeldRecord {
  approvalId: string;
  requestId: string;
  action: string;
  /** Attribution of the action, so an erasure finds what belongs to a person. */
  user?: string;
  agent?: string;
  /** UTF-8 bytes of the arguments' JSON. */
  bytes: number;
  parts: number;
  heldAt: number;
}

interface Held {
  record: HeldRecord;
  /** In memory when small enough for a summary; else read from storage when asked for. */
  args?: Record<string, unknown>;
}

type Pending = SessionSummary["pendingApprovals"][number];

const partKey = (approvalId: string, n: number) => `${HELD_ARGS_PREFIX}${approvalId}#${n}`;
const recordKey = (approvalId: string) => `${HELD_ARGS_PREFIX}${approvalId}`;
const utf8Bytes = (s: string) => new TextEncoder().encode(s).length;

export class HeldArgs {
  private held = new Map<string, Held>();

  constructor(private readonly storage: Party.Storage) {}

  /** On start: what was held before a restart, less what is no longer pending. */
  async load(pending: (approvalId: string) => boolean): Promise<void> {
    const stored = await this.storage.list<unknown>({ prefix: HELD_ARGS_PREFIX });
    const records = new Map<string, HeldRecord>();
    const parts = new Map<string, string[]>();
    for (const [key, value] of stored) {
      const rest = key.slice(HELD_ARGS_PREFIX.length);
      const hash = rest.indexOf("#");
      if (hash < 0) records.set(rest, value as HeldRecord);
      else {
        const id = rest.slice(0, hash);
        const list = parts.get(id) ?? [];
        list[Number(rest.slice(hash + 1))] = value as string;
        parts.set(id, list);
      }
    }
    const stale: string[] = [];
    this.held.clear();
    for (const id of new Set([...records.keys(), ...parts.keys()])) {
      const record = records.get(id);
      const text = parts.get(id);
      // A decision whose clean-up did not finish before a restart, or a half-written record.
      if (!record || !pending(id) || !text || text.length !== record.parts || text.some((t) => typeof t !== "string")) {
        stale.push(...this.keysOf(id, Math.max(record?.parts ?? 0, text?.length ?? 0)));
        continue;
      }
      try {
        const args = JSON.parse(text.join("")) as Record<string, unknown>;
        this.held.set(id, { record, ...(record.bytes <= SUMMARY_ARGS_BYTES && { args }) });
      } catch {
        stale.push(...this.keysOf(id, record.parts));
      }
    }
    if (stale.length) await this.deleteKeys(stale);
  }

  /**
   * Holds an approval's arguments. Call it in the same turn as the commit that opened the
   * approval: the runtime stores both writes together, and the summaries pushed once the
   * batch is stored already carry them.
   */
  hold(record: Omit<HeldRecord, "bytes" | "parts" | "heldAt">, args: Record<string, unknown>, now: number): Promise<void> | undefined {
    const text = JSON.stringify(args);
    const bytes = utf8Bytes(text);
    if (this.heldBytes() + bytes > MAX_HELD_BYTES) {
      console.warn(`held arguments: ${record.approvalId} not held, the session already holds ${this.heldBytes()} bytes of pending arguments (limit ${MAX_HELD_BYTES})`);
      return undefined;
    }
    const parts: string[] = [];
    for (let i = 0; i < text.length; i += PART_CHARS) parts.push(text.slice(i, i + PART_CHARS));
    const full: HeldRecord = { ...record, bytes, parts: parts.length, heldAt: now };
    this.held.set(record.approvalId, { record: full, ...(bytes <= SUMMARY_ARGS_BYTES && { args }) });
    const puts: Record<string, unknown> = { [recordKey(record.approvalId)]: full };
    parts.forEach((p, n) => (puts[partKey(record.approvalId, n)] = p));
    return this.putAll(puts);
  }

  get(approvalId: string): HeldRecord | undefined {
    return this.held.get(approvalId)?.record;
  }

  /** Every argument of a pending approval, from memory or storage. */
  async whole(approvalId: string): Promise<Record<string, unknown> | undefined> {
    const h = this.held.get(approvalId);
    if (!h) return undefined;
    if (h.args) return h.args;
    const keys = Array.from({ length: h.record.parts }, (_, n) => partKey(approvalId, n));
    const stored = await this.storage.get<string>(keys);
    const text = keys.map((k) => stored.get(k));
    if (text.some((t) => typeof t !== "string")) return undefined;
    return JSON.parse(text.join("")) as Record<string, unknown>;
  }

  private heldBytes(): number {
    let n = 0;
    for (const h of this.held.values()) n += h.record.bytes;
    return n;
  }

  /** Drops what is held for approvals that are no longer pending. */
  async dropExcept(pending: (approvalId: string) => boolean): Promise<void> {
    const gone = [...this.held.keys()].filter((id) => !pending(id));
    if (!gone.length) return;
    const keys = gone.flatMap((id) => this.keysOf(id, this.held.get(id)!.record.parts));
    for (const id of gone) this.held.delete(id);
    await this.deleteKeys(keys);
  }

  /** Erasure: forgets every held argument of actions attributed to `user`. Answers how many. */
  async erase(user: string): Promise<number> {
    const mine = [...this.held.values()].filter((h) => h.record.user === user);
    const keys = mine.flatMap((h) => this.keysOf(h.record.approvalId, h.record.parts));
    for (const h of mine) this.held.delete(h.record.approvalId);
    if (keys.length) await this.deleteKeys(keys);
    return mine.length;
  }

  /**
   * The summary as those who may read the log see it: each pending approval with its
   * arguments whole (`argsFull`), within SUMMARY_ARGS_BYTES for the session; past that, the
   * size (`argsBytes`) and the log's fields. With `keep_raw` the log's own copy is whole.
   */
  decorate(summary: SessionSummary, keepRaw: boolean): SessionSummary {
    if (!summary.pendingApprovals.length) return summary;
    let budget = SUMMARY_ARGS_BYTES;
    const pendingApprovals = summary.pendingApprovals.map((a): Pending => {
      const h = this.held.get(a.approvalId);
      if (!h) return { ...a, argsFull: keepRaw };
      if (!h.args || h.record.bytes > budget) return { ...a, argsFull: false, argsBytes: h.record.bytes };
      budget -= h.record.bytes;
      return { ...a, args: h.args, argsFull: true, argsBytes: h.record.bytes };
    });
    return { ...summary, pendingApprovals };
  }

  private keysOf(approvalId: string, parts: number): string[] {
    return [recordKey(approvalId), ...Array.from({ length: parts }, (_, n) => partKey(approvalId, n))];
  }

  /** Every put issued in this turn (at most 128 keys each), so the runtime stores them together. */
  private async putAll(entries: Record<string, unknown>) {
    const list = Object.entries(entries);
    const puts: Promise<void>[] = [];
    for (let i = 0; i < list.length; i += 128) puts.push(this.storage.put(Object.fromEntries(list.slice(i, i + 128))));
    await Promise.all(puts);
  }

  private async deleteKeys(keys: string[]) {
    const deletes: Promise<unknown>[] = [];
    for (let i = 0; i < keys.length; i += 128) deletes.push(this.storage.delete(keys.slice(i, i + 128)));
    await Promise.all(deletes);
  }
}
