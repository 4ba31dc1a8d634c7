import type { z } from "zod";
import type { ActionBody, ReportBody } from "../schema/api";
import type { PolicyInput } from "../schema/policy";
import type { SessionSummary } from "../schema/protocol";

export type { SessionSummary } from "../schema/protocol";
export type { GovernorEvent } from "../schema/events";
export type { PolicyInput } from "../schema/policy";
export type { WhoAmI } from "../schema/whoami";

export type FailMode = "closed" | "open";

export interface GovernorOptions {
  baseUrl: string;
  token: string;
  /** Needed only for sockets (the room is `<tenant>:<session>`); `whoami()` tells the token's. */
  tenant?: string;
  fetch?: typeof fetch;
  /** What `checkAction` answers when the server cannot be reached; the policy's own default is closed. */
  failMode?: FailMode;
  /** WebSocket constructor for `session()`; defaults to the global one, else the `ws` package. */
  WebSocket?: unknown;
}

/** Who acts in a session: sent with checks and as the proxy's X-Agent-ID / X-User-ID / X-Run-ID / X-Task-Context headers. */
export interface Attribution {
  agent?: string;
  user?: string;
  run?: string;
  task?: string;
}

export type SessionState = SessionSummary["state"];

export interface ListSessionsOptions {
  /** Page size, 1..500 (the server's default is 100). */
  limit?: number;
  /** `nextCursor` of the previous page, as it came. */
  cursor?: string;
  state?: SessionState | SessionState[];
  agent?: string;
  user?: string;
  /** Opened at or after: epoch ms, a Date, an ISO date, or a duration ago such as "30d" or "12h". */
  since?: number | string | Date;
  /** Opened before; same forms as `since`. */
  until?: number | string | Date;
}

export interface SessionPage {
  sessions: SessionSummary[];
  /** null on the last page. */
  nextCursor: string | null;
  /** How many sessions match the filters, over all pages. */
  total: number;
}

export interface OpenSessionInput {
  id: string;
  /** A policy object, or YAML text sent as application/yaml. */
  policy?: PolicyInput | string;
  agent?: string;
  user?: string;
  task?: string;
}

export type ActionRequest = z.input<typeof ActionBody>;
export type Fact = z.input<typeof ReportBody>;

export interface ActionDecision {
  id?: string;
  decision: "allow" | "deny" | "review";
  code?: string;
  rule?: string;
  reason?: string;
  approvalId?: string;
  /** Seconds, when a rate limit refused. */
  retryAfter?: number;
  /** null only when the server could not be reached and failMode decided. */
  spentUsd: number | null;
  remainingUsd: number | null;
}

export interface SocketDecision extends ActionDecision {
  id: string;
  spentUsd: number;
  final: boolean;
}

export interface BudgetCheck {
  allowed: boolean;
  state: SessionSummary["state"];
  spentUsd: number;
  reservedUsd: number;
  remainingUsd: number | null;
}

export interface ReportResult {
  id: string;
  accepted: boolean;
  state: SessionSummary["state"];
  spentUsd: number;
  remainingUsd: number | null;
}

export interface ApprovalResult {
  approvalId: string;
  decision: "allow" | "deny";
  state: SessionSummary["state"];
  spentUsd: number;
  remainingUsd: number | null;
}
