import type { AnthropicProvider, AnthropicProviderSettings } from "@ai-sdk/anthropic";
import type { OpenAIProvider, OpenAIProviderSettings } from "@ai-sdk/openai";
import type { BoundSession } from "../bound";
import { argsOf, awaitDecision, deniedError, firstDecision, runAllowed, type DecideInput } from "../guard";
import type { ActionDecision, FailMode } from "../types";

// The Vercel AI SDK (`ai` 5, 6, 7). Model calls go through the proxy (the provider from
// governedProvider); tool calls are governed by wrapping each tool's execute. Where the
// installed AI SDK has tool approvals (6 and later), a Governor review becomes the AI
// SDK's own approval request, answered by awaitApprovals() once an operator decides.

/** Settings for `createOpenAI` / `createAnthropic` that route the provider through the proxy. */
export function providerSettings(session: BoundSession, provider: "openai" | "anthropic"): { apiKey: string; baseURL: string; headers: Record<string, string> } {
  const o = provider === "openai" ? session.openai() : session.anthropic();
  // The AI SDK's Anthropic base includes /v1; the official Anthropic SDK's does not.
  return { apiKey: o.apiKey, baseURL: provider === "openai" ? o.baseURL : `${o.baseURL}/v1`, headers: o.defaultHeaders };
}

/**
 * An AI SDK provider whose every call goes through Governor's proxy as this session.
 * Loads `@ai-sdk/openai` or `@ai-sdk/anthropic`, whichever is asked for, so only that one
 * needs to be installed.
 */
export async function governedProvider(session: BoundSession, provider: "openai", settings?: OpenAIProviderSettings): Promise<OpenAIProvider>;
export async function governedProvider(session: BoundSession, provider: "anthropic", settings?: AnthropicProviderSettings): Promise<AnthropicProvider>;
export async function governedProvider(session: BoundSession, provider: "openai" | "anthropic", settings: OpenAIProviderSettings | AnthropicProviderSettings = {}): Promise<OpenAIProvider | AnthropicProvider> {
  const routed = providerSettings(session, provider);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(settings.headers ?? {})) if (typeof v === "string") headers[k] = v;
  const merged = { ...settings, apiKey: routed.apiKey, baseURL: routed.baseURL, headers: { ...headers, ...routed.headers } };
  if (provider === "openai") return (await import("@ai-sdk/openai")).createOpenAI(merged as OpenAIProviderSettings);
  return (await import("@ai-sdk/anthropic")).createAnthropic(merged as AnthropicProviderSettings);
}

export interface GovernToolsOptions {
  /** Declared cost per tool name, charged when the call is allowed. */
  costUsd?: Record<string, number | ((input: any) => number)>;
  /** Cost per tool name known only from the output; reported as a cost fact. */
  cost?: Record<string, (output: any, input: any) => number | null | undefined>;
  /**
   * `ai-sdk` (default): a review becomes the AI SDK's tool-approval request; answer it with
   * awaitApprovals(). `wait`: the tool's execute waits for the operator instead (the only
   * way on AI SDK 5, which has no tool approvals).
   */
  approval?: "ai-sdk" | "wait";
  failMode?: FailMode;
  onReview?: (tool: string, decision: ActionDecision) => void;
}

interface ToolLike {
  execute?: (input: any, options: any) => unknown;
  needsApproval?: boolean | ((input: any, options: any) => boolean | PromiseLike<boolean>);
  [key: string]: unknown;
}

/** Reviews Governor turned into approval requests, by tool call id: awaitApprovals() answers only these. */
const reviews = new WeakMap<BoundSession, Map<string, { name: string; input: DecideInput; first: ActionDecision }>>();

function pendingOf(session: BoundSession) {
  let m = reviews.get(session);
  if (!m) reviews.set(session, (m = new Map()));
  return m;
}

