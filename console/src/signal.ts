import { useEffect, useState } from "preact/hooks";

// A value that views subscribe to. Updates are coalesced (at most one notification per
// 100 ms), so a session appending hundreds of events a second re-renders ten times.

const COALESCE_MS = 100;

export class Observable<T> {
  private readonly listeners = new Set<() => void>();
  private queued = false;
  private lastRun = 0;

  constructor(private current: T) {}

  get value(): T {
    return this.current;
  }

  set(next: T): void {
    this.current = next;
    this.changed();
  }

  /** For values changed in place. */
  changed(): void {
    if (this.queued) return;
    this.queued = true;
    const wait = Math.max(0, this.lastRun + COALESCE_MS - Date.now());
    setTimeout(() => {
      this.queued = false;
      this.lastRun = Date.now();
      for (const l of [...this.listeners]) l();
    }, wait);
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

/** Re-renders the component whenever the observable changes; returns its value. */
export function useObservable<T>(o: Observable<T>): T {
  const [, setTick] = useState(0);
  useEffect(() => o.subscribe(() => setTick((t) => t + 1)), [o]);
  return o.value;
}

/** The current time, refreshed every `ms`: for countdowns and "3m ago". */
export function useNow(ms = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}
