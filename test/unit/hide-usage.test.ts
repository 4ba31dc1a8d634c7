import { describe, expect, it } from "vitest";
import { refusesUsageChunk, UsageChunkFilter } from "../../party/proxy/hide-usage";

const chunk = (o: unknown) => `data: ${JSON.stringify(o)}\n\n`;
const delta = (content: string) => chunk({ id: "c", object: "chat.completion.chunk", choices: [{ index: 0, delta: { content } }], usage: null });
const usage = chunk({ id: "c", object: "chat.completion.chunk", choices: [], usage: { prompt_tokens: 9, completion_tokens: 3, total_tokens: 12 } });
const STREAM = delta("Hé") + delta("llo 👋") + usage + "data: [DONE]\n\n";
const WITHOUT = delta("Hé") + delta("llo 👋") + "data: [DONE]\n\n";

function run(pieces: Uint8Array[]): string {
  const f = new UsageChunkFilter();
  const dec = new TextDecoder();
  let out = "";
  for (const p of pieces) out += dec.decode(f.push(p), { stream: true });
  return out + dec.decode(f.flush());
}

describe("UsageChunkFilter", () => {
  const bytes = new TextEncoder().encode(STREAM);

  it("takes out only the usage-only chunk, whole", () => {
    expect(run([bytes])).toBe(WITHOUT);
  });

  it("does the same however the bytes are cut (every split point, mid-character included)", () => {
    for (let i = 0; i <= bytes.length; i++) expect(run([bytes.slice(0, i), bytes.slice(i)])).toBe(WITHOUT);
  });

  it("byte by byte, with CRLF line ends", () => {
    const crlf = new TextEncoder().encode(STREAM.replace(/\n/g, "\r\n"));
    expect(run(Array.from(crlf, (b) => Uint8Array.of(b)))).toBe(WITHOUT.replace(/\n/g, "\r\n"));
  });

  it("keeps chunks that carry choices and usage, errors, and text that is not JSON", () => {
    const kept = chunk({ choices: [{ index: 0, delta: {} }], usage: { prompt_tokens: 1 } }) + chunk({ error: { message: "usage limit" } }) + 'data: {"usage": cut\n\n';
    expect(run([new TextEncoder().encode(kept)])).toBe(kept);
  });

  it("lets an event too long to be the usage chunk through as it arrives, not held until its blank line", () => {
    // A usage chunk is a few hundred bytes; an upstream's 1 MiB event (or a stream whose
    // blank lines are not seen) must not be held back from the client, nor scanned again
    // from its start on every piece (which took seconds of the gateway's CPU at 16 MiB).
    const long = delta("x".repeat(1 << 20));
    const bytes = new TextEncoder().encode(long + usage + "data: [DONE]\n\n");
    const f = new UsageChunkFilter();
    const dec = new TextDecoder();
    let out = "";
    const piece = 16 * 1024;
    let i = 0;
    for (; i + piece < long.length; i += piece) out += dec.decode(f.push(bytes.slice(i, i + piece)), { stream: true });
    expect(out.length).toBeGreaterThan(i - 64 * 1024);
    out += dec.decode(f.push(bytes.slice(i)), { stream: true }) + dec.decode(f.flush());
    expect(out).toBe(long + "data: [DONE]\n\n");
  });

  it("after such an event, still takes out the usage chunk, wherever the bytes are cut", () => {
    const long = delta("y".repeat(70 * 1024));
    const text = delta("a") + long + usage + delta("b") + "data: [DONE]\n\n";
    const want = delta("a") + long + delta("b") + "data: [DONE]\n\n";
    const bytes = new TextEncoder().encode(text);
    const start = delta("a").length + long.length;
    for (let i = start - 8; i <= start + usage.length + 8; i++) expect(run([bytes.slice(0, i), bytes.slice(i)])).toBe(want);
    for (const size of [1000, 4093]) {
      const pieces: Uint8Array[] = [];
      for (let i = 0; i < bytes.length; i += size) pieces.push(bytes.slice(i, i + size));
      expect(run(pieces)).toBe(want);
    }
  });

  it("lets a last event cut before its blank line through as it came", () => {
    expect(run([new TextEncoder().encode(delta("a") + 'data: {"choices":[{"delta":{"content":"b"}}]}')])).toBe(delta("a") + 'data: {"choices":[{"delta":{"content":"b"}}]}');
  });
});

describe("refusesUsageChunk", () => {
  it("only an OpenAI chat or completions stream whose client set include_usage: false", () => {
    const no = { stream: true, stream_options: { include_usage: false } };
    expect(refusesUsageChunk("openai", "v1/chat/completions", no)).toBe(true);
    expect(refusesUsageChunk("openai", "v1/completions", no)).toBe(true);
    expect(refusesUsageChunk("openai", "v1/chat/completions", { stream: true })).toBe(false);
    expect(refusesUsageChunk("openai", "v1/chat/completions", { stream: true, stream_options: { include_usage: true } })).toBe(false);
    expect(refusesUsageChunk("openai", "v1/chat/completions", { stream: false, stream_options: { include_usage: false } })).toBe(false);
    expect(refusesUsageChunk("openai", "v1/responses", no)).toBe(false);
    expect(refusesUsageChunk("anthropic", "v1/messages", no)).toBe(false);
  });
});
