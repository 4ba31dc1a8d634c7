import { sha256Hex } from "./chain";
import type { EventOf, GovernorEvent, Usage } from "../schema/events";
import type { SessionSnapshot } from "../machines/session";

// A session's log as OpenTelemetry spans, following the GenAI semantic conventions
// (semantic-conventions docs/gen-ai/gen-ai-spans.md, registry/attributes/gen-ai.md):
//
//   chat {model}          a proxied call: reserve to settle, kind CLIENT (a refused call
//                         is a span of no length with status ERROR); `embeddings {model}`
//                         for embeddings
//   execute_tool {tool}   an action check, kind INTERNAL
//   approval {tool}       request to decision, child of the action's span
//   kill {session}        a kill, status ERROR
//   invoke_agent {agent}  the session itself, opened to its end, parent of all the above
//
// One trace per session (its id derived from tenant and session), so a session reads as
// one tree in any trace viewer. Attributes: gen_ai.* as the conventions name them, and
// governor.* for what the policy decided: decision, rule, reason, code, cost_usd,
// estimate_usd, outcome, request_id, tenant, user, run, spent_usd.

export type Attr = string | number | boolean;

export interface Span {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  /** 1 INTERNAL, 3 CLIENT (OTLP's SpanKind). */
  kind: 1 | 3;
  startMs: number;
  endMs: number;
  attributes: Record<string, Attr | undefined>;
  /** 2 ERROR (OTLP's StatusCode); no status means unset. */
  status?: { code: 2; message?: string };
}

const id = (parts: string[], hexChars: number) => sha256Hex(parts.join("\n")).slice(0, hexChars);

/** Input tokens as the conventions count them: cached reads and cache writes included. */
function inputTokens(u: Usage): number {
  return u.inputTokens + u.cachedInputTokens + u.cacheWriteTokens + (u.cacheWrite1hTokens ?? 0);
}

type Reserved = EventOf<"request.reserved">;
type Requested = EventOf<"approval.requested">;

/**
 * Turns stored batches into spans, in log order. It remembers calls and approvals in
 * flight (in memory: a span whose start it no longer knows, after the actor restarted,
 * starts at its end and says so).
 */
export class SpanBuilder {
  private calls = new Map<string, Reserved>();
  private approvals = new Map<string, Requested>();

