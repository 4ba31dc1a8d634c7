import type WebSocket from "ws";
import type { Cursor, Refusal } from "./ingest";

// What the sync knows of one session: how far its log reaches, how far the store holds
// it, and what is on its way (tail socket, buffered events, checkpoints, retries).

export const ENDED = new Set(["killed", "closed"]);

export interface Track {
  id: string;
  cursor?: Cursor;
  known: number;
  state?: string;
  broken?: Refusal;
  /** The server refused to serve this log (401/403/404): not retried until restart. */
  gaveUp?: string;
  /** Events from the tail socket not yet stored, by seq. */
  buffer: Map<number, unknown>;
  /** Signed checkpoints read and not yet verified and stored (one may wait for its events). */
  checkpoints: unknown[];
  socket?: WebSocket;
  socketOpening?: boolean;
  /** Its tail was closed to make room: no reconnect until it is busy again. */
  evicted?: boolean;
  /** The stored head when the sync started, before the cursor is loaded. */
  storedHint: number;
  lastEventAt: number;
  running: boolean;
  again: boolean;
  retryMs: number;
  retryTimer?: ReturnType<typeof setTimeout>;
}

export function newTrack(id: string): Track {
  return { id, known: 0, storedHint: 0, buffer: new Map(), checkpoints: [], lastEventAt: 0, running: false, again: false, retryMs: 500 };
}

/** The stored head: the loaded cursor's, else what the store said at start. */
export function storedSeq(t: Track): number {
  return t.cursor?.seq ?? t.storedHint;
}

/** Still followed: not refused for a forged event, not given up on by the server. */
export function following(t: Track): boolean {
  return !t.broken && !t.gaveUp;
}
