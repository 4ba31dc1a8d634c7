import { deflateSync } from "node:zlib";
import { Tiktoken } from "js-tiktoken/lite";
import o200kBase from "js-tiktoken/ranks/o200k_base";
import cl100kBase from "js-tiktoken/ranks/cl100k_base";
import { describe, expect, it } from "vitest";
import { pdfPages, sniffImage } from "../../party/proxy/attachments";
import { imageTokens, pdfTokens } from "../../party/proxy/bounds";
import { boundTokens, countCacheStats, countPrompt, scanPrompt } from "../../party/proxy/estimate";
import { outgoingBody } from "../../party/proxy/upstream";
import { countWith, isReady, loadEncoding, utf8Bytes } from "../../party/proxy/tokens";

// The estimator: the size bound is an upper bound, the counted side is the library's count,
// attachments follow the providers' formulas, and nothing decodes a table on a call's path.

const library = { o200k_base: new Tiktoken(o200kBase), cl100k_base: new Tiktoken(cl100kBase) };

const SAMPLES = [
  "hello world",
  "The quick brown fox jumps over the lazy dog. ".repeat(50),
  "function parse(input: string): Node[] {\n  return input.split(/\\s+/).map((t) => ({ t }));\n}\n".repeat(20),
  "Привет, как дела? Это проверка токенизатора на кириллице. ".repeat(20),
  "你好世界，这是一个关于分词器的测试。我们需要确保计数正确。".repeat(20),
  "مرحبا بالعالم، هذا اختبار. ".repeat(20),
  "😀🎉🚀👩‍👩‍👧‍👦🇫🇷 emoji and ZWJ sequences ".repeat(20),
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==".repeat(20),
  "\t\t  \n\n\r\n    trailing   spaces    \u00a0\u2003".repeat(30),
  "<|endoftext|> special-looking text <|endofprompt|>",
  "a".repeat(5000),
];

function randomText(seed: number, length: number): string {
  let s = seed;
  const rand = () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const ranges = [
    [0x20, 0x7e],
    [0xa0, 0x2ff],
    [0x400, 0x4ff],
    [0x4e00, 0x9fff],
    [0x1f300, 0x1f6ff],
    [0x9, 0xd],
  ];
  let out = "";
  while (out.length < length) {
    const [lo, hi] = ranges[Math.floor(rand() * ranges.length)];
    out += String.fromCodePoint(lo + Math.floor(rand() * (hi - lo + 1)));
  }
  return out;
}

describe("tokenizers", () => {
  it("the sliced background load gives the library's own counts, and is what makes an encoding ready", async () => {
    expect(isReady("o200k_base")).toBe(false);
    const [o200k, cl100k] = await Promise.all([loadEncoding("o200k_base"), loadEncoding("cl100k_base")]);
    expect(isReady("o200k_base") && isReady("cl100k_base")).toBe(true);
    // (The 5000-char run is left out: unsplit, the library's BPE is quadratic on it.)
    for (const text of [...SAMPLES.slice(0, -1), randomText(7, 3000)]) {
      expect(o200k.encode(text, [], []).length).toBe(library.o200k_base.encode(text, [], []).length);
      expect(cl100k.encode(text, [], []).length).toBe(library.cl100k_base.encode(text, [], []).length);
    }
  }, 30_000);

  it("every token covers at least one UTF-8 byte: tokens <= bytes, for o200k and cl100k", () => {
    const texts = [...SAMPLES, ...Array.from({ length: 40 }, (_, i) => randomText(i + 1, 500 + i * 50))];
    for (const enc of Object.values(library)) {
      for (const text of texts) expect(countWith(enc, text)).toBeLessThanOrEqual(utf8Bytes(text));
    }
  });

  it("counts UTF-8 bytes exactly", () => {
    for (const text of [...SAMPLES, randomText(3, 2000)]) expect(utf8Bytes(text)).toBe(new TextEncoder().encode(text).length);
  });
});