  spans(events: GovernorEvent[], after: SessionSnapshot): Span[] {
    const ctx = after.context;
    const s = { tenant: ctx.tenant, session: ctx.session };
    const traceId = id(["trace", s.tenant, s.session], 32);
    const root = id(["span", s.tenant, s.session, "session"], 16);
    const base = (spanId: string) => ({ traceId, spanId, parentSpanId: root });
    const common = { "gen_ai.conversation.id": s.session, "governor.tenant": s.tenant };
    const out: Span[] = [];
    for (const e of events) {
      switch (e.type) {
        case "request.reserved":
          if (e.data.kind === "llm") this.calls.set(e.data.requestId, e);
          break;
        case "request.settled": {
          if (e.data.outcome === "reported") break;
          const r = this.calls.get(e.data.requestId);
          this.calls.delete(e.data.requestId);
          const model = r?.data.model ?? e.data.model ?? "unknown";
          const u = e.data.usage;
          out.push({
            ...base(id(["span", s.tenant, s.session, "request", e.data.requestId], 16)),
            name: `${operation(r?.data.path)} ${model}`,
            kind: 3,
            startMs: r?.ts ?? e.ts,
            endMs: e.ts,
            attributes: {
              ...common,
              ...callAttributes(r, model, operation(r?.data.path)),
              "gen_ai.usage.input_tokens": u && inputTokens(u),
              "gen_ai.usage.output_tokens": u?.outputTokens,
              "gen_ai.usage.cache_read.input_tokens": u?.cachedInputTokens || undefined,
              "gen_ai.usage.cache_creation.input_tokens": u ? u.cacheWriteTokens + (u.cacheWrite1hTokens ?? 0) || undefined : undefined,
              "governor.request_id": e.data.requestId,
              "governor.decision": "allow",
              "governor.outcome": e.data.outcome,
              "governor.cost_usd": e.data.costUsd,
              "governor.spent_usd": ctx.spentNanos / 1e9,
              ...(r ? {} : { "governor.start_unknown": true }),
              ...(e.data.outcome === "released" && { "error.type": "upstream_error" }),
            },
            ...(e.data.outcome === "released" && { status: { code: 2 as const, message: "the upstream call failed; nothing was charged" } }),
          });
          break;
        }
        case "request.denied": {
          if (e.data.kind !== "llm") break;
          const model = e.data.model ?? "unknown";
          out.push({
            ...base(id(["span", s.tenant, s.session, "request", e.data.requestId], 16)),
            name: `${operation(e.data.path)} ${model}`,
            kind: 3,
            startMs: e.ts,
            endMs: e.ts,
            attributes: {
              ...common,
              "gen_ai.operation.name": operation(e.data.path),
              "gen_ai.provider.name": e.data.provider,
              "gen_ai.request.model": model,
              "governor.request_id": e.data.requestId,
              "governor.estimate_usd": e.data.estimateUsd,
              ...attribution(e.data.attribution),
              ...refusal(e.data.code, e.data.rule, e.data.reason),
            },
            status: { code: 2, message: e.data.reason },
          });
          break;
        }
        case "action.checked": {
          const d = e.data;
          out.push({
            ...base(id(["span", s.tenant, s.session, "request", d.requestId], 16)),
            name: `execute_tool ${d.action}`,
            kind: 1,
            startMs: e.ts,
            endMs: e.ts,
            attributes: {
              ...common,
              "gen_ai.operation.name": "execute_tool",
              "gen_ai.tool.name": d.action,
              "gen_ai.tool.call.id": d.requestId,
              "governor.request_id": d.requestId,
              "governor.decision": d.decision,
              "governor.cost_usd": d.decision === "allow" ? d.costUsd : 0,
              "governor.spent_usd": ctx.spentNanos / 1e9,
              "governor.approval_id": d.approvalId,
              "governor.source": d.source,
              ...attribution(d.attribution),
              ...(d.decision === "deny" ? refusal(d.code ?? "policy_violation", d.rule, d.reason) : { "governor.rule": d.rule, "governor.reason": d.reason }),
            },
            ...(d.decision === "deny" && { status: { code: 2 as const, message: d.reason } }),
          });
          break;
        }
        case "approval.requested":
          this.approvals.set(e.data.approvalId, e);
          break;
        case "approval.granted":
        case "approval.denied": {
          const r = this.approvals.get(e.data.approvalId);
          this.approvals.delete(e.data.approvalId);
          const granted = e.type === "approval.granted";
          out.push({
            traceId,
            spanId: id(["span", s.tenant, s.session, "approval", e.data.approvalId], 16),
            parentSpanId: r ? id(["span", s.tenant, s.session, "request", r.data.requestId], 16) : root,
            name: `approval ${r?.data.action ?? e.data.approvalId}`,
            kind: 1,
            startMs: r?.ts ?? e.ts,
            endMs: e.ts,
            attributes: {
              ...common,
              "gen_ai.tool.name": r?.data.action,
              "governor.approval_id": e.data.approvalId,
              "governor.request_id": r?.data.requestId,
              "governor.decision": granted ? "approved" : "denied",
              "governor.decided_by": e.data.by,
              "governor.timed_out": e.type === "approval.denied" ? e.data.timedOut : undefined,
              "governor.rule": r?.data.rule,
              "governor.reason": r?.data.reason,
              "governor.cost_usd": granted ? r?.data.costUsd : 0,
              ...(r ? {} : { "governor.start_unknown": true }),
            },
          });
          break;
        }
        case "session.killed":
        case "session.closed": {
          const killed = e.type === "session.killed";
          if (killed) {
            out.push({
              ...base(id(["span", s.tenant, s.session, "kill", String(e.seq)], 16)),
              name: `kill ${s.session}`,
              kind: 1,
              startMs: e.ts,
              endMs: e.ts,
              attributes: { ...common, "governor.decision": "kill", "governor.decided_by": e.data.by, "governor.rule": e.data.rule, "governor.reason": e.data.reason, "governor.spent_usd": ctx.spentNanos / 1e9 },
              status: { code: 2, message: e.data.reason },
            });
          }
          out.push({
            traceId,
            spanId: root,
            name: `invoke_agent ${ctx.agent ?? s.session}`,
            kind: 1,
            startMs: ctx.openedAt || e.ts,
            endMs: e.ts,
            attributes: {
              ...common,
              "gen_ai.operation.name": "invoke_agent",
              "gen_ai.agent.name": ctx.agent,
              "governor.user": ctx.user,
              "governor.state": killed ? "killed" : "closed",
              "governor.spent_usd": ctx.spentNanos / 1e9,
              "governor.budget_usd": ctx.policy?.budget.session_usd,
            },
            ...(killed && { status: { code: 2 as const, message: e.data.reason } }),
          });
          break;
        }
      }
    }
    return out;
  }
}

