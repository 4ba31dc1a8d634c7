import type { Provider, Usage } from "../../schema/pricing";
import { streamError } from "./errors";
import type { StreamUsageTracker } from "./usage";

// Relays an SSE answer to the client while keeping what billing needs.
//
// The relay reads ahead of the client (up to READ_AHEAD chunks), so what the provider sent
// is in the tracker even while the client is slow or gone: a client that leaves is charged
// for what the gateway had already received, the provider's usage chunk included when it
// had arrived. On a cancel it also drains what is already buffered (for up to DRAIN_MS)
// before aborting the upstream call. A kill or close ends the stream with an error event in
// the provider's format, so the SDK raises it instead of seeing the connection cut.

const READ_AHEAD = 256;
const DRAIN_MS = 100;

export type Outcome = "completed" | "aborted";

export interface RelayOptions {
  provider: Provider;
  reader: ReadableStreamDefaultReader<Uint8Array>;
  tracker: StreamUsageTracker;
  abort: AbortController;
  stallMs: number;
  /** Called once, when the stream ended for whatever reason. */
  finish: (outcome: Outcome) => void;
  /** Every chunk from upstream (resets the upstream timeout, starts the heartbeat). */
  onChunk: () => void;
  /** The provider's usage has just arrived. */
  onUsage: () => void;
}

export class StreamRelay {
  readonly stream: ReadableStream<Uint8Array>;
  private controller?: ReadableStreamDefaultController<Uint8Array>;
  private ended = false;
  private pulling = false;
  private lastPull = Date.now();
  private hadUsage = false;

  constructor(private readonly o: RelayOptions) {
    this.stream = new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.controller = c;
        },
        pull: (c) => this.pull(c),
        // The client went away: charge what the provider produced, including what is buffered.
        cancel: () => this.drainAndAbort(),
      },
      { highWaterMark: READ_AHEAD },
    );
  }

  private take(value: Uint8Array) {
    this.o.tracker.push(value);
    this.o.onChunk();
    if (!this.hadUsage && this.o.tracker.peekUsage()) {
      this.hadUsage = true;
      this.o.onUsage();
    }
  }

  private async pull(c: ReadableStreamDefaultController<Uint8Array>) {
    if (this.ended) return;
    this.pulling = true;
    try {
      const { done, value } = await this.o.reader.read();
      if (done) {
        this.end("completed");
        if (!this.closed) c.close();
        return;
      }
      this.take(value);
      if (!this.closed) c.enqueue(value);
    } catch (e) {
      if (this.ended) return;
      this.end("aborted");
      try {
        c.error(e);
      } catch {
        /* already closed */
      }
    } finally {
      this.pulling = false;
      this.lastPull = Date.now();
    }
  }

  private closed = false;

  private end(outcome: Outcome) {
    if (this.ended) return;
    this.ended = true;
    this.o.finish(outcome);
  }

  private async drainAndAbort() {
    if (this.ended) return;
    this.closed = true;
    const deadline = Date.now() + DRAIN_MS;
    let finished = false;
    while (!finished && Date.now() < deadline) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), Math.max(1, deadline - Date.now()))));
      const r = await Promise.race([this.o.reader.read().catch(() => ({ done: true, value: undefined })), timeout]);
      clearTimeout(timer);
      if (r === "timeout") break;
      if (r.done) finished = true;
      else if (r.value) this.take(r.value);
    }
    this.o.abort.abort(new Error("the client went away"));
    this.end("aborted");
  }

  /** True when nobody has read for stallMs while the answer is unfinished. */
  stalled(): boolean {
    return !this.ended && !this.pulling && Date.now() - this.lastPull > this.o.stallMs;
  }

  /** Ends the stream for a reason of ours (a kill, a stall): upstream aborted, the client told in-band. */
  stop(code: string, message: string) {
    if (this.ended) return;
    this.closed = true;
    this.o.abort.abort(new Error(message));
    this.end("aborted");
    try {
      this.controller?.enqueue(new TextEncoder().encode(streamError(this.o.provider, code, message)));
      this.controller?.close();
    } catch {
      /* the client is already gone */
    }
  }

  get done(): boolean {
    return this.ended;
  }
}

export type { Usage };