// A real PNG header and body of the given size.
function png(width: number, height: number): string {
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    return Buffer.concat([len, Buffer.from(type), data, Buffer.alloc(4)]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", ihdr), chunk("IDAT", deflateSync(Buffer.alloc(16))), chunk("IEND", Buffer.alloc(0))]).toString("base64");
}

describe("attachments", () => {
  it("images follow each family's published formula; unknown sizes take the family's largest", () => {
    const W = 20; // the part's own wrapper tokens
    // platform.openai.com vision guide examples: 1024x1024 -> 765, 2048x4096 -> 1105.
    expect(imageTokens("openai", "gpt-4o", { width: 1024, height: 1024 })).toBe(765 + W);
    expect(imageTokens("openai", "gpt-4o", { width: 2048, height: 4096 })).toBe(1105 + W);
    expect(imageTokens("openai", "gpt-4o", { width: 4096, height: 8192 }, "low")).toBe(85 + W);
    expect(imageTokens("openai", "gpt-4o", undefined)).toBe(85 + 8 * 170 + W);
    expect(imageTokens("openai", "gpt-4o-mini", undefined)).toBe(2833 + 8 * 5667 + W);
    expect(imageTokens("openai", "gpt-4o-mini", { width: 1024, height: 768 })).toBe(2833 + 4 * 5667 + W);
    // Patch models: 32px patches, capped at 1536, times the model's multiplier; detail has no effect.
    expect(imageTokens("openai", "gpt-4.1-mini", { width: 1024, height: 1024 })).toBe(Math.ceil(1024 * 1.62) + W);
    expect(imageTokens("openai", "gpt-4.1-nano", { width: 4000, height: 3000 }, "low")).toBe(Math.ceil(1536 * 2.46) + W);
    // Claude: w*h/750 capped near 1,600, with 10% for the approximation.
    expect(imageTokens("anthropic", "claude-sonnet-4-5", { width: 1000, height: 1000 })).toBe(Math.ceil(1334 * 1.1) + W);
    expect(imageTokens("anthropic", "claude-sonnet-4-5", undefined)).toBe(1760 + W);
  });

  it("reads a PNG's size from its header, and gives up on anything else", () => {
    expect(sniffImage(png(1024, 768))).toEqual({ width: 1024, height: 768 });
    expect(sniffImage("A".repeat(10_000))).toBeUndefined();
  });

  it("counts a PDF's pages, and says unknown when it cannot", () => {
    const doc = (pages: number) => {
      const objs = [`<< /Type /Catalog /Pages 2 0 R >>`, `<< /Type /Pages /Count ${pages} >>`, ...Array.from({ length: pages }, () => "<< /Type /Page /Parent 2 0 R >>")];
      return Buffer.from(`%PDF-1.7\n${objs.map((o, i) => `${i + 1} 0 obj ${o} endobj`).join("\n")}\n%%EOF`, "latin1").toString("base64");
    };
    expect(pdfPages(doc(3))).toBe(3);
    expect(pdfPages(doc(12))).toBe(12);
    expect(pdfPages(Buffer.from("not a pdf").toString("base64"))).toBeUndefined();
    expect(pdfTokens("anthropic", "claude-haiku-4-5", 3)).toBeLessThan(pdfTokens("anthropic", "claude-haiku-4-5", undefined));
  });
});

describe("the size bound", () => {
  const chat = (messages: unknown[], extra: Record<string, unknown> = {}) => ({ model: "gpt-4o", messages, ...extra });
  const bytes = (b: unknown) => Buffer.byteLength(JSON.stringify(b));

  it("is never below the counted estimate, for text, tools, images and Claude's margin", async () => {
    const image = png(800, 600);
    const bodies: Array<["openai" | "anthropic", string, Record<string, unknown>, string]> = [
      ["openai", "v1/chat/completions", chat([{ role: "system", content: "Be terse." }, { role: "user", content: SAMPLES[1] }]), "gpt-4o"],
      ["openai", "v1/chat/completions", chat([{ role: "user", content: SAMPLES[4] }], { tools: [{ type: "function", function: { name: "f", parameters: { type: "object" } } }] }), "gpt-4o"],
      ["openai", "v1/chat/completions", chat([{ role: "user", content: [{ type: "text", text: "look" }, { type: "image_url", image_url: { url: `data:image/png;base64,${image}` } }] }]), "gpt-4o"],
      ["openai", "v1/responses", { model: "gpt-5", input: SAMPLES[2], instructions: "Review this." }, "gpt-5"],
      ["anthropic", "v1/messages", { model: "claude-haiku-4-5", max_tokens: 10, system: "terse", messages: [{ role: "user", content: SAMPLES[3] }] }, "claude-haiku-4-5"],
      ["anthropic", "v1/messages", { model: "claude-haiku-4-5", max_tokens: 10, messages: [{ role: "user", content: SAMPLES[6] }] }, "claude-haiku-4-5"],
    ];
    for (const [provider, path, body, family] of bodies) {
      const scan = scanPrompt(provider, path, body, bytes(body), family, String(body.model));
      const bound = boundTokens(scan, 1_000_000);
      const counted = await countPrompt(scan, body, 1_000_000);
      expect(counted).toBeLessThanOrEqual(bound);
      expect(counted).toBeGreaterThan(0);
    }
  });

  it("leaves inline attachment payloads out of the text and bounds them by formula", () => {
    const image = png(1024, 768);
    const body = chat([{ role: "user", content: [{ type: "image_url", image_url: { url: `data:image/png;base64,${image}` } }] }], { model: "gpt-4o-mini" });
    const scan = scanPrompt("openai", "v1/chat/completions", body, bytes(body), "gpt-4o-mini", "gpt-4o-mini");
    expect(scan.textBytes).toBeLessThan(200);
    expect(scan.fixedTokens).toBe(2833 + 4 * 5667 + 20);
  });

  it("is capped by the context window", () => {
    const body = chat([{ role: "user", content: "x".repeat(500_000) }]);
    const scan = scanPrompt("openai", "v1/chat/completions", body, bytes(body), "gpt-4o", "gpt-4o");
    expect(boundTokens(scan, 128_000)).toBe(128_000);
  });

  it("calls it cannot price: audio in or out, an image-generation tool", () => {
    const audio = chat([{ role: "user", content: [{ type: "input_audio", input_audio: { data: "AAAA", format: "wav" } }] }]);
    expect(scanPrompt("openai", "v1/chat/completions", audio, bytes(audio), "gpt-4o", "gpt-4o").unpriced).toContain("audio");
    const speak = chat([{ role: "user", content: "hi" }], { modalities: ["text", "audio"] });
    expect(scanPrompt("openai", "v1/chat/completions", speak, bytes(speak), "gpt-4o", "gpt-4o").unpriced).toContain("audio");
    const draw = { model: "gpt-5", input: "draw", tools: [{ type: "image_generation" }] };
    expect(scanPrompt("openai", "v1/responses", draw, bytes(draw), "gpt-5", "gpt-5").unpriced).toContain("image_generation");
  });

  it("server-side tools: uses are bounded for real (limits added where missing), each with its allowance and fee", () => {
    const claude = { model: "claude-sonnet-4-5", max_tokens: 100, tools: [{ type: "web_search_20250305", name: "web_search" }], messages: [{ role: "user", content: "news?" }] };
    const a = scanPrompt("anthropic", "v1/messages", claude, bytes(claude), "claude-sonnet-4-5", claude.model);
    expect(a).toMatchObject({ profile: "server-tools", toolTokens: 5 * 25_000, patch: { anthropicMaxUses: 5 } });
    expect(a.toolFeesUsd).toBeCloseTo(0.05, 12);
    const sent = JSON.parse(outgoingBody("anthropic", "v1/messages", claude.model, JSON.stringify(claude), claude, { replace: false }, a.patch));
    expect(sent.tools[0].max_uses).toBe(5);
    const limited = { ...claude, tools: [{ type: "web_search_20250305", name: "web_search", max_uses: 2 }] };
    expect(scanPrompt("anthropic", "v1/messages", limited, bytes(limited), "claude-sonnet-4-5", claude.model)).toMatchObject({ toolTokens: 50_000, patch: {} });
    const gpt = { model: "gpt-5", input: "news?", tools: [{ type: "web_search" }, { type: "function", name: "f", parameters: {} }] };
    const o = scanPrompt("openai", "v1/responses", gpt, bytes(gpt), "gpt-5", "gpt-5");
    expect(o).toMatchObject({ profile: "server-tools", patch: { openaiMaxToolCalls: 5 } });
    expect(JSON.parse(outgoingBody("openai", "v1/responses", "gpt-5", JSON.stringify(gpt), gpt, { replace: false }, o.patch)).max_tool_calls).toBe(5);
  });

  it("prompt caching: the dearest write the call can make sets the input rate", () => {
    const five = { model: "claude-haiku-4-5", max_tokens: 5, system: [{ type: "text", text: "big", cache_control: { type: "ephemeral" } }], messages: [] };
    expect(scanPrompt("anthropic", "v1/messages", five, bytes(five), "claude-haiku-4-5", five.model).cacheWrite).toBe("5m");
    const hour = { ...five, system: [{ type: "text", text: "big", cache_control: { type: "ephemeral", ttl: "1h" } }] };
    expect(scanPrompt("anthropic", "v1/messages", hour, bytes(hour), "claude-haiku-4-5", five.model).cacheWrite).toBe("1h");
  });

  it("an unchanged body goes upstream as the client's own text", () => {
    const body = { model: "gpt-4o", max_tokens: 5, messages: [{ role: "user", content: "hi" }] };
    const text = ` ${JSON.stringify(body)} `;
    expect(outgoingBody("openai", "v1/chat/completions", "gpt-4o", text, body, { value: 5, replace: false }, {})).toBe(text);
    expect(JSON.parse(outgoingBody("openai", "v1/chat/completions", "gpt-4o", text, body, { value: 3, replace: true }, {})).max_tokens).toBe(3);
  });
});

describe("the counted side", () => {
  it("re-counts only new messages of a growing context", async () => {
    const history: Array<{ role: string; content: string }> = [];
    const scanOf = (b: Record<string, unknown>) => scanPrompt("openai", "v1/chat/completions", b, Buffer.byteLength(JSON.stringify(b)), "gpt-4o", "gpt-4o");
    for (let i = 0; i < 5; i++) {
      history.push({ role: i % 2 ? "assistant" : "user", content: `${SAMPLES[1]} turn ${i}` });
      const body = { model: "gpt-4o", messages: [...history] };
      await countPrompt(scanOf(body), body, 1_000_000);
    }
    const before = countCacheStats();
    history.push({ role: "user", content: "one more" });
    const body = { model: "gpt-4o", messages: [...history] };
    const n = await countPrompt(scanOf(body), body, 1_000_000);
    const after = countCacheStats();
    expect(after.misses - before.misses).toBe(1);
    expect(after.hits - before.hits).toBe(5);
    // The cached count is the library's count of the same prompt (cookbook accounting).
    let expected = 3;
    for (const m of history) expected += 3 + library.o200k_base.encode(m.role).length + library.o200k_base.encode(m.content).length;
    expect(n).toBe(expected);
  });

  it("Claude's count carries the tokenizer margin over cl100k", async () => {
    const body = { model: "claude-haiku-4-5", max_tokens: 5, messages: [{ role: "user", content: SAMPLES[1] }] };
    const scan = scanPrompt("anthropic", "v1/messages", body, Buffer.byteLength(JSON.stringify(body)), "claude-haiku-4-5", body.model);
    const raw = 3 + 3 + library.cl100k_base.encode("user").length + library.cl100k_base.encode(SAMPLES[1]).length;
    expect(await countPrompt(scan, body, 1_000_000)).toBe(Math.ceil(raw * 1.5));
  });

  it("Claude 4.7 and later, whose tokenizer counts ~30% more, and Claudes the table does not know carry a larger margin", async () => {
    for (const [family, margin] of [["claude-opus-4-7", 2], ["claude-sonnet-5-5", 2], ["", 2], ["claude-opus-4-6", 1.5], ["claude-sonnet-4-6", 1.5], ["claude-3-5-haiku", 1.5]] as const) {
      const body = { model: family || "claude-haiku-5-5", max_tokens: 5, messages: [{ role: "user", content: SAMPLES[1] }] };
      const scan = scanPrompt("anthropic", "v1/messages", body, Buffer.byteLength(JSON.stringify(body)), family, body.model);
      const raw = 3 + 3 + library.cl100k_base.encode("user").length + library.cl100k_base.encode(SAMPLES[1]).length;
      // The UTF-8 size stays the cap whatever the margin.
      expect(await countPrompt(scan, body, 1_000_000), family).toBe(Math.min(Math.ceil(raw * margin), scan.textBytes));
    }
  });
});
