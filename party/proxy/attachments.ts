import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { imageSize } from "image-size";
import type { ImageSize } from "./bounds";

// Reading the few facts a bound needs from inline attachments, without decoding more than
// that: an image's pixel size from its header, a PDF's page count.

const DATA_URL = /^data:([^;,]*)(;[^,]*)?,/;

/** The base64 payload of a `data:` URL or a bare base64 string, and its media type when stated. */
export function payloadOf(v: unknown): { base64: string; mediaType?: string } | undefined {
  if (typeof v !== "string" || v.length === 0) return undefined;
  const m = DATA_URL.exec(v.slice(0, 256));
  if (m) return /;base64/i.test(m[2] ?? "") ? { base64: v.slice(m[0].length), mediaType: m[1] || undefined } : undefined;
  return /^https?:|^file-/i.test(v) ? undefined : { base64: v };
}

const decodeHead = (b64: string, chars: number) => Buffer.from(b64.slice(0, chars - (chars % 4)), "base64");

/**
 * Pixel size from the image's header: PNG, GIF and WebP state it in the first bytes; a JPEG
 * may have metadata first, so a larger head is tried before giving up (undefined: unknown).
 */
export function sniffImage(base64: string): ImageSize | undefined {
  for (const chars of [4_096, 131_072]) {
    try {
      const r = imageSize(decodeHead(base64, chars));
      if (r.width && r.height) return { width: r.width, height: r.height };
    } catch {
      /* not enough bytes, or not an image we can read */
    }
    if (base64.length <= chars) break;
  }
  return undefined;
}

// A PDF names each page object "/Type /Page"; the page tree root states "/Count n". Both can
// hide in compressed object streams, in which case the count is unknown.
const PAGE = /\/Type\s*\/Page(?![a-zA-Z])/g;
const COUNT = /\/Type\s*\/Pages\b[^>]*?\/Count\s+(\d+)|\/Count\s+(\d+)[^>]*?\/Type\s*\/Pages\b/g;
const pageCache = new Map<string, number | undefined>();
const PAGE_CACHE = 512;

export function pdfPages(base64: string): number | undefined {
  const key = createHash("sha1").update(base64).digest("base64");
  if (pageCache.has(key)) return pageCache.get(key);
  const text = Buffer.from(base64, "base64").toString("latin1");
  if (!text.startsWith("%PDF")) return remember(key, undefined);
  const pages = text.match(PAGE)?.length ?? 0;
  let counted = 0;
  for (const m of text.matchAll(COUNT)) counted = Math.max(counted, Number(m[1] ?? m[2]));
  const n = Math.max(pages, counted);
  return remember(key, n > 0 ? n : undefined);
}

function remember(key: string, v: number | undefined) {
  pageCache.set(key, v);
  if (pageCache.size > PAGE_CACHE) pageCache.delete(pageCache.keys().next().value as string);
  return v;
}