function checkInput(session: BoundSession, name: string, input: unknown, toolCallId: string, opts: GovernToolsOptions): DecideInput {
  const declared = opts.costUsd?.[name];
  return {
    // The tool call id names the call in both the approval check and the execution, so
    // the two are one decision (and one charge) on the server.
    id: `ai-sdk:${session.attribution.run ?? ""}:${toolCallId}`,
    args: argsOf([input]),
    costUsd: typeof declared === "function" ? declared(input) : declared,
    failMode: opts.failMode,
    onReview: opts.onReview && ((d) => opts.onReview!(name, d)),
  };
}

function governTool(session: BoundSession, name: string, tool: ToolLike, opts: GovernToolsOptions): ToolLike {
  const execute = tool.execute;
  // A tool without execute runs on the client; there is nothing here to govern.
  if (typeof execute !== "function") return tool;
  const wrapped: ToolLike = {
    ...tool,
    execute: async (input: unknown, options: { toolCallId: string }) => {
      const ci = checkInput(session, name, input, options.toolCallId, opts);
      const d = await awaitDecision(session, name, ci, await firstDecision(session, name, ci));
      if (d.decision !== "allow") throw deniedError(name, d);
      const cost = opts.cost?.[name];
      return runAllowed(session, name, ci.id, () => execute(input, options), { cost: cost && ((out) => cost(out, input)) });
    },
  };
  if (opts.approval !== "wait") {
    const own = tool.needsApproval;
    wrapped.needsApproval = async (input: unknown, options: { toolCallId: string }) => {
      // The application's own approval rule still applies; Governor decides at execute either way.
      if (own === true || (typeof own === "function" && (await own(input, options)))) return true;
      const ci = checkInput(session, name, input, options.toolCallId, opts);
      const first = await firstDecision(session, name, ci);
      // A call Governor reviewed keeps needing approval after the operator decided: the AI
      // SDK asks again when the approval comes back (6.x) and denies a call that no longer
      // needs one. The same check id answers with the decision, so nothing is charged twice.
      if (first.decision !== "review") return first.approvalId !== undefined;
      ci.onReview?.(first);
      pendingOf(session).set(options.toolCallId, { name, input: { ...ci, onReview: undefined }, first });
      return true;
    };
  }
  return wrapped;
}

/** The same tools, each checked by Governor before it runs, charged, and reported when it fails. */
export function governTools<T extends Record<string, any>>(session: BoundSession, tools: T, opts: GovernToolsOptions = {}): T {
  return Object.fromEntries(Object.entries(tools).map(([name, tool]) => [name, governTool(session, name, tool as ToolLike, opts)])) as T;
}

interface ApprovalRequestPart {
  type: "tool-approval-request";
  approvalId: string;
  toolCall: { toolCallId: string; toolName: string };
}

export interface ApprovalResponseMessage {
  role: "tool";
  content: Array<{ type: "tool-approval-response"; approvalId: string; approved: boolean; reason?: string }>;
}

/**
 * Waits for the operator's decision on every approval request Governor caused in this
 * step (other requests are the application's to answer) and returns the tool message that
 * answers them: append it after `result.response.messages` and call the model again.
 */
export async function awaitApprovals(session: BoundSession, result: { content: ReadonlyArray<unknown> }): Promise<ApprovalResponseMessage[]> {
  const pending = reviews.get(session);
  const requests = result.content.filter((p): p is ApprovalRequestPart => (p as { type?: string })?.type === "tool-approval-request");
  const answers = await Promise.all(
    requests.map(async (r) => {
      const entry = pending?.get(r.toolCall.toolCallId);
      if (!entry) return undefined;
      const d = await awaitDecision(session, entry.name, entry.input, entry.first);
      pending!.delete(r.toolCall.toolCallId);
      return { type: "tool-approval-response" as const, approvalId: r.approvalId, approved: d.decision === "allow", ...(d.reason && { reason: d.reason }) };
    }),
  );
  const content = answers.filter((a) => a !== undefined);
  return content.length ? [{ role: "tool", content }] : [];
}
