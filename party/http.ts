import { BadRequestError, GovernorError, PayloadTooLargeError } from "../lib/errors";
import { describeIssue, issuePath } from "../schema/policy";
import type { z } from "zod";

export const MAX_BODY_BYTES = 1024 * 1024;

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
  if (!req.body) return "";
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
  return new TextDecoder().decode(all);
}

const MAX_DEPTH = 64;

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

export function parseJson(text: string): unknown {
  if (text.trim() === "") throw new BadRequestError("body is empty: expected JSON", "body");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new BadRequestError(`body is not valid JSON: ${(e as Error).message}`, "body");
  }
  assertDepth(value);
  return value;
}

export function validate<S extends z.ZodType>(schema: S, value: unknown, prefix = ""): z.infer<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw new BadRequestError(describeIssue(r.error, prefix), issuePath(r.error, prefix));
  return r.data;
}
