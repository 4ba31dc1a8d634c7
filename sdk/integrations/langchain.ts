import { BaseCallbackHandler } from "@langchain/core/callbacks/base";
import type { Serialized } from "@langchain/core/load/serializable";
import type { LLMResult } from "@langchain/core/outputs";
import { costUsd, priceFor, type Provider } from "../../schema/pricing";
import type { BoundSession } from "../bound";
import { argsOf, decide, deniedError } from "../guard";
import type { ActionDecision, FailMode } from "../types";

// LangChain.js: a callback handler. Tool starts are checked (a deny or an operator's "no"
// stops the tool before it runs: the handler raises, and LangChain awaits it), tool errors
// become error facts, and when model calls do not go through the proxy their usage is
// reported as cost. Model calls that do go through the proxy are metered there already.

export interface GovernorHandlerOptions {
  /** Declared cost per tool name, charged when the tool is allowed. */
  costUsd?: Record<string, number | ((args: Record<string, unknown>) => number)>;
  /** Cost per tool name known only from its output; reported as a cost fact. */
  cost?: Record<string, (output: unknown, args: Record<string, unknown>) => number | null | undefined>;
  /**
   * The model calls do NOT go through Governor's proxy: report each call's usage as a cost
   * fact, priced from Governor's table (or `price`). Leave off when they do, or they count twice.
   */
  reportUsage?: boolean;
  /** Prices a call the table does not know (USD); undefined leaves it unreported (and warned about). */
  price?: (model: string, usage: { inputTokens: number; outputTokens: number; cachedInputTokens: number }) => number | undefined;
  failMode?: FailMode;
  onReview?: (tool: string, decision: ActionDecision) => void;
  /** A report that did not reach Governor. Default: console.warn. */
  onReportError?: (error: unknown) => void;
}

/** Constructor fields that point a LangChain chat model at the proxy as this session. */
export function proxyFields(session: BoundSession, provider: "openai"): { apiKey: string; configuration: { baseURL: string; defaultHeaders: Record<string, string> } };
export function proxyFields(session: BoundSession, provider: "anthropic"): { apiKey: string; anthropicApiUrl: string; clientOptions: { defaultHeaders: Record<string, string> } };
export function proxyFields(session: BoundSession, provider: "openai" | "anthropic") {
  if (provider === "openai") {
    const o = session.openai();
    return { apiKey: o.apiKey, configuration: { baseURL: o.baseURL, defaultHeaders: o.defaultHeaders } };
  }
  const a = session.anthropic();
  return { apiKey: a.apiKey, anthropicApiUrl: a.baseURL, clientOptions: { defaultHeaders: a.defaultHeaders } };
}

interface ToolRun {
  name: string;
  id: string;
  args: Record<string, unknown>;
}

function toolArgs(input: unknown): Record<string, unknown> {
  if (typeof input !== "string") return argsOf([input]);
  try {
    return argsOf([JSON.parse(input)]);
  } catch {
    return { input };
  }
}

export class GovernorCallbackHandler extends BaseCallbackHandler {
  name = "governor";
  // Raise so a refusal stops the tool; await so the tool waits for the decision.
  override raiseError = true;
  override awaitHandlers = true;

  private readonly tools = new Map<string, ToolRun>();
  private readonly models = new Map<string, { provider?: string; model?: string }>();

  constructor(
    readonly session: BoundSession,
    private readonly opts: GovernorHandlerOptions = {},
  ) {
    super();
  }

  private warn(e: unknown) {
    (this.opts.onReportError ?? ((x: unknown) => console.warn(`governor: a report did not reach Governor: ${(x as Error)?.message ?? x}`)))(e);
  }

  override async handleToolStart(tool: Serialized, input: string, runId: string, _parentRunId?: string, _tags?: string[], _metadata?: Record<string, unknown>, runName?: string): Promise<void> {
    const name = runName ?? tool.id[tool.id.length - 1];
    const args = toolArgs(input);
    const declared = this.opts.costUsd?.[name];
    const id = `langchain:${runId}`;
    const d = await decide(this.session, name, {
      id,
      args,
      costUsd: typeof declared === "function" ? declared(args) : declared,
      failMode: this.opts.failMode,
      onReview: this.opts.onReview && ((x) => this.opts.onReview!(name, x)),
    });
    if (d.decision !== "allow") throw deniedError(name, d);
    this.tools.set(runId, { name, id, args });
  }

  override async handleToolEnd(output: unknown, runId: string): Promise<void> {
    const run = this.tools.get(runId);
    this.tools.delete(runId);
    const cost = run && this.opts.cost?.[run.name];
    if (!run || !cost) return;
    let usd: number | null | undefined;
    try {
      // A ToolMessage carries the tool's own return value as its content.
      usd = cost((output as { content?: unknown })?.content ?? output, run.args);
    } catch (e) {
      return this.warn(e);
    }
    if (typeof usd === "number" && Number.isFinite(usd) && usd > 0) {
      await this.session.report({ id: `${run.id}:cost`, type: "cost", usd, action: run.name, run: this.session.attribution.run }).catch((e) => this.warn(e));
    }
  }

