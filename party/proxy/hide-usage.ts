import type { Provider } from "../../schema/pricing";
import { endpointKind } from "./estimate";

// A client that set `stream_options.include_usage: false` asked not to get OpenAI's final
// usage chunk; without it the settle would have to count tokens locally, which is a guess
// and can be below what the provider bills. So the proxy asks for usage anyway and takes
// that one chunk out of what the client receives: the client sees the stream it asked for,
// and the settle uses the provider's own figures.

/** True when this is an OpenAI chat/completions stream whose client refused the usage chunk. */
export function refusesUsageChunk(provider: Provider, path: string, body: Record<string, unknown>): boolean {
  if (provider !== "openai" || body.stream !== true) return false;
  const kind = endpointKind(provider, path);
  const options = body.stream_options;
  return (kind === "chat" || kind === "completions") && typeof options === "object" && options !== null && (options as { include_usage?: unknown }).include_usage === false;
}

/**
 * Passes an SSE stream through event by event, leaving out the usage-only chunk
 * (`choices: []` with a `usage` object). Everything else goes out byte for byte as it came;
 * an event is held only until its blank line arrives.
 */
export class UsageChunkFilter {
  private readonly decoder = new TextDecoder();
  private readonly encoder = new TextEncoder();
  private pending = "";

  push(chunk: Uint8Array): Uint8Array {
    this.pending += this.decoder.decode(chunk, { stream: true });
    return this.take(false);
  }

  /** What is left when the stream ends (an event cut before its blank line goes out as it is). */
  flush(): Uint8Array {
    this.pending += this.decoder.decode();
    return this.take(true);
  }

  private take(end: boolean): Uint8Array {
    let out = "";
    for (;;) {
      const m = /\r\n\r\n|\n\n|\r\r/.exec(this.pending);
      if (!m) break;
      const event = this.pending.slice(0, m.index + m[0].length);
      this.pending = this.pending.slice(event.length);
      if (!isUsageOnly(event)) out += event;
    }
    if (end) {
      out += this.pending;
      this.pending = "";
    }
    return this.encoder.encode(out);
  }
}

function isUsageOnly(event: string): boolean {
  const data = event
    .split(/\r\n|\n|\r/)
    .filter((l) => l.startsWith("data:"))
    .map((l) => l.slice(l[5] === " " ? 6 : 5))
    .join("\n");
  if (!data.includes('"usage"')) return false;
  try {
    const j = JSON.parse(data) as { choices?: unknown; usage?: unknown };
    return Array.isArray(j.choices) && j.choices.length === 0 && typeof j.usage === "object" && j.usage !== null;
  } catch {
    return false;
  }
}
