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

/** The blank line that ends an SSE event, in any of its line ends. */
const BLANK = /\r\n\r\n|\n\n|\r\r/;
/**
 * A usage-only chunk is a few hundred bytes: an event longer than this is not one, and goes
 * out as it arrives (a client is not kept waiting for a long event's end, and the event is
 * not scanned again from its start on every piece).
 */
const MAX_HELD = 64 * 1024;

/**
 * Passes an SSE stream through event by event, leaving out the usage-only chunk
 * (`choices: []` with a `usage` object). Everything else goes out as it came; an event is
 * held only until its blank line arrives, or until it is too long to be the usage chunk.
 */
export class UsageChunkFilter {
  private readonly decoder = new TextDecoder();
  private readonly encoder = new TextEncoder();
  /** The event so far, in pieces, while it may still be the usage chunk. */
  private held: string[] = [];
  private heldLength = 0;
  /** The event's last characters: its blank line can be cut between two pieces. */
  private tail = "";
  /** The event outgrew MAX_HELD: the rest of it goes out as it comes. */
  private passing = false;

  push(chunk: Uint8Array): Uint8Array {
    return this.take(this.decoder.decode(chunk, { stream: true }), false);
  }

  /** What is left when the stream ends (an event cut before its blank line goes out as it is). */
  flush(): Uint8Array {
    return this.take(this.decoder.decode(), true);
  }

  private take(text: string, end: boolean): Uint8Array {
    let out = "";
    for (;;) {
      // Only the new text is searched, with the few characters before it that could start a blank line.
      const m = BLANK.exec(this.tail + text);
      if (!m) break;
      const cut = m.index + m[0].length - this.tail.length;
      const piece = text.slice(0, cut);
      text = text.slice(cut);
      if (this.passing) out += piece;
      else {
        const event = this.held.join("") + piece;
        if (!isUsageOnly(event)) out += event;
      }
      this.held = [];
      this.heldLength = 0;
      this.tail = "";
      this.passing = false;
    }
    if (this.passing) out += text;
    else if (text) {
      this.held.push(text);
      this.heldLength += text.length;
      if (this.heldLength > MAX_HELD) {
        out += this.held.join("");
        this.held = [];
        this.heldLength = 0;
        this.passing = true;
      }
    }
    this.tail = (this.tail + text).slice(-3);
    if (end) {
      out += this.held.join("");
      this.held = [];
      this.heldLength = 0;
      this.tail = "";
      this.passing = false;
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