  override async handleToolError(err: Error, runId: string): Promise<void> {
    const run = this.tools.get(runId);
    this.tools.delete(runId);
    if (!run) return;
    await this.reportError(err, run.name, `${run.id}:error`);
  }

  override async handleChatModelStart(_llm: Serialized, _messages: unknown, runId: string, _parentRunId?: string, _extra?: Record<string, unknown>, _tags?: string[], metadata?: Record<string, unknown>): Promise<void> {
    if (this.opts.reportUsage) this.models.set(runId, { provider: metadata?.ls_provider as string | undefined, model: metadata?.ls_model_name as string | undefined });
  }

  override async handleLLMStart(_llm: Serialized, _prompts: string[], runId: string, _parentRunId?: string, _extra?: Record<string, unknown>, _tags?: string[], metadata?: Record<string, unknown>): Promise<void> {
    if (this.opts.reportUsage) this.models.set(runId, { provider: metadata?.ls_provider as string | undefined, model: metadata?.ls_model_name as string | undefined });
  }

  override async handleLLMError(_err: Error, runId: string): Promise<void> {
    this.models.delete(runId);
  }

  override async handleLLMEnd(output: LLMResult, runId: string): Promise<void> {
    const started = this.models.get(runId);
    this.models.delete(runId);
    if (!this.opts.reportUsage) return;
    const { model, usage } = usageOf(output, started?.model);
    if (!usage) return;
    const provider: Provider = started?.provider === "anthropic" || /^claude/.test(model ?? "") ? "anthropic" : "openai";
    const priced = model ? priceFor(provider, model) : undefined;
    const usd = priced ? costUsd(priced.price, { ...usage, cacheWriteTokens: 0 }) : model ? this.opts.price?.(model, usage) : undefined;
    if (usd === undefined) return this.warn(new Error(`no price for model ${JSON.stringify(model ?? "unknown")}: its usage was not reported`));
    if (usd > 0) await this.session.report({ id: `langchain:${runId}:usage`, type: "cost", usd, action: model, run: this.session.attribution.run }).catch((e) => this.warn(e));
  }

  /** A scanner's (or your own code's) finding: counts toward the policy's violation thresholds. */
  async reportViolation(kind: string, detail?: string): Promise<void> {
    await this.session.report({ type: "violation", kind, ...(detail !== undefined && { detail: detail.slice(0, 1024) }) });
  }

  /** A failure outside a tool run, as an error fact. */
  async reportError(error: unknown, action?: string, id?: string): Promise<void> {
    const code = (error as { code?: unknown })?.code;
    const name = (error as { name?: unknown })?.name;
    await this.session
      .report({
        ...(id && { id }),
        type: "error",
        action,
        code: typeof code === "string" || typeof code === "number" ? String(code).slice(0, 128) : typeof name === "string" ? name.slice(0, 128) : undefined,
        message: (error instanceof Error ? error.message : String(error)).slice(0, 1024),
      })
      .catch((e) => this.warn(e));
  }
}

type TokenUsage = { inputTokens: number; outputTokens: number; cachedInputTokens: number };

/** Usage of a finished call, from the message's usage_metadata (chat models) or llmOutput (older LLMs). */
function usageOf(output: LLMResult, startedModel?: string): { model?: string; usage?: TokenUsage } {
  let input = 0;
  let out = 0;
  let cached = 0;
  let found = false;
  let model = startedModel;
  for (const gens of output.generations) {
    for (const g of gens) {
      const msg = (g as { message?: { usage_metadata?: { input_tokens?: number; output_tokens?: number; input_token_details?: { cache_read?: number } }; response_metadata?: Record<string, unknown> } }).message;
      const u = msg?.usage_metadata;
      if (u) {
        found = true;
        const c = u.input_token_details?.cache_read ?? 0;
        input += (u.input_tokens ?? 0) - c;
        cached += c;
        out += u.output_tokens ?? 0;
      }
      const m = msg?.response_metadata?.model_name ?? msg?.response_metadata?.model;
      if (typeof m === "string") model = m;
    }
  }
  if (!found) {
    const t = (output.llmOutput as { tokenUsage?: { promptTokens?: number; completionTokens?: number } } | undefined)?.tokenUsage;
    if (t) {
      found = true;
      input = t.promptTokens ?? 0;
      out = t.completionTokens ?? 0;
    }
  }
  return { model, usage: found ? { inputTokens: Math.max(0, input), outputTokens: out, cachedInputTokens: cached } : undefined };
}
