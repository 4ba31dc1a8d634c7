// One error class for every refusal the server explains, so callers branch on `code`
// (and `field` / `rule`) instead of parsing messages.
import { MAX_SOCKET_MESSAGE_BYTES } from "../lib/limits";
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

/** What a denied action decision carries; the same fields the server answers with. */
export interface DeniedDecision {
  decision: "deny";
  code?: string;
  rule?: string;
  reason?: string;
  approvalId?: string;
  retryAfter?: number;
}

/**
 * A guarded tool was refused: by a rule, a budget, a killed session, an operator's denial
 * of a review, or fail_mode closed when Governor could not be reached. The tool did not run.
 */
export class ActionDeniedError extends Error {
  readonly action: string;
  /** `policy_violation`, `budget_exceeded`, `session_killed`, `rate_limited`, `governor_unreachable`, … */
  readonly code: string;
  /** The policy path that decided: `actions.deny`, `budget.session_usd`, `approval`, `fail_mode`, … */
  readonly rule?: string;
  readonly reason?: string;
  readonly approvalId?: string;
  /** Seconds, when a rate limit refused. */
  readonly retryAfter?: number;

  constructor(action: string, d: Omit<DeniedDecision, "decision">) {
    super(`Governor denied "${action}": ${d.reason ?? d.code ?? "denied"}${d.rule ? ` (rule ${d.rule})` : ""}`);
    this.name = "ActionDeniedError";
    this.action = action;
    this.code = d.code ?? "denied";
    this.rule = d.rule;
    this.reason = d.reason;
    this.approvalId = d.approvalId;
    this.retryAfter = d.retryAfter;
  }
}

/**
 * A socket message over the server's limit (256 KiB), refused here before it is sent: the
 * server would refuse it anyway (and past 1 MiB the runtime closes the socket). Over HTTP
 * (`gov.checkAction`, `gov.report`) a body may be up to 1 MiB.
 */
export class MessageTooLargeError extends GovernorApiError {
  /** The message's size in bytes (UTF-8), and the most the server takes. */
  readonly bytes: number;
  readonly limit: number;

  constructor(what: string, bytes: number, limit = MAX_SOCKET_MESSAGE_BYTES) {
    super(413, {
      code: "payload_too_large",
      field: "message",
      message: `${what} is ${bytes} bytes as a socket message; the limit is ${limit} bytes (${limit / 1024} KiB). Not sent: send less, or use HTTP (gov.checkAction / gov.report take up to 1 MiB)`,
    });
    this.name = "MessageTooLargeError";
    this.bytes = bytes;
    this.limit = limit;
  }
}
