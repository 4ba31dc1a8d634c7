// One error class for every refusal the server explains, so callers branch on `code`
// (and `field` / `rule`) instead of parsing messages.
import { STATUS } from "../machines/decide";

// Refusal codes share the server's statuses; the rest are the gateway's own.
const STATUS_OF_CODE: Record<string, number> = {
  ...STATUS,
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  payload_too_large: 413,
  conflict: 409,
  upstream_error: 502,
};

export interface ErrorBody {
  code: string;
  message: string;
  field?: string;
  rule?: string;
  retryAfter?: number;
}

export class GovernorApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly field?: string;
  readonly rule?: string;
  readonly retryAfter?: number;

  constructor(status: number, body: ErrorBody) {
    super(body.message);
    this.name = "GovernorApiError";
    this.status = status;
    this.code = body.code;
    this.field = body.field;
    this.rule = body.rule;
    this.retryAfter = body.retryAfter;
  }

  /** Socket errors carry no HTTP status; the code implies the one the same refusal has over HTTP. */
  static fromSocket(body: ErrorBody): GovernorApiError {
    return new GovernorApiError(STATUS_OF_CODE[body.code] ?? 500, body);
  }
}

function isErrorBody(v: unknown): v is ErrorBody {
  return typeof v === "object" && v !== null && typeof (v as ErrorBody).code === "string" && typeof (v as ErrorBody).message === "string";
}

/** Reads `{error:{code,message,...}}`; anything else (a proxy's HTML page, an empty 502) still becomes a typed error. */
export function errorFromResponse(status: number, text: string): GovernorApiError {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const err = (body as { error?: unknown } | undefined)?.error;
  if (isErrorBody(err)) return new GovernorApiError(status, err);
  const snippet = text.trim().slice(0, 200);
  return new GovernorApiError(status, { code: `http_${status}`, message: snippet ? `HTTP ${status}: ${snippet}` : `HTTP ${status}` });
}
