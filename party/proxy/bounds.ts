import type { Provider } from "../../schema/pricing";

// What a provider can bill for the parts of a prompt that are not plain text, and the
// margins that turn a local count into an upper bound. Each figure names where it comes
// from; where the provider publishes no formula the figure is an allowance, said so here,
// and a settle above it is recorded (`overrunUsd`), alerted and learned from.

// ---------------------------------------------------------------- text

/**
 * Claude's tokenizer is not public. Measured against OpenAI's tokenizers it produces ~16%
 * (English) to ~30% (code) more tokens than o200k, and cl100k counts close to o200k for
 * English (public comparisons of Claude 3.5 Sonnet vs GPT-4o, 2024-2025). A cl100k count
 * times 1.5 covers that with room; the UTF-8 size stays the hard cap either way.
 */
export const CLAUDE_TOKENIZER_MARGIN = 1.5;
/**
 * Claude Opus 4.7 and every later Claude use a newer tokenizer: "the same text counts as
 * approximately 30% more tokens than on Claude Haiku 4.5" (platform.claude.com, Claude Haiku
 * 5.5 overview, read 2026-11-23). 1.5 x 1.3 rounds up to 2 for them, and for a Claude the
 * table does not know (priced by a policy's declaration): a new model is likelier than an old one.
 */
export const CLAUDE_NEW_TOKENIZER_MARGIN = 2;
const CLAUDE_OLD_TOKENIZER = /^claude-(3-|opus-4$|opus-4-[0156]$|sonnet-4$|sonnet-4-[056]$|haiku-4-5$)/;

/** What a cl100k count of a prompt to this Claude family is multiplied by to cover Claude's own count. */
export function claudeTokenizerMargin(family: string): number {
  return CLAUDE_OLD_TOKENIZER.test(family) ? CLAUDE_TOKENIZER_MARGIN : CLAUDE_NEW_TOKENIZER_MARGIN;
}

/**
 * Anthropic adds a tool-use system prompt whenever `tools` is present: 159-530 tokens for
 * the Claude 3 models in docs.anthropic.com "tool use pricing and tokens", ~350 for Claude 4.
 * Anthropic-defined tools add their own definitions on top (bash 245, text editor 700,
 * computer use 735 + a 466-499 token system prompt, same page), counted per typed tool.
 */
export const ANTHROPIC_TOOL_SYSTEM = 600;
export const ANTHROPIC_TYPED_TOOL = 1_300;
/** OpenAI renders function definitions into its own preamble; the JSON is longer, plus this fixed part. */
export const OPENAI_TOOLS_PREAMBLE = 100;

// ---------------------------------------------------------------- images

export interface ImageSize {
  width: number;
  height: number;
}

/** How an OpenAI model family bills an image (platform.openai.com/docs/guides/images-vision, "Calculating costs"). */
type OpenAIVision = { kind: "tiles"; base: number; tile: number } | { kind: "patches"; multiplier: number };

// Tile models: scale to fit 2048x2048, then the short side to 768, then `base` plus `tile`
// per 512px square. Patch models: one 32px patch per token, at most 1536 patches, times a
// per-model multiplier. The documented multipliers are used even where community
// measurements found the API billing less (gpt-5-mini ~1.2, gpt-5-nano ~1.5): higher is safe.
const OPENAI_VISION: Record<string, OpenAIVision> = {
  "gpt-4o": { kind: "tiles", base: 85, tile: 170 },
  "gpt-4o-2024-05-13": { kind: "tiles", base: 85, tile: 170 },
  "chatgpt-4o-latest": { kind: "tiles", base: 85, tile: 170 },
  "gpt-4.1": { kind: "tiles", base: 85, tile: 170 },
  "gpt-4-turbo": { kind: "tiles", base: 85, tile: 170 },
  "gpt-4o-mini": { kind: "tiles", base: 2833, tile: 5667 },
  o1: { kind: "tiles", base: 75, tile: 150 },
  "o1-pro": { kind: "tiles", base: 75, tile: 150 },
  o3: { kind: "tiles", base: 75, tile: 150 },
  "o3-pro": { kind: "tiles", base: 75, tile: 150 },
  "gpt-5": { kind: "tiles", base: 70, tile: 140 },
  "gpt-5-chat": { kind: "tiles", base: 70, tile: 140 },
  "gpt-4.1-mini": { kind: "patches", multiplier: 1.62 },
  "gpt-4.1-nano": { kind: "patches", multiplier: 2.46 },
  "gpt-5-mini": { kind: "patches", multiplier: 1.62 },
  "gpt-5-nano": { kind: "patches", multiplier: 2.46 },
  "o4-mini": { kind: "patches", multiplier: 1.72 },
};
// A family that takes no images answers 400 (not billed); one we do not know is charged as
// the dearest tile model per token count we know, gpt-4o-mini.
const OPENAI_VISION_UNKNOWN: OpenAIVision = { kind: "tiles", base: 2833, tile: 5667 };
const MAX_TILES = 8; // 2048 x 768 after scaling: 4 x 2 squares
const MAX_PATCHES = 1536;
/** The image part's own wrapper tokens (a few per image in measurements). */
const IMAGE_WRAPPER = 20;

