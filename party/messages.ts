import { BadRequestError, GovernorError } from "../lib/errors";
import { MAX_SOCKET_MESSAGE_BYTES } from "../lib/limits";
import { isWellFormed, utf8Length } from "../lib/text";
import { ClientMessage } from "../schema/protocol";
import { assertDepth } from "./http";

// A client's socket message, from raw frame to typed message, or a GovernorError the actor
// sends back as an `error` message (the socket stays open).

export interface Decoded {
  msg?: ClientMessage;
  /** The message's own id (or its report's), so even a refusal can name what it refuses. */
  id?: string;
  error?: GovernorError;
}

function sizeOf(raw: string | ArrayBuffer | ArrayBufferView): number {
  if (typeof raw === "string") return raw.length > MAX_SOCKET_MESSAGE_BYTES / 3 ? utf8Length(raw) : raw.length;
  return raw.byteLength;
}

export function decodeClientMessage(raw: string | ArrayBuffer | ArrayBufferView): Decoded {
  const size = sizeOf(raw);
  if (size > MAX_SOCKET_MESSAGE_BYTES) {
    return { error: new GovernorError("payload_too_large", 413, `message is ${size} bytes; the limit is ${MAX_SOCKET_MESSAGE_BYTES} bytes (${MAX_SOCKET_MESSAGE_BYTES / 1024} KiB)`, { field: "message" }) };
  }
  let data: unknown;
  try {
    const text = typeof raw === "string" ? raw : new TextDecoder("utf-8", { fatal: true }).decode(raw as ArrayBuffer);
    data = JSON.parse(text);
  } catch {
    return { error: new BadRequestError("message is not valid JSON", "message") };
  }
  let id: string | undefined;
  if (data && typeof data === "object") {
    const d = data as { id?: unknown; report?: { id?: unknown } };
    const candidate = d.id ?? d.report?.id;
    // Echoed back in the error: only if it is text we would have accepted.
    if (typeof candidate === "string" && candidate.length <= 256 && isWellFormed(candidate)) id = candidate;
  }
  try {
    assertDepth(data, "message");
  } catch (e) {
    return { id, error: e as GovernorError };
  }
  const parsed = ClientMessage.safeParse(data);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue?.path.join(".") || "type";
    return { id, error: new BadRequestError(`${field}: ${issue?.message}`, field) };
  }
  return { id, msg: parsed.data };
}
