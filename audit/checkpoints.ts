import { and, asc, eq, inArray } from "drizzle-orm";
import { importPublicKey, SignedCheckpoint, verifyCheckpoint, type PublicKey } from "../lib/checkpoint";
import { auditCheckpoints, auditEvents } from "../schema/audit";
import type { AuditDb } from "./db";
import type { Refusal } from "./ingest";
import type { Source } from "./source";

// Signed checkpoints in the audit store (lib/checkpoint.ts): the sync keeps each signed
// head it reads (the log route's last line, the tail socket's `checkpoint` messages) once
// it has verified it with the deployment's public key and against the events it stored.
// A checkpoint that fails is refused and reported like a forged event; exports can carry
// the stored ones, so a reader can prove the copy is the log Governor signed.

export type KeyState = { key: PublicKey } | { none: string };

/** The deployment's public key, from `GET /v1/checkpoints/key`. */
export async function fetchKey(src: Source, signal?: AbortSignal): Promise<KeyState> {
  try {
    const res = await fetch(`${src.url.replace(/\/+$/, "")}/v1/checkpoints/key`, { headers: { authorization: `Bearer ${src.token}` }, signal });
    const text = await res.text();
    if (!res.ok) return { none: `GET /v1/checkpoints/key answered ${res.status}: ${text.slice(0, 200)}` };
    return { key: await importPublicKey(text) };
  } catch (e) {
    return { none: `the checkpoint key could not be read: ${(e as Error).message}` };
  }
}

export type Checked = { ok: SignedCheckpoint } | { later: SignedCheckpoint } | { refused: Refusal };

/**
 * One checkpoint as read (an NDJSON line, or a socket message without its `type`):
 * well-formed, of this session, signed by the deployment's key, and naming the hash the
 * store holds at its seq. One past the stored head waits (`later`) for its events.
 */
export async function checkCheckpoint(raw: unknown, tenant: string, session: string, key: PublicKey, stored: { seq: number; hashAt: (seq: number) => Promise<string | undefined> }): Promise<Checked> {
  const parsed = SignedCheckpoint.safeParse(raw);
  const seqHint = (raw as { checkpoint?: { seq?: unknown } } | null)?.checkpoint?.seq;
  const at = typeof seqHint === "number" && Number.isInteger(seqHint) && seqHint > 0 ? seqHint : stored.seq + 1;
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return { refused: { seq: at, reason: `checkpoint refused: malformed (${issue?.path.join(".") || "(root)"}: ${issue?.message})` } };
  }
  const c = parsed.data;
  const cp = c.checkpoint;
  if (cp.tenant !== tenant || cp.session !== session) return { refused: { seq: cp.seq, reason: `checkpoint refused: it was signed for ${cp.tenant}:${cp.session}, not ${tenant}:${session}` } };
  if (c.kid !== key.kid) return { refused: { seq: cp.seq, reason: `checkpoint refused: signed with key ${c.kid}, not this deployment's (${key.kid})` } };
  if (!(await verifyCheckpoint(c, key))) return { refused: { seq: cp.seq, reason: `checkpoint refused: the signature for seq ${cp.seq} is not valid` } };
  if (cp.seq > stored.seq) return { later: c };
  const hash = await stored.hashAt(cp.seq);
  if (hash !== cp.hash) return { refused: { seq: cp.seq, reason: `checkpoint refused: it signs hash ${cp.hash} at seq ${cp.seq}, the stored log has ${hash ?? "no event"} there` } };
  return { ok: c };
}

export async function eventHashAt(db: AuditDb, tenant: string, session: string, seq: number): Promise<string | undefined> {
  const e = auditEvents;
  const [row] = await db.select({ hash: e.hash }).from(e).where(and(eq(e.tenant, tenant), eq(e.session, session), eq(e.seq, seq)));
  return row?.hash;
}

export async function storeCheckpoint(db: AuditDb, c: SignedCheckpoint): Promise<void> {
  const cp = c.checkpoint;
  await db
    .insert(auditCheckpoints)
    .values({ tenant: cp.tenant, session: cp.session, seq: cp.seq, hash: cp.hash, ts: cp.ts, signature: c.sig, keyId: c.kid, alg: c.alg })
    .onConflictDoNothing();
}

/** The stored checkpoints of these sessions, each as the signed line it was read as. */
export async function* checkpointsOf(db: AuditDb, tenant: string, sessions: string[]): AsyncGenerator<SignedCheckpoint> {
  const c = auditCheckpoints;
  for (let i = 0; i < sessions.length; i += 500) {
    const rows = await db
      .select()
      .from(c)
      .where(and(eq(c.tenant, tenant), inArray(c.session, sessions.slice(i, i + 500))))
      .orderBy(asc(c.session), asc(c.seq));
    for (const r of rows) yield { checkpoint: { tenant: r.tenant, session: r.session, seq: r.seq, hash: r.hash, ts: r.ts }, alg: r.alg as "Ed25519", kid: r.keyId, sig: r.signature };
  }
}

/**
 * The sync's checkpoints of one tenant: the key is fetched once (again later when the
 * server had none to give), and each session's checkpoints read so far are verified
 * against what the store holds, the good ones stored.
 */
export class CheckpointKeeper {
  private key?: Promise<KeyState>;

  constructor(
    private readonly src: Source,
    private readonly db: AuditDb,
    private readonly log: (m: string) => void,
    private readonly signal?: AbortSignal,
  ) {}

  private keyState(): Promise<KeyState> {
    this.key ??= fetchKey(this.src, this.signal).then((k) => {
      if ("none" in k) {
        this.log(`checkpoints are not stored: ${k.none}`);
        // Asked again later: the server may have been starting.
        setTimeout(() => (this.key = undefined), 30_000).unref?.();
      }
      return k;
    });
    return this.key;
  }

  /** Stores the good ones of `pending`; returns those waiting for their events, or the first refusal. */
  async settle(session: string, head: { seq: number; hash: string }, pending: unknown[]): Promise<{ waiting: unknown[] } | { refused: Refusal }> {
    const key = await this.keyState();
    if ("none" in key) return { waiting: [] };
    const waiting: unknown[] = [];
    for (const raw of pending) {
      const r = await checkCheckpoint(raw, this.src.tenant, session, key.key, {
        seq: head.seq,
        hashAt: async (seq) => (seq === head.seq ? head.hash : eventHashAt(this.db, this.src.tenant, session, seq)),
      });
      if ("refused" in r) return r;
      if ("later" in r) waiting.push(raw);
      else await storeCheckpoint(this.db, r.ok);
    }
    return { waiting };
  }
}
