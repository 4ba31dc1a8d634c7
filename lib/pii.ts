import { canonicalJson, sha256Hex } from "./chain";

// Personal data and secrets kept beside the hash chain, so they can be erased (GDPR Art.
// 17) or withheld without breaking it.
//
// Inside the hashed event, a personal field (a user id, a task, kept raw arguments or
// messages) or a policy secret (a notification URL) holds a salted commitment,
// `"c:" + sha256hex(salt ‖ canonicalJson(value))`. The value and its salt travel beside the
// event as `pii: {"<JSON pointer into data>": {v, s}}`, which `eventHash` does not cover.
// Deleting a value and its salt leaves a commitment nobody can link to the person (128
// random bits of salt), while the chain, the signed checkpoints and the machine's fold
// (which treats commitments as opaque strings) stay exactly as they were.
//
// Events written before this change hold their values in plain text inside the hash:
// those cannot be erased without breaking the chain, and are reported instead (`plain`).

export interface Revealed {
  /** The value as it was sent. */
  v: unknown;
  /** 16 random bytes, hex. */
  s: string;
}

/** JSON pointer (RFC 6901) into the event's `data` -> the value and salt behind its commitment. */
export type Pii = Record<string, Revealed>;

const COMMITMENT = /^c:[0-9a-f]{64}$/;
export const SALT = /^[0-9a-f]{32}$/;

export function isCommitment(x: unknown): x is string {
  return typeof x === "string" && x.length === 66 && COMMITMENT.test(x);
}

export function commit(value: unknown, salt: string): string {
  return `c:${sha256Hex(salt + canonicalJson(value))}`;
}

const ATTRIBUTION = ["/attribution/user", "/attribution/task"] as const;

/**
 * The personal fields of each event type: who the person is (`user`), what they asked for
 * (`task`, X-Task-Context), and any raw text kept from them (an action's arguments, a tool
 * error's message, a scanner's detail). Agent, run and action names, model names, hashes
 * and amounts are the deployment's own vocabulary, not the person's, and stay in the clear.
 */
const PERSONAL: Record<string, readonly string[]> = {
  "session.opened": ["/user", "/task"],
  "request.reserved": ATTRIBUTION,
  "request.settled": ATTRIBUTION,
  "request.denied": ATTRIBUTION,
  "action.checked": [...ATTRIBUTION, "/args"],
  "approval.requested": [...ATTRIBUTION, "/args"],
  "error.recorded": ["/message"],
  "violation.recorded": ["/detail"],
};

/** Pointers of the person's own id: what an erasure matches its subject against. */
export const USER_POINTERS = new Set(["/user", "/attribution/user"]);
export const TASK_POINTERS = new Set(["/task", "/attribution/task"]);

export function personalPointers(type: string): readonly string[] {
  return PERSONAL[type] ?? [];
}

/** Secrets of the policy a session was opened with: its notification URLs (operators only). */
export function secretPointers(type: string, data: unknown): string[] {
  if (type !== "session.opened") return [];
  const notify = (data as { policy?: { notify?: unknown } } | null)?.policy?.notify;
  if (!Array.isArray(notify)) return [];
  const out: string[] = [];
  notify.forEach((t, i) => {
    if (t && typeof t === "object") for (const k of ["slack", "webhook"]) if (typeof (t as Record<string, unknown>)[k] === "string") out.push(`/policy/notify/${i}/${k}`);
  });
  return out;
}

export const isSecretPointer = (pointer: string) => pointer.startsWith("/policy/");

// Pointers are few and asked for on every event: each is split once.
const split = new Map<string, string[]>();

function tokens(pointer: string): string[] {
  let t = split.get(pointer);
  if (!t) {
    t = pointer
      .split("/")
      .slice(1)
      .map((x) => x.replace(/~1/g, "/").replace(/~0/g, "~"));
    if (split.size < 1024) split.set(pointer, t);
  }
  return t;
}

export function valueAt(data: unknown, pointer: string): unknown {
  let at: unknown = data;
  for (const t of tokens(pointer)) {
    if (at === null || typeof at !== "object") return undefined;
    at = Object.hasOwn(at, t) ? (at as Record<string, unknown>)[t] : undefined;
  }
  return at;
}

/** A copy of `data` with `value` at `pointer`; the objects on the path are copied, nothing else. */
export function withValueAt<T>(data: T, pointer: string, value: unknown): T {
  const path = tokens(pointer);
  const put = (node: unknown, i: number): unknown => {
    if (i === path.length) return value;
    if (node === null || typeof node !== "object") return node;
    const key = path[i];
    const copy: Record<string, unknown> | unknown[] = Array.isArray(node) ? [...node] : { ...(node as Record<string, unknown>) };
    (copy as Record<string, unknown>)[key] = put((node as Record<string, unknown>)[key], i + 1);
    return copy;
  };
  return put(data, 0) as T;
}

/**
 * Replaces every personal field and policy secret of `data` with its commitment. `salt`
 * makes a fresh salt for each (the machine stays pure: randomness comes from the caller).
 */
export function seal<T>(type: string, data: T, salt: () => string): { data: T; pii?: Pii } {
  let out = data;
  let pii: Pii | undefined;
  for (const p of [...personalPointers(type), ...secretPointers(type, data)]) {
    const v = valueAt(out, p);
    if (v === undefined) continue;
    const s = salt();
    out = withValueAt(out, p, commit(v, s));
    (pii ??= {})[p] = { v, s };
  }
  return pii ? { data: out, pii } : { data: out };
}

