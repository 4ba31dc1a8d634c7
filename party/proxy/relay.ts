import type { Provider } from "../../schema/pricing";
import { streamError } from "./errors";
import type { UsageChunkFilter } from "./hide-usage";
import type { StreamUsageTracker } from "./usage";

// Relays an SSE answer to the client while keeping what billing needs.
//
// A pump reads the provider's answer as fast as it comes (up to MAX_BUFFER bytes ahead of
// the client), so what the provider sent is in the tracker even while the client is slow
// or gone: a client that leaves is charged what the gateway had received, the provider's
// usage chunk included when it had arrived. The client side is served from that buffer as
// it reads; a client that has not read for stallMs while the answer is unfinished is gone.
// A kill or close ends the stream with an error event in the provider's format, so the SDK
// raises it instead of seeing the connection cut.

const MAX_BUFFER = 4 * 1024 * 1024;
/** On a cancel: how long to keep taking what the provider already sent before aborting it. */
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
  /** Every chunk from upstream (resets the upstream timeout). */
  onChunk: () => void;
  /** The provider's usage has just arrived. */
  onUsage: () => void;
  /** Set when the client refused the usage chunk: it is taken out of what the client gets. */
  hideUsage?: UsageChunkFilter;
}

export class StreamRelay {
  readonly stream: ReadableStream<Uint8Array>;
  private buffer: Uint8Array[] = [];
  private buffered = 0;
  private upstreamDone = false;
  private upstreamError: unknown;
  private settled = false;
  private stopped = false;
  private clientGone = false;
  private clientWaiting = false;
  private lastClientRead = Date.now();
  private hadUsage = false;
  private wakeClient?: () => void;
  private wakePump?: () => void;
  private pumping: Promise<void>;
  private controller?: ReadableStreamDefaultController<Uint8Array>;

  constructor(private readonly o: RelayOptions) {
    this.pumping = this.pump();
    this.stream = new ReadableStream<Uint8Array>({
      start: (c) => {
        this.controller = c;
      },
      pull: (c) => this.serve(c),
      // The client went away: charge what the provider produced, including what is buffered.
      cancel: () => this.clientLeft(),
    });
  }

  /** Takes the provider's answer as it comes; the bill is final (and settled) when it ends. */
  private async pump() {
    try {
      for (;;) {
        while (this.buffered > MAX_BUFFER && !this.clientGone && !this.stopped) await new Promise<void>((r) => (this.wakePump = r));
        const { done, value } = await this.o.reader.read();
        if (done) break;
        this.o.tracker.push(value);
        this.o.onChunk();
        if (!this.hadUsage && this.o.tracker.peekUsage()) {
          this.hadUsage = true;
          this.o.onUsage();
        }
        this.keep(this.o.hideUsage ? this.o.hideUsage.push(value) : value);
      }
      if (this.o.hideUsage) this.keep(this.o.hideUsage.flush());
    } catch (e) {
      this.upstreamError = e;
    }
    this.upstreamDone = true;
    this.wakeClient?.();
    this.settle(this.clientGone || this.stopped || this.upstreamError !== undefined ? "aborted" : "completed");
  }

  /** Queues a piece of the answer for the client, unless it is gone or the stream was stopped. */
  private keep(value: Uint8Array) {
    if (value.byteLength && !this.clientGone && !this.stopped) {
      this.buffer.push(value);
      this.buffered += value.byteLength;
    }
    this.wakeClient?.();
  }

  private async serve(c: ReadableStreamDefaultController<Uint8Array>) {
    if (this.stopped) return;
    this.clientWaiting = true;
    try {
      while (!this.buffer.length && !this.upstreamDone && !this.stopped) await new Promise<void>((r) => (this.wakeClient = r));
      this.wakeClient = undefined;
      if (this.stopped) return;
      const chunk = this.buffer.shift();
      if (chunk) {
        this.buffered -= chunk.byteLength;
        this.wakePump?.();
        c.enqueue(chunk);
      } else if (this.upstreamError !== undefined) c.error(this.upstreamError);
      else c.close();
    } finally {
      this.clientWaiting = false;
      this.lastClientRead = Date.now();
    }
  }

  private async clientLeft() {
    if (this.stopped) return;
    this.clientGone = true;
    this.buffer = [];
    this.buffered = 0;
    this.wakePump?.();
    // What the provider already sent is still taken for a moment; then it is stopped.
    await Promise.race([this.pumping, new Promise((r) => setTimeout(r, DRAIN_MS))]);
    this.o.abort.abort(new Error("the client went away"));
    this.settle("aborted");
  }

  private settle(outcome: Outcome) {
    if (this.settled) return;
    this.settled = true;
    this.o.finish(outcome);
  }

  /** True when the client has not read for stallMs while there is more for it. */
  stalled(): boolean {
    if (this.stopped || this.clientGone || this.clientWaiting) return false;
    if (this.upstreamDone && !this.buffer.length) return false;
    return Date.now() - this.lastClientRead > this.o.stallMs;
  }

  /**
   * Ends the stream for a reason of ours (a kill, a stall): the provider is stopped, the
   * client gets what was buffered and then an error event saying why.
   */
  stop(code: string, message: string) {
    if (this.stopped || this.clientGone) return;
    this.stopped = true;
    this.o.abort.abort(new Error(message));
    this.settle("aborted");
    this.wakeClient?.();
    try {
      for (const chunk of this.buffer) this.controller?.enqueue(chunk);
      this.buffer = [];
      this.controller?.enqueue(new TextEncoder().encode(streamError(this.o.provider, code, message)));
      this.controller?.close();
    } catch {
      /* the client is already gone */
    }
  }
}
