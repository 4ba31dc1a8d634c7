import { OpenAIProvider, tool, type FunctionTool, type InputGuardrail, type RunContext, type RunResult, type RunToolApprovalItem } from "@openai/agents";
import type { BoundSession } from "../bound";
import { ActionDeniedError } from "../errors";
import { argsOf, awaitDecision, deniedError, firstDecision, runAllowed, type DecideInput } from "../guard";
import type { ActionDecision, FailMode } from "../types";

// The OpenAI Agents SDK for JS. Model calls go through the proxy (governedModelProvider);
// governedTool() builds a tool whose needsApproval asks Governor, so a review becomes the
// SDK's own interruption, answered by awaitApprovals() once an operator decides; and
// governorGuardrail() refuses a run outright when the session is killed or out of budget.

type ToolOptions = Parameters<typeof tool>[0];

export interface GovernedToolOptions {
  /** Declared cost in USD (or from the parsed input), charged when the call is allowed. */
  costUsd?: number | ((input: any) => number);
  /** Cost known only from the output; reported as a cost fact. */
  cost?: (output: unknown, input: any) => number | null | undefined;
  failMode?: FailMode;
  onReview?: (decision: ActionDecision) => void;
}

/** Reviews Governor turned into interruptions, by call id: awaitApprovals() answers only these. */
const reviews = new WeakMap<BoundSession, Map<string, { name: string; input: DecideInput; first: ActionDecision }>>();

function pendingOf(session: BoundSession) {
  let m = reviews.get(session);
  if (!m) reviews.set(session, (m = new Map()));
  return m;
}

/**
 * `tool()` of the Agents SDK, governed: Governor decides before it runs (a deny reaches the
 * model as the tool's error text, the SDK's usual way), a review interrupts the run like a
 * tool that needs approval, failures are reported, costs charged.
 */
export function governedTool<T extends ToolOptions>(session: BoundSession, options: T, governance: GovernedToolOptions = {}): FunctionTool<any, any, any> {
  const name = options.name ?? (options.execute as { name?: string }).name;
  if (!name) throw new TypeError("governedTool: give the tool a name");
  const own = options.needsApproval;
  const inputFor = (input: unknown, callId: string | undefined): DecideInput => ({
    // Without a call id (a direct invoke), each call is its own decision.
    id: `agents:${session.attribution.run ?? ""}:${callId ?? crypto.randomUUID()}`,
    args: argsOf([input]),
    costUsd: typeof governance.costUsd === "function" ? governance.costUsd(input) : governance.costUsd,
    failMode: governance.failMode,
    onReview: governance.onReview,
  });
  const execute = options.execute as (input: unknown, ctx?: RunContext<any>, details?: { toolCall?: { callId?: string } }) => unknown;
  const build = tool as unknown as (o: unknown) => FunctionTool<any, any, any>;
  const ownError = (options as { errorFunction?: ((ctx: unknown, e: unknown, d?: unknown) => unknown) | null }).errorFunction;
  return build({
    ...options,
    // The SDK's default tells the model "please try again", which a refusal will never
    // heed: say what refused and why. null (raise) stays the caller's choice.
    ...(ownError !== null && {
      errorFunction: (ctx: unknown, error: unknown, details?: unknown) => {
        if (error instanceof ActionDeniedError) return `${error.message}. ${error.retryAfter ? `Retry after ${error.retryAfter}s.` : "Do not retry it unchanged."}`;
        return ownError ? ownError(ctx, error, details) : "An error occurred while running the tool. Please try again.";
      },
    }),
    needsApproval: async (ctx: RunContext<any>, input: unknown, callId?: string) => {
      if (own === true || (typeof own === "function" && (await (own as (c: unknown, i: unknown, id?: string) => Promise<boolean>)(ctx, input, callId)))) return true;
      if (!callId) return false;
      const ci = inputFor(input, callId);
      const first = await firstDecision(session, name, ci);
      // Reviewed once, it stays an approval: a resumed run asks again, and the decision
      // applied to the run's state (awaitApprovals) must be the one that counts.
      if (first.decision !== "review") return first.approvalId !== undefined;
      const pending = pendingOf(session);
      if (!pending.has(callId)) ci.onReview?.(first);
      pending.set(callId, { name, input: { ...ci, onReview: undefined }, first });
      return true;
    },
    execute: async (input: unknown, ctx?: RunContext<any>, details?: { toolCall?: { callId?: string } }) => {
      const ci = inputFor(input, details?.toolCall?.callId);
      const d = await awaitDecision(session, name, ci, await firstDecision(session, name, ci));
      if (d.decision !== "allow") throw deniedError(name, d);
      const cost = governance.cost;
      return runAllowed(session, name, ci.id, () => execute(input, ctx, details), { cost: cost && ((out) => cost(out, input)) });
    },
  });
}

/**
 * Waits for the operator's decision on each interruption Governor caused (others are the
 * application's) and applies it to the run's state: resume with `run(agent, result.state)`.
 * Returns how many it decided.
 */
export async function awaitApprovals(session: BoundSession, result: Pick<RunResult<any, any>, "interruptions" | "state">): Promise<number> {
  const pending = reviews.get(session);
  const items = (result.interruptions ?? []).filter((i: RunToolApprovalItem) => {
    const callId = (i.rawItem as { callId?: string }).callId;
    return callId !== undefined && pending?.has(callId);
  });
  await Promise.all(
    items.map(async (item) => {
      const callId = (item.rawItem as { callId: string }).callId;
      const entry = pending!.get(callId)!;
      const d = await awaitDecision(session, entry.name, entry.input, entry.first);
      pending!.delete(callId);
      if (d.decision === "allow") result.state.approve(item);
      else result.state.reject(item, { message: `Governor denied "${entry.name}": ${d.reason ?? d.code}` });
    }),
  );
  return items.length;
}

/**
 * An input guardrail that refuses the run before the model is called when the session is
 * killed or closed, or has no budget left. Blocking, not parallel: the point is that no
 * call goes out. When Governor cannot be reached, fail_mode decides.
 */
export function governorGuardrail(session: BoundSession, opts: { failMode?: FailMode } = {}): InputGuardrail {
  return {
    name: "governor",
    runInParallel: false,
    execute: async () => {
      try {
        const b = await session.budgetCheck();
        return { tripwireTriggered: !b.allowed, outputInfo: b };
      } catch (e) {
        const failMode = session.failMode(opts.failMode);
        return { tripwireTriggered: failMode === "closed", outputInfo: { error: (e as Error).message, failMode } };
      }
    },
  };
}

export interface GovernedModelProviderOptions {
  /** The `OpenAI` client class to use; default: the `openai` package this project resolves. */
  OpenAI?: new (opts: { apiKey: string; baseURL: string; defaultHeaders: Record<string, string> }) => unknown;
  /** Responses API (default true) or Chat Completions. */
  useResponses?: boolean;
}

/** A model provider whose calls go through Governor's proxy as this session: `new Runner({ modelProvider })`. */
export async function governedModelProvider(session: BoundSession, opts: GovernedModelProviderOptions = {}): Promise<OpenAIProvider> {
  const OpenAI = opts.OpenAI ?? ((await import("openai")).default as unknown as NonNullable<GovernedModelProviderOptions["OpenAI"]>);
  const openAIClient = new OpenAI(session.openai());
  return new OpenAIProvider({ openAIClient: openAIClient as never, useResponses: opts.useResponses ?? true });
}
