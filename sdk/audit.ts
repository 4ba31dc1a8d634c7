// Log verification for SDK users: the same code the CLI and the gateway run (lib/audit.ts,
// lib/replay.ts), so an auditor's own program reaches the same verdict as `governor replay`.
export {
  auditEntries,
  auditEvents,
  auditNdjson,
  checkEvent,
  LogIntegrityError,
  parseNdjson,
  proveComplete,
  type AuditBad,
  type AuditOk,
  type AuditResult,
  type Entry,
  type Keys,
  type KeySource,
  type Problem,
} from "../lib/audit";
export { replayReport, type ReplayOk, type ReplayResult } from "../lib/replay";
export { importPublicKey, isCheckpointLine, SignedCheckpoint, verifyCheckpoint, type PublicKey } from "../lib/checkpoint";
