import type { Provider } from "../../schema/pricing";

/** Refusals a retry cannot change: the official SDKs read this header before their own retry rules (they retry 409). */
const FINAL = new Set([400, 401, 402, 403, 404, 409, 413]);

/** The provider's own error shape, so its SDK raises its usual error class. */
export function providerError(provider: Provider, status: number, code: string, message: string, extra: { rule?: string; retryAfter?: number; field?: string } = {}, headers: Record<string, string> = {}): Response {
  const body =
    provider === "openai"
      ? { error: { message, type: code, param: extra.field ?? null, code, ...(extra.rule && { rule: extra.rule }) } }
      : { type: "error", error: { type: code, message, ...(extra.rule && { rule: extra.rule }) } };
  const h: Record<string, string> = { "content-type": "application/json", ...headers };
  if (extra.retryAfter !== undefined) h["retry-after"] = String(Math.max(1, Math.ceil(extra.retryAfter)));
  if (FINAL.has(status)) h["x-should-retry"] = "false";
  return new Response(JSON.stringify(body), { status, headers: h });
}

/** An error event in the provider's stream format, so a streaming SDK raises it instead of seeing a cut. */
export function streamError(provider: Provider, code: string, message: string): string {
  return provider === "openai"
    ? `data: ${JSON.stringify({ error: { message, type: code, param: null, code } })}\n\n`
    : `event: error\ndata: ${JSON.stringify({ type: "error", error: { type: code, message } })}\n\n`;
}

export function governorHeaders(requestId: string, money: { spentUsd: number; remainingUsd: number | null }): Record<string, string> {
  return {
    "x-governor-request-id": requestId,
    "x-governor-spent-usd": money.spentUsd.toFixed(6),
    "x-governor-remaining-usd": money.remainingUsd === null ? "unlimited" : money.remainingUsd.toFixed(6),
  };
}
