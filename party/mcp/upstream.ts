import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ErrorCode, McpError } from "@modelcontextprotocol/sdk/types.js";
import type { JsonSchemaValidator, jsonSchemaValidator } from "@modelcontextprotocol/sdk/validation/types.js";
import type { McpServerConfig } from "../../schema/mcp";

// One connection to a tenant's upstream MCP server, per request the agent sends: the
// gateway keeps no state between requests, so every request initializes its own
// upstream session and ends it when its answer is complete.

/**
 * Nothing is validated on the agent's behalf: its own client checks what it receives.
 * (The SDK's default validator compiles schemas with `new Function`, which workerd forbids.)
 */
export const passThroughValidator: jsonSchemaValidator = {
  getValidator<T>(): JsonSchemaValidator<T> {
    return (input: unknown) => ({ valid: true, data: input as T, errorMessage: undefined });
  },
};

export interface Upstream {
  client: Client;
  /** Ends the upstream session; safe to call more than once. */
  close(): Promise<void>;
}

export async function connectUpstream(server: string, cfg: McpServerConfig, signal: AbortSignal): Promise<Upstream> {
  const transport = new StreamableHTTPClientTransport(new URL(cfg.url), {
    // The configured headers are the only credentials that go upstream; nothing of the
    // agent's request (its token above all) is forwarded.
    requestInit: { headers: { ...(cfg.headers ?? {}) } },
  });
  const client = new Client({ name: "governor", version: "1.0.0" }, { capabilities: {}, jsonSchemaValidator: passThroughValidator });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    try {
      if (transport.sessionId) await transport.terminateSession();
    } catch {
      // The upstream forgets the session on its own when it does not support DELETE.
    }
    await client.close().catch(() => undefined);
  };
  try {
    await client.connect(transport, { timeout: cfg.timeout, signal });
  } catch (e) {
    await close();
    throw upstreamFailure(server, e, cfg.timeout);
  }
  return { client, close };
}

/**
 * What the agent sees when the upstream fails: an MCP error naming the server, never a
 * 500. The upstream's own JSON-RPC errors pass through with their code.
 */
export function upstreamFailure(server: string, e: unknown, timeoutMs: number): McpError {
  if (e instanceof McpError) {
    if (e.code === ErrorCode.RequestTimeout) {
      return new McpError(ErrorCode.RequestTimeout, `upstream MCP server "${server}" did not answer within ${timeoutMs} ms`, { code: "upstream_timeout", server });
    }
    if (e.code === ErrorCode.ConnectionClosed) return new McpError(ErrorCode.InternalError, `upstream MCP server "${server}" closed the connection`, { code: "upstream_error", server });
    // McpError prefixes "MCP error <code>: "; the agent's client adds its own.
    return new McpError(e.code, e.message.replace(/^MCP error -?\d+: /, ""), e.data);
  }
  if (e instanceof StreamableHTTPError) {
    return new McpError(ErrorCode.InternalError, `upstream MCP server "${server}" answered HTTP ${e.code ?? "error"}`, { code: "upstream_error", server, status: e.code });
  }
  const message = e instanceof Error ? e.message : String(e);
  return new McpError(ErrorCode.InternalError, `upstream MCP server "${server}" is unreachable: ${message.slice(0, 300)}`, { code: "upstream_error", server });
}

/** A stable code for an upstream failure, for the error fact loop detection counts. */
export function failureCode(e: McpError): string {
  const data = e.data as { code?: unknown } | undefined;
  return typeof data?.code === "string" ? data.code : `jsonrpc ${e.code}`;
}
