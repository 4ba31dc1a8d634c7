import type { SessionSummary } from "../schema/protocol";

// Progress of the backfill: the events the index reported when the sync started, less
// those already stored, counted as they are stored (or written off when a session is refused).

export class Backfill {
  total = 0;
  done = 0;
  private readonly targets = new Map<string, number>();

  constructor(
    list: SessionSummary[],
    storedOf: (session: string) => number,
    private readonly onProgress?: (done: number, total: number) => void,
  ) {
    for (const s of list) {
      this.targets.set(s.session, s.seq);
      this.total += Math.max(0, s.seq - storedOf(s.session));
    }
    onProgress?.(0, this.total);
  }

  /** The head the index reported for this session when the backfill began. */
  target(session: string): number | undefined {
    return this.targets.get(session);
  }

  /** Events from..to of this session are stored (only those up to its target count). */
  progressed(session: string, from: number, to: number) {
    const target = this.targets.get(session);
    if (target === undefined) return;
    const counted = Math.max(0, Math.min(to, target) - from);
    if (counted <= 0) return;
    this.done += counted;
    this.onProgress?.(this.done, this.total);
  }
}
