import { createHash } from "node:crypto";
import { BadRequestError } from "../../lib/errors";
import { contextWindow, priceFor, ratesFor, reserveRates, type Price, type Provider } from "../../schema/pricing";
import { assertWellFormed, attributionOf, readBody } from "../http";
import type { ReserveRequest } from "../ops";
import { boundTokens, scanPrompt, type PromptScan } from "./estimate";
import { maxOutputFrom } from "./upstream";
import { toolCallsOf } from "./tool-calls";

// A proxied call as the gateway reads it: the body parsed once, the prompt scanned for its
// bound, and what the actor needs to price the worst case.

const MAX_PROXY_BODY = 16 * 1024 * 1024;

export interface ProxiedCall {
  provider: Provider;
  path: string;
  session: string;
  text: string;
  /** The body's bytes as they came: hashed, sized, and sent upstream when nothing in it changes. */
  bytes: Uint8Array<ArrayBuffer>;
  body: Record<string, unknown>;
  model: string;
  family?: string;
  price?: Price;
  scan: PromptScan;
  context: number;
  reserve: ReserveRequest;
}

/** JSON.parse with the gateway's messages; the depth check rides on scanPrompt's walk, and well-formed text is checked after it. */
function parseBody(text: string): unknown {
  if (text.trim() === "") throw new BadRequestError("body is empty: expected JSON", "body");
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new BadRequestError(`body is not valid JSON: ${(e as Error).message}`, "body");
  }
}

export async function readCall(req: Request, provider: Provider, path: string): Promise<ProxiedCall> {
  const session = req.headers.get("x-session-id") ?? "";
  if (!/^[A-Za-z0-9._~-]{1,128}$/.test(session)) throw new BadRequestError(session ? "X-Session-ID: use 1-128 letters, digits, '.', '_', '~' or '-'" : "X-Session-ID header is required", "X-Session-ID");
  const { attribution, idempotencyKey: clientKey } = attributionOf(req);
  const { text, bytes } = await readBody(req, MAX_PROXY_BODY);
  const parsed = parseBody(text);
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new BadRequestError("body must be a JSON object", "body");
  const body = parsed as Record<string, unknown>;
  if (typeof body.model !== "string" || !body.model) throw new BadRequestError("model is required", "model");
  const model = body.model;
  const priced = priceFor(provider, model);
  const scan = scanPrompt(provider, path, body, bytes.byteLength, priced?.family ?? "", model);
  assertWellFormed(body);
  const context = contextWindow(provider, priced?.family ?? "", req.headers.get("anthropic-beta") ?? "");
  const bound = boundTokens(scan, context);
  // The worst-case rates: cache writes above input, the long-context tier where the window reaches it (schema/pricing.ts).
  const rates = priced && reserveRates(provider, ratesFor(provider, priced.family, priced.price), scan.cacheWrite, context);
  const reserve: ReserveRequest = {
    requestId: clientKey || crypto.randomUUID(),
    clientKey: Boolean(clientKey),
    provider,
    model,
    path,
    prompt: { bound, size: Math.min(scan.textBytes + scan.fixedTokens, context), feesUsd: scan.toolFeesUsd, profile: scan.profile },
    maxOutputTokens: maxOutputFrom(provider, path, body),
    choices: typeof body.n === "number" && Number.isInteger(body.n) && body.n > 1 ? body.n : 1,
    price: rates ? rates.price : null,
    ...(rates && rates.premium && { premium: rates.premium }),
    ...(scan.unpriced && { unpriced: scan.unpriced }),
    ...(scan.cacheWrite !== "none" && { cacheWrite: scan.cacheWrite }),
    context,
    // A digest of the body as sent (its bytes: hashing the text would encode it again), by
    // the runtime's native SHA-256; the prompt itself is never stored.
    promptHash: createHash("sha256").update(bytes).digest("hex"),
    attribution,
    toolCalls: toolCallsOf(provider, path, body),
  };
  return { provider, path, session, text, bytes, body, model, family: priced?.family, price: priced?.price, scan, context, reserve };
}
