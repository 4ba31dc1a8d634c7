export { Governor, UNREACHABLE, type LogPage } from "./client";
export { SessionHandle, type CheckOptions } from "./handle";
export { GovernorApiError, type ErrorBody } from "./errors";
export { auditEvents, auditNdjson, LogIntegrityError, type AuditBad, type AuditOk, type AuditResult } from "./audit";
export type * from "./types";