/** Squares of 512px after OpenAI's two scaling steps; a scaled dimension that is not whole is rounded up. */
function tiles({ width, height }: ImageSize): number {
  let w = width;
  let h = height;
  const fit = Math.min(1, 2048 / Math.max(w, h));
  (w *= fit), (h *= fit);
  const short = Math.min(1, 768 / Math.min(w, h));
  (w *= short), (h *= short);
  const up = (x: number) => Math.ceil(x - 1e-9);
  return Math.min(MAX_TILES, Math.ceil(up(w) / 512) * Math.ceil(up(h) / 512));
}

function openaiImage(family: string, size: ImageSize | undefined, detail: unknown): number {
  const v = OPENAI_VISION[family] ?? OPENAI_VISION_UNKNOWN;
  if (v.kind === "patches") {
    const patches = size ? Math.min(MAX_PATCHES, Math.ceil(size.width / 32) * Math.ceil(size.height / 32)) : MAX_PATCHES;
    return Math.ceil(patches * v.multiplier) + IMAGE_WRAPPER;
  }
  if (detail === "low") return v.base + IMAGE_WRAPPER;
  return v.base + v.tile * (size ? tiles(size) : MAX_TILES) + IMAGE_WRAPPER;
}

// Claude: about width x height / 750 tokens; an image past 1568px on its long edge or past
// ~1,600 tokens is scaled down first (docs.anthropic.com, vision: "Evaluate image size").
// The formula is stated as approximate, so 10% is added.
const CLAUDE_IMAGE_CAP = 1_600;
const CLAUDE_IMAGE_MARGIN = 1.1;

function claudeImage(size: ImageSize | undefined): number {
  const raw = size ? Math.min(CLAUDE_IMAGE_CAP, Math.ceil((size.width * size.height) / 750)) : CLAUDE_IMAGE_CAP;
  return Math.ceil(raw * CLAUDE_IMAGE_MARGIN - 1e-9) + IMAGE_WRAPPER;
}

/** Upper bound on the input tokens one image bills; `size` undefined means it could not be read (a URL, a file id). */
export function imageTokens(provider: Provider, family: string, size: ImageSize | undefined, detail?: unknown): number {
  return provider === "anthropic" ? claudeImage(size) : openaiImage(family, size, detail);
}

// ---------------------------------------------------------------- PDFs and files

/**
 * Both providers put each PDF page into the context twice: as extracted text and as an
 * image of the page (docs.anthropic.com "PDF support": 1,500-3,000 tokens per page; OpenAI
 * "File inputs": "both the extracted text and an image of each page"). The image side is
 * the family's largest image; the text side is an allowance of 3,000 tokens per page, the
 * top of Anthropic's range (denser pages exceed it: such a settle is an overrun, alerted and
 * learned from). A PDF whose pages cannot be counted (a URL, a file id, object streams) is
 * charged as the per-request maximum of 100 pages; the context window caps every prompt.
 */
export const PDF_TEXT_PER_PAGE = 3_000;
export const PDF_MAX_PAGES = 100;

export function pdfTokens(provider: Provider, family: string, pages: number | undefined): number {
  const n = Math.min(PDF_MAX_PAGES, pages ?? PDF_MAX_PAGES);
  return n * (PDF_TEXT_PER_PAGE + imageTokens(provider, family, undefined)) + IMAGE_WRAPPER;
}

// ---------------------------------------------------------------- server-side tools

/**
 * Tools the provider runs inside the call. Their results become input tokens of the same
 * call, and some carry a fee (schema/pricing.ts TOOL_FEES). No provider bounds a result's
 * size, so each use gets an allowance (search results: "several thousand to tens of
 * thousands" of tokens per search in public reports), and calls that may use such tools are
 * learned from separately (profile "server-tools"). The number of uses is bounded for real:
 * a call that names no limit is sent with DEFAULT_TOOL_USES (Anthropic `max_uses` per tool,
 * OpenAI Responses `max_tool_calls`).
 */
export const SERVER_TOOL_ALLOWANCE: Record<string, number> = {
  web_search: 25_000,
  web_fetch: 50_000,
  code_execution: 10_000,
  file_search: 20_000,
  code_interpreter: 10_000,
  mcp: 25_000,
};
/** A provider-side tool type we do not know: the largest allowance and the dearest fee. */
export const UNKNOWN_TOOL_ALLOWANCE = 50_000;
export const DEFAULT_TOOL_USES = 5;
