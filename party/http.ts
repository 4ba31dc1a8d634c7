import { BadRequestError, GovernorError, PayloadTooLargeError } from "../lib/errors";
import { MAX_BODY_BYTES, MAX_DEPTH, MAX_DRAIN_BYTES } from "../lib/limits";
import { findBadText } from "../lib/text";
import { AttributionHeaders } from "../schema/api";
import type { Attribution } from "../schema/events";
import { describeIssue, issuePath } from "../schema/policy";
import type { z } from "zod";

export { MAX_BODY_BYTES };

export function json(body: unknown, status = 200, headers: HeadersInit = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

export function errorResponse(e: unknown): Response {
  if (e instanceof GovernorError) {
    const headers: Record<string, string> = {};
    if (e.retryAfter !== undefined) headers["retry-after"] = String(Math.ceil(e.retryAfter));
    return json({ error: e.toJSON() }, e.status, headers);
  }
  console.error("unexpected error", e instanceof Error ? e.stack : e);
  return json({ error: { code: "internal_error", message: "internal error" } }, 500);
}

// Past this, an oversized upload is cut off instead of drained.
const DRAIN_LIMIT = 64 * 1024 * 1024;

/**
 * Reads at most `limit` bytes; a larger body is refused without being buffered. It is
 * drained (not kept) so the client gets a clean 413 rather than a reset connection.
 */
export async function readText(req: Request, limit = MAX_BODY_BYTES): Promise<string> {
  return (await readBody(req, limit)).text;
}

/** The body as text and as the bytes it came in (hashing and sizing the bytes skips re-encoding the text). */
export async function readBody(req: Request, limit = MAX_BODY_BYTES): Promise<{ text: string; bytes: Uint8Array<ArrayBuffer> }> {
  if (!req.body) return { text: "", bytes: new Uint8Array(0) };
  // Bodies are read as sent: a compressed one would reach the JSON parser as bytes.
  const encoding = req.headers.get("content-encoding")?.trim().toLowerCase();
  if (encoding && encoding !== "identity") {
    await drainBody(req);
    throw new GovernorError("unsupported_media_type", 415, `Content-Encoding "${encoding.slice(0, 64)}" is not accepted: send the body uncompressed`, { field: "Content-Encoding" });
  }
  // A declared length within the limit is read by the runtime in one go: a JavaScript
  // reader loop copying chunk by chunk costs ~2 ms of CPU on a 190 KiB agent context.
  // HTTP framing stops the body at its Content-Length, so no more than `limit` is buffered.
  const declared = Number(req.headers.get("content-length") ?? NaN);
  if (Number.isSafeInteger(declared) && declared >= 0 && declared <= limit) {
    const bytes = new Uint8Array(await req.arrayBuffer());
    return { text: decodeUtf8(bytes, limit), bytes };
  }
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > DRAIN_LIMIT) {
      await reader.cancel();
      break;
    }
    if (size <= limit) chunks.push(value);
  }
  if (size > limit) throw new PayloadTooLargeError(limit);
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.byteLength;
  }
  return { text: decodeUtf8(all, limit), bytes: all };
}

// Fatal: bytes that are not UTF-8 are refused, not turned into U+FFFD behind the sender's back.
const utf8 = new TextDecoder("utf-8", { fatal: true });

function decodeUtf8(bytes: Uint8Array, limit: number): string {
  if (bytes.byteLength > limit) throw new PayloadTooLargeError(limit);
  try {
    return utf8.decode(bytes);
  } catch {
    throw new BadRequestError("body is not valid UTF-8", "body");
  }
}

/**
 * Reads and drops what is left of a body we answer without reading: the runtime drops a
 * keep-alive connection whose request body was left unread, and the client's next
 * request on it fails. Past `limit` bytes the rest is cancelled (that connection ends).
 */
export async function drainBody(req: Request, limit = MAX_DRAIN_BYTES): Promise<boolean> {
  if (!req.body || req.bodyUsed) return true;
  try {
    const reader = req.body.getReader();
    let size = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return true;
      size += value.byteLength;
      if (size > limit) {
        await reader.cancel();
        return false;
      }
    }
  } catch {
    // The client went away: nothing left to keep alive.
    return false;
  }
}

/** Tells the client not to reuse a connection whose request body we did not read to the end. */
export function closing(res: Response): Response {
  const out = new Response(res.body, res);
  out.headers.set("connection", "close");
  return out;
}

/** Deeper than any real request: refused before recursive code (hashing, counting) meets it. */
export function assertDepth(value: unknown, field = "body"): void {
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== "object") continue;
    if (depth >= MAX_DEPTH) throw new BadRequestError(`${field} is nested more than ${MAX_DEPTH} levels deep`, field);
    for (const child of Object.values(v)) stack.push([child, depth + 1]);
  }
}

/** Refuses a body holding a string (or key) that is not well-formed UTF-16, naming where. */
export function assertWellFormed(value: unknown, field = "body"): void {
  const bad = findBadText(value);
  if (!bad) return;
  const path = bad.path.map(String).join(".") || field;
  throw new BadRequestError(`${path}: ${bad.message}`, path);
}

export function parseJson(text: string): unknown {
  if (text.trim() === "") throw new BadRequestError("body is empty: expected JSON", "body");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new BadRequestError(`body is not valid JSON: ${(e as Error).message}`, "body");
  }
  assertDepth(value);
  assertWellFormed(value);
  return value;
}

/** Who a request is attributed to, from the headers the log records; each is checked, not cut. */
export function attributionOf(req: Request): { attribution: Attribution; idempotencyKey?: string } {
  const h = (name: string) => req.headers.get(name) || undefined;
  const r = AttributionHeaders.safeParse({
    "X-Agent-ID": h("x-agent-id"),
    "X-User-ID": h("x-user-id"),
    "X-Run-ID": h("x-run-id"),
    "X-Action": h("x-action"),
    "X-Task-Context": h("x-task-context"),
    "Idempotency-Key": h("idempotency-key"),
  });
  if (!r.success) throw new BadRequestError(describeIssue(r.error), issuePath(r.error));
  const d = r.data;
  return {
    attribution: { agent: d["X-Agent-ID"], user: d["X-User-ID"], run: d["X-Run-ID"], action: d["X-Action"], task: d["X-Task-Context"] },
    idempotencyKey: d["Idempotency-Key"],
  };
}

export function validate<S extends z.ZodType>(schema: S, value: unknown, prefix = ""): z.infer<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw new BadRequestError(describeIssue(r.error, prefix, schema), issuePath(r.error, prefix));
  return r.data;
}
