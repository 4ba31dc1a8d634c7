import { openSocket, socketUrl, type Source, type SourceError } from "./source";
import { ENDED, storedSeq, type Track } from "./track";

// Tail sockets: live sessions get one (`?after=<stored seq>`), a bounded number at once, so
// an append reaches the store in milliseconds rather than at the next index update. A busy
// session may take a quiet one's place. What a socket misses, the log route fills in.

const BUFFER_LIMIT = 10_000;
// Checkpoints ahead of the stored head wait for their events; only the latest few are kept.
export const CHECKPOINTS_WAITING = 16;

export interface TailHost {
  source: Source;
  /** Live tail sockets at once (0: none). */
  sockets: number;
  tracks(): Iterable<Track>;
  /** Runs the session's drain (a tail's news is stored from there). */
  kick(t: Track): void;
  stopped(): boolean;
  log(message: string): void;
}

export class TailSockets {
  /** The token may not read tails: the index and the log route carry on alone. */
  private refused = false;

  constructor(private readonly host: TailHost) {}

  /** A live session gets a tail while there is room; a busy one may take a quiet one's. */
  maybeOpen(t: Track, busy: boolean) {
    const h = this.host;
    if (t.socket || t.socketOpening || this.refused || h.stopped() || !h.sockets) return;
    if (t.state === undefined || ENDED.has(t.state)) return;
    if (t.evicted && !busy) return;
    const open = [...h.tracks()].filter((x) => x.socket || x.socketOpening);
    if (open.length >= h.sockets) {
      if (!busy) return;
      const quiet = open.filter((x) => x.socket && Date.now() - x.lastEventAt > 5000).sort((a, b) => a.lastEventAt - b.lastEventAt)[0];
      if (!quiet) return;
      quiet.evicted = true;
      quiet.socket!.close();
      quiet.socket = undefined;
    }
    t.evicted = false;
    t.lastEventAt = Date.now();
    t.socketOpening = true;
    const src = h.source;
    const url = socketUrl(src, `/parties/session/${encodeURIComponent(src.tenant)}:${encodeURIComponent(t.id)}`, { after: String(storedSeq(t)) });
    openSocket(
      url,
      (m) => this.onMessage(t, m),
      () => {
        t.socket = undefined;
        // Closed by the server (a restart, say): open it again while the session is live.
        if (!h.stopped() && !t.broken && !t.evicted && t.state && !ENDED.has(t.state)) h.kick(t);
      },
    ).then(
      (ws) => {
        t.socketOpening = false;
        if (h.stopped() || t.broken) ws.close();
        else t.socket = ws;
      },
      (e: SourceError) => {
        t.socketOpening = false;
        h.log(`tail socket of ${t.id}: ${e.message}`);
      },
    );
  }

  private onMessage(t: Track, m: { type?: string; event?: unknown; seq?: unknown; code?: unknown; message?: unknown; summary?: unknown }) {
    const h = this.host;
    if (m.type === "event" && m.event && typeof m.event === "object") {
      const seq = (m.event as { seq?: unknown }).seq;
      if (typeof seq !== "number") return;
      t.lastEventAt = Date.now();
      t.known = Math.max(t.known, seq);
      if (seq > storedSeq(t) && t.buffer.size < BUFFER_LIMIT) t.buffer.set(seq, m.event);
      h.kick(t);
    } else if (m.type === "checkpoint") {
      const { type: _t, ...signed } = m;
      t.checkpoints.push(signed);
      if (t.checkpoints.length > CHECKPOINTS_WAITING) t.checkpoints.shift();
      h.kick(t);
    } else if (m.type === "state" && typeof m.seq === "number") {
      t.known = Math.max(t.known, m.seq);
      const state = (m.summary as { state?: string } | undefined)?.state;
      if (state) t.state = state;
      if (storedSeq(t) < t.known) h.kick(t);
    } else if (m.type === "error" && m.code === "forbidden") {
      this.refused = true;
      h.log(`tail sockets refused (${String(m.message)}); following through the index and the log route`);
      t.socket?.close();
    }
  }
}
