import type { z } from "zod";
import { config } from "./config";
import { isCheckpointLine } from "../../lib/checkpoint";

// HTTP to the gateway. Every answer is checked against the schema the server is built
// from, so a drifted or broken answer shows as an error instead of a half-drawn view.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = "ApiError";
  }

  override toString(): string {
    return `${this.code}: ${this.message}`;
  }
}

/** Fired when the token is refused, so the app can go back to the sign-in form. */
export const onUnauthorized = new Set<(e: ApiError) => void>();

interface Init {
  method?: string;
  /** JSON-encoded. */
  body?: unknown;
  /** Sent as it is, with its own content type. */
  text?: { body: string; type: string };
  signal?: AbortSignal;
}

async function request(path: string, init: Init = {}): Promise<Response> {
  const headers: Record<string, string> = { authorization: `Bearer ${config.token ?? ""}` };
  const body = init.text ? init.text.body : init.body === undefined ? undefined : JSON.stringify(init.body);
  if (body !== undefined) headers["content-type"] = init.text?.type ?? "application/json";
  let res: Response;
  try {
    res = await fetch(path, { method: init.method ?? (body !== undefined ? "POST" : "GET"), headers, body, signal: init.signal });
  } catch (e) {
    if ((e as Error).name === "AbortError") throw e;
    throw new ApiError(0, "unreachable", "Governor could not be reached");
  }
  if (!res.ok) {
    const text = await res.text().catch(() => "");
    let err: { code?: string; message?: string; field?: string } = {};
    try {
      err = (JSON.parse(text) as { error?: typeof err }).error ?? {};
    } catch {
      /* not JSON: a proxy or the runtime answered */
    }
    const e = new ApiError(res.status, err.code ?? `http_${res.status}`, err.message ?? (text.slice(0, 200) || res.statusText), err.field);
    if (res.status === 401) for (const f of onUnauthorized) f(e);
    throw e;
  }
  return res;
}

export async function getJson<S extends z.ZodType>(path: string, schema: S, signal?: AbortSignal): Promise<z.infer<S>> {
  const res = await request(path, { signal });
  return check(schema, await res.json(), path);
}

export async function postJson<S extends z.ZodType>(path: string, body: unknown, schema: S): Promise<z.infer<S>> {
  const res = await request(path, { body });
  return check(schema, await res.json(), path);
}

/** A body that is not JSON (a policy as YAML); the answer is JSON. */
export async function postText<S extends z.ZodType>(path: string, text: { body: string; type: string }, schema: S, signal?: AbortSignal): Promise<z.infer<S>> {
  const res = await request(path, { text, signal });
  return check(schema, await res.json(), path);
}

/**
 * Saves what a route answers as a file. The token goes in the Authorization header of a
 * fetch, never in a link's URL (where history, logs and Referer headers would keep it);
 * the answer becomes a blob the browser saves under the server's file name.
 */
export async function download(path: string, fallbackName: string): Promise<{ name: string; bytes: number }> {
  const res = await request(path);
  const blob = await res.blob();
  const disposition = res.headers.get("content-disposition") ?? "";
  const name = /filename="?([^";]+)"?/.exec(disposition)?.[1] ?? fallbackName;
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.rel = "noopener";
  document.body.append(a);
  a.click();
  a.remove();
  // The click has handed the blob to the download; the URL can go after this turn.
  setTimeout(() => URL.revokeObjectURL(url), 30_000);
  return { name, bytes: blob.size };
}

/** NDJSON lines and the response's headers. */
export async function getLines(path: string, signal?: AbortSignal): Promise<{ lines: unknown[]; headers: Headers }> {
  const res = await request(path, { signal });
  const text = await res.text();
  const lines = text
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as unknown)
    // An export ends with the signed checkpoint (lib/checkpoint.ts): not an event.
    .filter((l) => !isCheckpointLine(l));
  return { lines, headers: res.headers };
}

export function check<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw new ApiError(0, "bad_answer", `${what} answered something this console does not understand (${issue?.path.join(".") || "(root)"}: ${issue?.message})`);
}

export const qs = (params: Record<string, string | number | undefined | null>) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
};