function operation(path: string | undefined): "chat" | "embeddings" {
  return path && /embeddings$/.test(path) ? "embeddings" : "chat";
}

function callAttributes(r: Reserved | undefined, model: string, op: string): Record<string, Attr | undefined> {
  const d = r?.data;
  const choices = d?.choices ?? 1;
  return {
    "gen_ai.operation.name": op,
    "gen_ai.provider.name": d?.provider,
    "gen_ai.request.model": model,
    "gen_ai.request.max_tokens": d?.fittedCap ?? d?.outputCap ?? (d?.maxOutputTokens !== undefined ? Math.floor(d.maxOutputTokens / choices) : undefined),
    "gen_ai.request.choice.count": choices > 1 ? choices : undefined,
    "governor.estimate_usd": d?.estimateUsd,
    ...(d && attribution(d.attribution)),
  };
}

function attribution(a: { agent?: string; user?: string; run?: string; action?: string }): Record<string, Attr | undefined> {
  return { "gen_ai.agent.name": a.agent, "governor.user": a.user, "governor.run": a.run, "governor.action": a.action };
}

function refusal(code: string, rule: string | undefined, reason: string | undefined): Record<string, Attr | undefined> {
  return { "governor.decision": "deny", "governor.code": code, "governor.rule": rule, "governor.reason": reason, "error.type": code };
}

// ---------------------------------------------------------------- OTLP/HTTP JSON

type AnyValue = { stringValue: string } | { intValue: string } | { doubleValue: number } | { boolValue: boolean };

function value(v: Attr): AnyValue {
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  return Number.isInteger(v) ? { intValue: String(v) } : { doubleValue: v };
}

export function keyValues(attrs: Record<string, Attr | undefined>) {
  return Object.entries(attrs)
    .filter((kv): kv is [string, Attr] => kv[1] !== undefined && kv[1] !== "")
    .map(([key, v]) => ({ key, value: value(v) }));
}

const nanos = (ms: number) => `${Math.round(ms)}000000`;

/** The body of a POST to /v1/traces (OTLP/HTTP, JSON encoding: ids as hex, times as strings). */
export function otlpTraces(spans: Span[], resource: Record<string, Attr>, scope = { name: "governor", version: "1" }) {
  return {
    resourceSpans: [
      {
        resource: { attributes: keyValues(resource) },
        scopeSpans: [
          {
            scope,
            spans: spans.map((s) => ({
              traceId: s.traceId,
              spanId: s.spanId,
              ...(s.parentSpanId && { parentSpanId: s.parentSpanId }),
              name: s.name,
              kind: s.kind,
              startTimeUnixNano: nanos(s.startMs),
              endTimeUnixNano: nanos(s.endMs),
              attributes: keyValues(s.attributes),
              ...(s.status && { status: s.status }),
            })),
          },
        ],
      },
    ],
  };
}
