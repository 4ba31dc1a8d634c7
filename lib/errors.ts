// Typed errors with a stable `code`: the gateway turns them into the provider's error
// shape, so callers branch on `code`, never on message text.
export type ErrorCode =
  | "bad_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "payload_too_large"
  | "unsupported_media_type"
  | "method_not_allowed"
  | "budget_exceeded"
  | "session_killed"
  | "session_closed"
  | "policy_violation"
  | "rate_limited"
  | "awaiting_approval"
  | "upstream_error"
  | "conflict"
  | "internal_error";

export interface ErrorExtra {
  field?: string;
  rule?: string;
  retryAfter?: number;
}

export class GovernorError extends Error {
  readonly field?: string;
  readonly rule?: string;
  readonly retryAfter?: number;
  constructor(
    readonly code: ErrorCode | string,
    readonly status: number,
    message: string,
    extra: ErrorExtra = {},
  ) {
    super(message);
    this.name = "GovernorError";
    this.field = extra.field;
    this.rule = extra.rule;
    this.retryAfter = extra.retryAfter;
  }

  toJSON() {
    return {
      code: this.code,
      message: this.message,
      ...(this.field !== undefined && { field: this.field }),
      ...(this.rule !== undefined && { rule: this.rule }),
      ...(this.retryAfter !== undefined && { retryAfter: this.retryAfter }),
    };
  }
}

export class BadRequestError extends GovernorError {
  constructor(message: string, field?: string) {
    super("bad_request", 400, message, { field });
  }
}

export class UnauthorizedError extends GovernorError {
  constructor(message = "missing or unknown token") {
    super("unauthorized", 401, message);
  }
}

export class ForbiddenError extends GovernorError {
  constructor(message: string) {
    super("forbidden", 403, message);
  }
}

export class NotFoundError extends GovernorError {
  constructor(message: string) {
    super("not_found", 404, message);
  }
}

export class PayloadTooLargeError extends GovernorError {
  constructor(limit: number) {
    super("payload_too_large", 413, `body is larger than ${limit} bytes`);
  }
}
