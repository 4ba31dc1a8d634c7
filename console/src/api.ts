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

async function request(path: string, init: { method?: string; body?: unknown; signal?: AbortSignal } = {}): Promise<Response> {
  const headers: Record<string, string> = { authorization: `Bearer ${config.token ?? ""}` };
  if (init.body !== undefined) headers["content-type"] = "application/json";
  let res: Response;
  try {
    res = await fetch(path, { method: init.method ?? (init.body !== undefined ? "POST" : "GET"), headers, body: init.body === undefined ? undefined : JSON.stringify(init.body), signal: init.signal });
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
