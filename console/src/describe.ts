import type { GovernorEvent } from "../../schema/events";
import { usd } from "./format";

// One line per event, the facts an operator looks for first; the full event is one click away.

const who = (a: { agent?: string; user?: string; run?: string }) => [a.agent && `agent ${a.agent}`, a.user && `user ${a.user}`, a.run && `run ${a.run}`].filter(Boolean).join(", ");
const paren = (s: string) => (s ? ` (${s})` : "");

export function describe(e: GovernorEvent): string {
  switch (e.type) {
    case "session.opened": {
      const b = e.data.policy.budget.session_usd;
      return `opened${b !== undefined ? ` with a ${usd(b)} budget` : " with no budget"}${paren([e.data.agent && `agent ${e.data.agent}`, e.data.user && `user ${e.data.user}`].filter(Boolean).join(", "))}${e.data.task ? `: ${e.data.task}` : ""}`;
    }
    case "request.reserved":
      return `${e.data.kind === "llm" ? `${e.data.provider ?? "llm"} ${e.data.model ?? ""}`.trim() : "action"} reserved ${usd(e.data.estimateUsd)}${e.data.promptTokens !== undefined ? ` · ${e.data.promptTokens} prompt tokens` : ""}${e.data.maxOutputTokens !== undefined ? `, up to ${e.data.maxOutputTokens} out` : ""}${paren(who(e.data.attribution))}`;
    case "request.settled": {
      const u = e.data.usage;
      return `${e.data.outcome} at ${usd(e.data.costUsd)}${e.data.model ? ` · ${e.data.model}` : ""}${u ? ` · ${u.inputTokens} in / ${u.outputTokens} out` : ""}${paren(who(e.data.attribution))}`;
    }
    case "request.denied":
      return `${e.data.kind} refused: ${e.data.code} by ${e.data.rule}: ${e.data.reason}`;
    case "action.checked":
      // MCP tool calls are actions named mcp.<server>.<tool>; the source says how it was asked.
      return `${e.data.action}${e.data.source ? ` via ${e.data.source}` : ""} → ${e.data.decision}${e.data.costUsd ? ` · ${usd(e.data.costUsd)}` : ""}${e.data.rule ? ` · ${e.data.rule}: ${e.data.reason ?? ""}` : ""}`;
    case "violation.recorded":
      return `${e.data.kind} (${e.data.source})${e.data.detail ? `: ${e.data.detail}` : ""}`;
    case "anomaly.detected":
      return `${e.data.rule ?? e.data.kind}: ${e.data.reason} → ${e.data.onDetect}`;
    case "error.recorded":
      return `${e.data.source === "llm" ? "model call" : "tool"} error${e.data.action ? ` from ${e.data.action}` : ""}${e.data.code ? ` · ${e.data.code}` : ""}${e.data.message ? `: ${e.data.message}` : ""}`;
    case "alert.raised":
      return `${e.data.rule}: ${e.data.reason}`;
    case "approval.requested":
      return `${e.data.action} needs review${e.data.costUsd ? ` (${usd(e.data.costUsd)})` : ""}: ${e.data.reason} · ${e.data.rule}`;
    case "approval.granted":
      return `approved by ${e.data.by}${e.data.note ? `: ${e.data.note}` : ""}`;
    case "approval.denied":
      return `${e.data.timedOut ? "timed out, denied" : `denied by ${e.data.by}`}${e.data.note ? `: ${e.data.note}` : ""}`;
    case "session.killed":
      return `killed by ${e.data.by}: ${e.data.reason}${e.data.rule ? ` · ${e.data.rule}` : ""}`;
    case "session.closed":
      return `closed by ${e.data.by}${e.data.reason ? `: ${e.data.reason}` : ""}`;
    case "subject.redacted":
      return `${e.data.subject} redacted by ${e.data.by}: ${e.data.fields.join(", ")}`;
    default:
      return JSON.stringify((e as { data: unknown }).data);
  }
}

/** Why the session took a step into a state. */
export function cause(e: GovernorEvent): string {
  return e.type === "session.opened" ? "opened" : describe(e);
}

export function tone(type: string): string {
  if (type === "session.killed" || type === "request.denied" || type === "approval.denied") return "t-bad";
  if (type.startsWith("approval")) return "t-approval";
  if (type === "alert.raised" || type === "anomaly.detected" || type === "violation.recorded" || type === "error.recorded") return "t-warn";
  return "";
}