/** Why the values beside an event do not belong to it, or undefined when each matches its commitment. */
export function piiProblem(data: unknown, pii: Pii | undefined): string | undefined {
  if (!pii) return undefined;
  for (const [p, r] of Object.entries(pii)) {
    const at = valueAt(data, p);
    if (!isCommitment(at)) return `the value given beside the event for ${p} has no commitment there`;
    if (commit(r.v, r.s) !== at) return `the value given beside the event for ${p} does not match its commitment`;
  }
  return undefined;
}

/** `data` with every value beside it put back in place of its commitment. */
export function reveal<T>(data: T, pii: Pii | undefined): T {
  if (!pii) return data;
  let out = data;
  for (const [p, r] of Object.entries(pii)) if (isCommitment(valueAt(out, p))) out = withValueAt(out, p, r.v);
  return out;
}

/** The values a reader may see: policy secrets only for those who may configure (operators). */
export function visiblePii(pii: Pii | undefined, secrets: boolean): Pii | undefined {
  if (!pii || secrets) return pii;
  let out: Pii | undefined;
  for (const [p, r] of Object.entries(pii)) if (!isSecretPointer(p)) (out ??= {})[p] = r;
  return out;
}

export type FieldStatus = "revealed" | "erased" | "plain";

/**
 * The personal fields of one event and where each stands: `revealed` (a commitment with
 * its value beside it), `erased` (a commitment whose value is gone), `plain` (written
 * before commitments, inside the hash for good).
 */
export function personalFields(type: string, data: unknown, pii: Pii | undefined): Array<{ pointer: string; status: FieldStatus; value?: unknown }> {
  const out: Array<{ pointer: string; status: FieldStatus; value?: unknown }> = [];
  for (const p of personalPointers(type)) {
    const at = valueAt(data, p);
    if (at === undefined) continue;
    if (isCommitment(at)) out.push(pii?.[p] ? { pointer: p, status: "revealed", value: pii[p].v } : { pointer: p, status: "erased" });
    else out.push({ pointer: p, status: "plain", value: at });
  }
  return out;
}

/** A commitment's value from `pii` at `pointer`; a plain (old) value as it is; undefined when erased or absent. */
export function plainValue(data: unknown, pii: Pii | undefined, pointer: string): unknown {
  const at = valueAt(data, pointer);
  if (!isCommitment(at)) return at;
  return pii?.[pointer]?.v;
}

// ---------------------------------------------------------------- sequence ranges

const RANGE_TEXT = 4000;

/** Runs of consecutive seqs, sorted and without repeats: ["1-5", "9", "12-40"]. */
export function seqRuns(seqs: Iterable<number>): string[] {
  const sorted = [...new Set(seqs)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    parts.push(i === j ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts;
}

/** Sorted seqs as "1-5,9,12-40" strings of at most ~4000 characters each. */
export function toRanges(seqs: Iterable<number>): string[] {
  const parts = seqRuns(seqs);
  const out: string[] = [];
  let cur = "";
  for (const p of parts) {
    if (cur && cur.length + p.length + 1 > RANGE_TEXT) {
      out.push(cur);
      cur = "";
    }
    cur = cur ? `${cur},${p}` : p;
  }
  if (cur) out.push(cur);
  return out;
}

/** The seqs of `toRanges` strings below `below` (a redaction names earlier events only); anything else is skipped. */
export function fromRanges(texts: readonly string[] | undefined, below = Number.MAX_SAFE_INTEGER): number[] {
  const out: number[] = [];
  for (const t of texts ?? []) {
    for (const part of t.split(",")) {
      const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
      if (!m) continue;
      const a = Number(m[1]);
      const b = Math.min(m[2] === undefined ? a : Number(m[2]), below - 1);
      for (let s = a; s <= b; s++) out.push(s);
    }
  }
  return out;
}

// ---------------------------------------------------------------- copies outside the log

export const ERASED = "[erased]";

/**
 * Removes erased values from a record kept outside the log (an outbox body, an
 * idempotency answer): any part equal to one of `values` becomes "[erased]", and a text
 * that contains one of them as a whole word has it replaced. Returns the same object
 * when nothing matched, so a caller can tell whether to write it back.
 */
export function scrub<T>(record: T, values: readonly unknown[]): T {
  const whole = new Set(values.map((v) => canonicalJson(v)));
  const words = values.filter((v): v is string => typeof v === "string" && v.trim().length > 0);
  const walk = (node: unknown): unknown => {
    if (node !== null && typeof node === "object" && whole.has(canonicalJson(node))) return ERASED;
    if (typeof node === "string") {
      if (whole.has(JSON.stringify(node))) return ERASED;
      let out = node;
      for (const w of words) if (out.includes(w)) out = replaceWord(out, w);
      return out;
    }
    if (Array.isArray(node)) {
      const next = node.map(walk);
      return next.some((x, i) => x !== node[i]) ? next : node;
    }
    if (node !== null && typeof node === "object") {
      let changed = false;
      const next: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(node)) {
        next[k] = walk(v);
        if (next[k] !== v) changed = true;
      }
      return changed ? next : node;
    }
    return node;
  };
  return walk(record) as T;
}

/** `word` replaced where it is not part of a longer word (so "al" leaves "also" alone). */
function replaceWord(text: string, word: string): string {
  const isWord = (c: string | undefined) => c !== undefined && /[\p{L}\p{N}_]/u.test(c);
  let out = "";
  let from = 0;
  for (let i = text.indexOf(word); i !== -1; i = text.indexOf(word, i + 1)) {
    if (i < from) continue;
    if (isWord(text[i - 1]) || isWord(text[i + word.length])) continue;
    out += text.slice(from, i) + ERASED;
    from = i + word.length;
  }
  return from === 0 && out === "" ? text : out + text.slice(from);
}
