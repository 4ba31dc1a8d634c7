import { NotFoundError } from "../../lib/errors";
import type { Provider } from "../../schema/pricing";

// Which provider paths the proxy lets through. Only endpoints whose price and output cap
// the reservation knows are governed; anything else (images, audio, moderations, files,
// batches, fine-tuning) would go upstream on the gateway's key with no bound on its cost,
// so it is refused before anything leaves and without a reservation.

const GOVERNED: Record<Provider, readonly string[]> = {
  openai: ["v1/chat/completions", "v1/completions", "v1/responses", "v1/embeddings"],
  anthropic: ["v1/messages"],
};

/**
 * Free endpoints, passed through without a reservation or a session. Anthropic's token
 * counting "is free to use but subject to requests per minute rate limits", and those
 * limits are "separate and independent" from message creation's, so a caller counting
 * cannot starve anyone's calls (https://docs.anthropic.com/en/docs/build-with-claude/token-counting).
 */
const FREE: Record<Provider, readonly string[]> = {
  openai: [],
  anthropic: ["v1/messages/count_tokens"],
};

export type Endpoint = "governed" | "free";

/** `path` is what follows /v1/proxy/<provider>/, without a trailing slash. */
export function endpointOf(provider: Provider, path: string): Endpoint {
  if (GOVERNED[provider].includes(path)) return "governed";
  if (FREE[provider].includes(path)) return "free";
  const named = [...GOVERNED[provider], ...FREE[provider]].join(", ");
  // An SDK base URL with one /v1 too few or too many: say what to change.
  const all = [...GOVERNED[provider], ...FREE[provider]];
  const hint =
    provider === "openai" && all.includes(`v1/${path}`)
      ? " (the OpenAI SDK's baseURL must end in /v1/proxy/openai/v1)"
      : provider === "anthropic" && path.startsWith("v1/v1/") && all.includes(path.slice(3))
        ? " (the Anthropic SDK's baseURL ends in /v1/proxy/anthropic, without /v1)"
        : "";
  throw new NotFoundError(`not a governed endpoint: ${provider} ${path}${hint}. Governed: ${named}`);
}
