import type { Provider } from "../../schema/pricing";
import { readBody } from "../http";
import { upstreamHeaders, upstreamUrl } from "./upstream";
import { providerError } from "./errors";

// A free endpoint (endpoints.ts): the body goes upstream as sent, on the gateway's key,
// with no session, reservation or log entry; the provider's answer comes back as it is.

const MAX_FREE_BODY = 16 * 1024 * 1024;
const TIMEOUT_MS = 30_000;

export async function passThrough(req: Request, env: Record<string, unknown>, provider: Provider, path: string): Promise<Response> {
  const { bytes } = await readBody(req, MAX_FREE_BODY);
  const url = new URL(req.url);
  url.searchParams.delete("token");
  let upstream: Response;
  try {
    upstream = await fetch(upstreamUrl(env, provider, path, url.search), { method: "POST", headers: upstreamHeaders(req, env, provider), body: bytes, signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (e) {
    return providerError(provider, 502, "upstream_error", `upstream unreachable: ${(e as Error).message}`);
  }
  const headers: Record<string, string> = { "content-type": upstream.headers.get("content-type") ?? "application/json" };
  for (const h of ["request-id", "x-request-id"]) {
    const v = upstream.headers.get(h);
    if (v) headers[h] = v;
  }
  return new Response(upstream.body, { status: upstream.status, headers });
}
