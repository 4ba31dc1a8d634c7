import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import {
  CallToolRequestSchema,
  CallToolResultSchema,
  CompleteRequestSchema,
  CompleteResultSchema,
  ErrorCode,
  GetPromptRequestSchema,
  GetPromptResultSchema,
  ListPromptsRequestSchema,
  ListPromptsResultSchema,
  ListResourcesRequestSchema,
  ListResourcesResultSchema,
  ListResourceTemplatesRequestSchema,
  ListResourceTemplatesResultSchema,
  ListToolsRequestSchema,
  ListToolsResultSchema,
  McpError,
  ReadResourceRequestSchema,
  ReadResourceResultSchema,
  type ServerCapabilities,
} from "@modelcontextprotocol/sdk/types.js";
import { mcpActionName, type McpServerConfig } from "../../schema/mcp";
import { callKey, track } from "./cancel";
import { decideToolCall, listedActions, refusal, reportError, resultText, type SessionRef } from "./govern";
import { failureCode, passThroughValidator, upstreamFailure, type Upstream } from "./upstream";

// The MCP server the agent talks to: tools/list and tools/call governed by the session,
// resources, prompts and completions passed through as they are, ping answered here.
// Server-to-client requests (sampling, elicitation, roots) are not relayed: the upstream
// meets a client that offers none of them.

export interface ServerParts {
  name: string;
  cfg: McpServerConfig;
  /** Absent when every request is a ping. */
  upstream?: Upstream;
  ref: SessionRef;
  /** Aborted when the agent's request is over or the agent went away. */
  gone: AbortSignal;
}

type Extra = { _meta?: { progressToken?: string | number }; sendNotification: (n: never) => Promise<void> };

/**
 * What the upstream offers and this endpoint relays. List-change and subscription pushes
 * need a stream this stateless endpoint does not keep, so they are said to be off: a
 * client lists again when it wants the current tools.
 */
function relayed(up: ServerCapabilities | undefined): ServerCapabilities {
  return {
    ...(up?.tools && { tools: { listChanged: false } }),
    ...(up?.resources && { resources: { listChanged: false, subscribe: false } }),
    ...(up?.prompts && { prompts: { listChanged: false } }),
    ...(up?.completions && { completions: {} }),
  };
}

export function buildServer(parts: ServerParts): McpServer {
  const { name, cfg, upstream, ref, gone } = parts;
  const caps = relayed(upstream?.capabilities);
  const instructions = upstream?.instructions;
  const mcp = new McpServer({ name: `governor/${name}`, version: "1.0.0" }, { capabilities: caps, instructions, jsonSchemaValidator: passThroughValidator });
  // McpServer's constructor adds `listChanged: true` for its own registries; ours are relayed.
  mcp.server.registerCapabilities(caps);
  if (!upstream) return mcp;
  const client = upstream;
  const options = { timeout: cfg.timeout, signal: gone };
  const forward = async <T>(run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (e) {
      throw upstreamFailure(name, e, cfg.timeout);
    }
  };
  const progress = (extra: Extra) => {
    const token = extra._meta?.progressToken;
    if (token === undefined) return undefined;
    return (p: { progress: number; total?: number; message?: string }) =>
      extra.sendNotification({ method: "notifications/progress", params: { ...p, progressToken: token } } as never).catch(() => undefined);
  };

  if (caps.tools) {
    mcp.server.setRequestHandler(ListToolsRequestSchema, async (request) => {
      const page = await forward(() => client.request({ method: "tools/list", params: request.params }, ListToolsResultSchema, options));
      const tools = page.tools.map((t) => ({ ...t, name: mcpActionName(name, t.name) }));
      const listed = await listedActions(ref, tools.map((t) => t.name));
      return { ...page, tools: tools.filter((t) => listed.has(t.name)) };
    });

    mcp.server.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
      const action = request.params.name;
      const prefix = `mcp.${name}.`;
      if (!action.startsWith(prefix) || action.length === prefix.length) {
        throw new McpError(ErrorCode.InvalidParams, `unknown tool "${action}": the tools of this endpoint are named ${prefix}<tool>`);
      }
      const tool = action.slice(prefix.length);
      const args = request.params.arguments ?? {};
      const relay = progress(extra as Extra);
      const { call, done } = track(callKey(ref.principal.tenant, ref.session, extra.requestId));
      try {
        let step = 0;
        const answer = await decideToolCall(
          ref,
          { action, args, costUsd: cfg.tool_costs?.[tool] ?? 0 },
          { signal: gone, call, onPending: (a) => relay?.({ progress: ++step, message: `awaiting approval ${a.approvalId} (${a.rule}): ${a.reason}` }) },
        );
        if (answer.decision !== "allow") return refusal(answer);
        // Approved after the agent left: the upstream must not act for nobody.
        if (call.cancelled || gone.aborted) throw new McpError(ErrorCode.ConnectionClosed, "the call was cancelled before it went upstream");
        try {
          const result = await client.request(
            { method: "tools/call", params: { name: tool, arguments: args } },
            CallToolResultSchema,
            { ...options, onprogress: relay, resetTimeoutOnProgress: true },
          );
          if (result.isError) await reportError(ref, answer.id, action, "tool_error", resultText(result));
          return result;
        } catch (e) {
          const failure = upstreamFailure(name, e, cfg.timeout);
          await reportError(ref, answer.id, action, failureCode(failure), failure.message);
          throw failure;
        }
      } finally {
        done();
      }
    });
  }

  if (caps.resources) {
    mcp.server.setRequestHandler(ListResourcesRequestSchema, (r) => forward(() => client.request({ method: r.method, params: r.params }, ListResourcesResultSchema, options)));
    mcp.server.setRequestHandler(ListResourceTemplatesRequestSchema, (r) => forward(() => client.request({ method: r.method, params: r.params }, ListResourceTemplatesResultSchema, options)));
    mcp.server.setRequestHandler(ReadResourceRequestSchema, (r) => forward(() => client.request({ method: r.method, params: r.params }, ReadResourceResultSchema, options)));
  }
  if (caps.prompts) {
    mcp.server.setRequestHandler(ListPromptsRequestSchema, (r) => forward(() => client.request({ method: r.method, params: r.params }, ListPromptsResultSchema, options)));
    mcp.server.setRequestHandler(GetPromptRequestSchema, (r) => forward(() => client.request({ method: r.method, params: r.params }, GetPromptResultSchema, options)));
  }
  if (caps.completions) {
    mcp.server.setRequestHandler(CompleteRequestSchema, (r) => forward(() => client.request({ method: r.method, params: r.params }, CompleteResultSchema, options)));
  }
  return mcp;
}
