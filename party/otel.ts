import { otlpTraces, SpanBuilder, type Attr } from "../lib/otel-spans";
import type { Committed } from "./session/journal";

// OpenTelemetry export from a session actor: stored batches are queued as they commit and
// turned into spans (lib/otel-spans.ts) and sent later, from a timer's turn, so a decision
// never waits for tracing. OTLP/HTTP with JSON bodies, batched; a failed export is logged
// and dropped (spans are telemetry, the log is the record).
//
// Configured by the standard variables: OTEL_EXPORTER_OTLP_ENDPOINT (spans go to
// `<endpoint>/v1/traces`) or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as it is),
// OTEL_EXPORTER_OTLP_HEADERS (`k=v,k2=v2`), OTEL_SERVICE_NAME (default "governor"),
// OTEL_RESOURCE_ATTRIBUTES, and OTEL_BSP_SCHEDULE_DELAY / OTEL_BSP_MAX_EXPORT_BATCH_SIZE /
// OTEL_BSP_MAX_QUEUE_SIZE (defaults 1000 ms, 512, 2048; the sizes count stored batches,
// which make one to three spans each).

const EXPORT_TIMEOUT_MS = 10_000;

type Env = Record<string, unknown>;

function str(env: Env, name: string): string | undefined {
  const v = env[name];
  return typeof v === "string" && v.trim() ? v.trim() : undefined;
}

function int(env: Env, name: string, fallback: number): number {
  const n = Number(str(env, name));
  return Number.isInteger(n) && n > 0 ? n : fallback;
}

/** `k=v,k2=v2`, values percent-decoded, as the OTLP exporter variables are written. */
function pairs(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (text ?? "").split(",")) {
    const i = part.indexOf("=");
    if (i <= 0) continue;
    try {
      out[decodeURIComponent(part.slice(0, i).trim())] = decodeURIComponent(part.slice(i + 1).trim());
    } catch {
      /* a malformed pair is skipped, not fatal */
    }
  }
  return out;
}

export class OtlpExporter {
  private pending: Committed[] = [];
  private builder = new SpanBuilder();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private sending = false;
  private dropped = 0;

  private constructor(
    private readonly url: string,
    private readonly headers: Record<string, string>,
    private readonly resource: Record<string, Attr>,
    private readonly delayMs: number,
    private readonly batch: number,
    private readonly queue: number,
  ) {}

  /** Undefined when no endpoint is configured: tracing is off and costs nothing. */
  static fromEnv(env: Env, resource: Record<string, Attr> = {}): OtlpExporter | undefined {
    const traces = str(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    const base = str(env, "OTEL_EXPORTER_OTLP_ENDPOINT");
    const url = traces ?? (base ? `${base.replace(/\/+$/, "")}/v1/traces` : undefined);
    if (!url) return undefined;
    const attrs = { ...pairs(str(env, "OTEL_RESOURCE_ATTRIBUTES")), "service.name": str(env, "OTEL_SERVICE_NAME") ?? "governor", ...resource };
    return new OtlpExporter(
      url,
      pairs(str(env, "OTEL_EXPORTER_OTLP_HEADERS")),
      attrs,
      int(env, "OTEL_BSP_SCHEDULE_DELAY", 1000),
      int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
      int(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048),
    );
  }

  /** From the journal's after-commit: only a push, the work happens in the timer's turn. */
  record(c: Committed) {
    this.pending.push(c);
    if (this.pending.length > this.queue) this.dropped += this.pending.splice(0, this.pending.length - this.queue).length;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.pending.length >= this.batch ? 0 : this.delayMs);
  }

  async flush(): Promise<void> {
    if (this.sending) return;
    this.sending = true;
    try {
      while (this.pending.length) {
        const spans = this.pending.splice(0, this.batch).flatMap((c) => this.builder.spans(c.events, c.after));
        if (spans.length) await this.send(otlpTraces(spans, this.resource));
      }
      if (this.dropped) {
        console.error(`OpenTelemetry: ${this.dropped} batches were dropped (queue full: OTEL_BSP_MAX_QUEUE_SIZE)`);
        this.dropped = 0;
      }
    } finally {
      this.sending = false;
    }
  }

  private async send(body: unknown) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), EXPORT_TIMEOUT_MS);
    try {
      const res = await fetch(this.url, { method: "POST", headers: { "content-type": "application/json", ...this.headers }, body: JSON.stringify(body), signal: abort.signal });
      await res.body?.cancel();
      if (!res.ok) console.error(`OpenTelemetry: ${this.url} answered ${res.status}; spans dropped`);
    } catch (e) {
      console.error(`OpenTelemetry: ${this.url} unreachable (${(e as Error).message}); spans dropped`);
    } finally {
      clearTimeout(timer);
    }
  }
}
