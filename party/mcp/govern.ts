import type * as Party from "partykit/server";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { ErrorCode, McpError } from "@modelcontextprotocol/sdk/types.js";
import { ActionBody } from "../../schema/api";
import type { Attribution } from "../../schema/events";
import { describeIssue, issuePath } from "../../schema/policy";
import type { Principal } from "../auth";
import { callSession } from "../calls";
import { withoutRequestIds } from "../proxy/tool-calls";
import type { InFlight } from "./cancel";

// An MCP tool call is an action of the agent's session, decided by its actor before the
// upstream hears of it, exactly like POST /v1/sessions/:id/actions (allow and deny lists,
// argument rules, rate limits, budgets, approvals, loop detection, kill).

export interface SessionRef {
  lobby: Pick<Party.FetchLobby, "parties">;
  principal: Principal;
  session: string;
  attribution: Attribution;
}

export interface ActionAnswer {
  id: string;
  decision: "allow" | "deny" | "review";
  code?: string;
  rule?: string;
  reason?: string;
  approvalId?: string;
  retryAfter?: number;
  spentUsd: number;
  remainingUsd: number | null;
}

// A review is asked about again this often, so the agent hears that it is still waiting
// (a progress notification) and the wait ends soon after the agent goes away.
const WAIT_SLICE_MS = 15_000;
// The actor's approval timeout ends every wait well before this; it only bounds a bug.
const MAX_WAIT_MS = 60 * 60_000;

/** An actor's refusal of the request itself (no such session, bad input) as an MCP error. */
async function actorError(res: Response): Promise<McpError> {
  const body = (await res.json().catch(() => ({}))) as { error?: { code?: string; message?: string; field?: string } };
  const code = body.error?.code ?? "internal_error";
  const message = body.error?.message ?? `the session answered ${res.status}`;
  return new McpError(res.status >= 500 ? ErrorCode.InternalError : ErrorCode.InvalidRequest, message, { code, field: body.error?.field });
}

function whenAborted(signal: AbortSignal): Promise<undefined> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve(undefined);
    else signal.addEventListener("abort", () => resolve(undefined), { once: true });
  });
}

/**
 * Asks the session's actor, and while the answer is "review", keeps asking (the same
 * action id, so nothing is decided twice) until an operator or the approval timeout
 * decides. An agent that stops waiting withdraws its call: the approval is denied in its
 * name, so it can neither be charged nor run later.
 */
export async function decideToolCall(
  ref: SessionRef,
  call: { action: string; args: Record<string, unknown>; costUsd: number },
  opts: { signal: AbortSignal; call: InFlight; onPending: (a: ActionAnswer) => Promise<void> | void },
): Promise<ActionAnswer> {
  const id = crypto.randomUUID();
  // The same bounds as an action over HTTP (name length, argument size and shape).
  const checked = ActionBody.safeParse({ id, action: call.action, args: call.args, costUsd: call.costUsd });
  if (!checked.success) {
    const mcpName = (t: string) => t.replace(/^params\.args\b/, "params.arguments").replace(/^params\.action\b/, "params.name");
    throw new McpError(ErrorCode.InvalidParams, mcpName(describeIssue(checked.error, "params")), { code: "bad_request", field: mcpName(issuePath(checked.error, "params")) });
  }
  const body = checked.data;
  const ask = async (waitMs: number): Promise<ActionAnswer> => {
    const res = await callSession(ref.lobby, ref.principal, ref.session, {
      op: "action",
      body,
      attribution: ref.attribution,
      waitMs,
      source: "mcp",
    });
    if (!res.ok) throw await actorError(res);
    return (await res.json()) as ActionAnswer;
  };
  let answer = await ask(0);
  const until = Date.now() + MAX_WAIT_MS;
  while (answer.decision === "review") {
    opts.call.approvalId = answer.approvalId;
    if (opts.call.cancelled || opts.signal.aborted || Date.now() >= until) {
      await withdrawApproval(ref, answer.approvalId!);
      // Decided just before the withdrawal got there: that decision stands.
      return ask(0);
    }
    await opts.onPending(answer);
    answer = (await Promise.race([ask(WAIT_SLICE_MS), whenAborted(opts.signal)])) ?? answer;
  }
  opts.call.approvalId = undefined;
  return answer;
}

/** Denies a pending approval in the agent's name: its call is withdrawn, never charged or run. */
export async function withdrawApproval(ref: Pick<SessionRef, "lobby" | "principal" | "session">, approvalId: string): Promise<void> {
  const res = await callSession(ref.lobby, ref.principal, ref.session, {
    op: "approval",
    approvalId,
    decision: "deny",
    note: "withdrawn: the MCP client stopped waiting for the decision",
  });
  await res.body?.cancel();
}

/** A refusal as the tool's result: the model reads why, and the rule that decided. */
export function refusal(a: ActionAnswer): CallToolResult {
  const pending = a.decision === "review";
  const text = pending
    ? `Governor: still awaiting approval ${a.approvalId} (rule ${a.rule}): ${a.reason}`
    : `Governor refused this call (${a.code ?? "policy_violation"}, rule ${a.rule ?? "policy"}): ${a.reason ?? "refused by policy"}${a.retryAfter !== undefined ? `; retry after ${a.retryAfter}s` : ""}`;
  return {
    isError: true,
    content: [{ type: "text", text }],
    _meta: {
      governor: { decision: a.decision, code: pending ? "awaiting_approval" : a.code, rule: a.rule, reason: a.reason, approvalId: a.approvalId, retryAfter: a.retryAfter, spentUsd: a.spentUsd, remainingUsd: a.remainingUsd },
    },
  };
}

/** The text of a tool result, as the message of an error fact. */
export function resultText(r: CallToolResult): string {
  return r.content
    .map((c) => (c.type === "text" ? c.text : `[${c.type}]`))
    .join("\n");
}

/**
 * An upstream failure of an allowed call, as an error fact of the session (loop
 * detection counts repeats). Best effort: the agent gets its answer either way.
 */
export async function reportError(ref: SessionRef, actionId: string, action: string, code: string, message: string): Promise<void> {
  try {
    const res = await callSession(ref.lobby, ref.principal, ref.session, {
      op: "report",
      body: { id: `${actionId}.error`, type: "error", action, code: code.slice(0, 128), message: withoutRequestIds(message).slice(0, 1024) },
    });
    await res.body?.cancel();
  } catch (e) {
    console.error("could not record an MCP upstream error", e);
  }
}

/** Which of these action names the session's allow/deny lists let through. */
export async function listedActions(ref: SessionRef, actions: string[]): Promise<Set<string>> {
  const res = await callSession(ref.lobby, ref.principal, ref.session, { op: "listed", actions });
  if (!res.ok) throw await actorError(res);
  return new Set(((await res.json()) as { listed: string[] }).listed);
}
