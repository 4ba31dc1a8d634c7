import type * as Party from "partykit/server";
import { signCheckpoint, type SignedCheckpoint } from "../../lib/checkpoint";
import type { ServerMessage } from "../../schema/protocol";
import { deploymentKey } from "../signing";
import type { Committed, Journal } from "./journal";
import type { ConnState } from "./sockets";

// The session's signed heads (lib/checkpoint.ts). Signed at least every 256 events, when
// the session ends, and for every export of the log that reaches the head; never inside a
// decision's turn: signing runs after the batch is stored, from a turn of its own.

export const CHECKPOINT_EVERY = 256;
const STORED = "checkpoint";

export class Checkpoints {
  private latest: SignedCheckpoint | undefined;
  private signing = new Map<number, Promise<SignedCheckpoint | undefined>>();

  constructor(
    private readonly room: Party.Room,
    private readonly journal: Journal,
  ) {}

  async load() {
    this.latest = await this.room.storage.get<SignedCheckpoint>(STORED);
  }

  /** The key id session.opened records; undefined when this deployment signs nothing. */
  async signingKid(): Promise<string | undefined> {
    const k = await deploymentKey(this.room.env, this.room.context);
    return k.key?.kid;
  }

  /** After each stored batch: a 256th event, an end or an erasure gets the head signed. */
  committed(c: Committed) {
    // An erasure is signed at once too: the log it leaves behind is proven whole as it now stands.
    const due = c.events.some((e) => e.seq % CHECKPOINT_EVERY === 0 || e.type === "session.killed" || e.type === "session.closed" || e.type === "subject.redacted");
    if (!due) return;
    // A turn of its own: not the decision's, and not onAlarm's (PartyKit forbids reaching other parties there).
    setTimeout(() => {
      const { seq, hash } = this.journal.head;
      this.at(seq, hash).catch((e) => console.error("checkpoint not signed", e));
    }, 0);
  }

  /** The signed head at `seq` (which must be in this log with `hash`): the stored one when it covers exactly that, else a new one. */
  at(seq: number, hash: string): Promise<SignedCheckpoint | undefined> {
    if (this.latest && this.latest.checkpoint.seq === seq && this.latest.checkpoint.hash === hash) return Promise.resolve(this.latest);
    const running = this.signing.get(seq);
    if (running) return running;
    const p = this.sign(seq, hash).finally(() => this.signing.delete(seq));
    this.signing.set(seq, p);
    return p;
  }

  private async sign(seq: number, hash: string): Promise<SignedCheckpoint | undefined> {
    const k = await deploymentKey(this.room.env, this.room.context);
    if (!k.key) return undefined;
    const c = this.journal.context;
    const signed = await signCheckpoint(k.key, { tenant: c.tenant, session: c.session, seq, hash, ts: Date.now() });
    if (!this.latest || this.latest.checkpoint.seq <= seq) {
      this.latest = signed;
      await this.room.storage.put(STORED, signed);
      this.push(signed);
    }
    return signed;
  }

  /** Tail subscribers keep checkpoints with the events (the audit store does). */
  private push(signed: SignedCheckpoint) {
    const text = JSON.stringify({ type: "checkpoint", ...signed } satisfies ServerMessage);
    for (const conn of this.room.getConnections<ConnState>()) if (conn.state?.tail) conn.send(text);
  }

  /** After a backfill: the latest signed head, which the events just sent reach. */
  sendLatest(conn: Party.Connection) {
    if (this.latest) conn.send(JSON.stringify({ type: "checkpoint", ...this.latest } satisfies ServerMessage));
  }

  /** The NDJSON line a log page ends with when it reaches the head. */
  async trailer(seq: number, hash: string): Promise<string | undefined> {
    const signed = await this.at(seq, hash);
    return signed && JSON.stringify(signed);
  }
}
