export { Governor, UNREACHABLE, type LogPage } from "./client";
export { BoundSession, type CheckInput } from "./bound";
export { guard, type GuardOptions } from "./guard";
export { SessionHandle, type CheckOptions } from "./handle";
export { ActionDeniedError, GovernorApiError, MessageTooLargeError, type DeniedDecision, type ErrorBody } from "./errors";
export { auditEvents, auditNdjson, LogIntegrityError, type AuditBad, type AuditOk, type AuditResult } from "./audit";
export type * from "./types";
