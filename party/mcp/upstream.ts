import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { RequestOptions } from "@modelcontextprotocol/sdk/shared/protocol.js";
import type { AnySchema, SchemaOutput } from "@modelcontextprotocol/sdk/server/zod-compat.js";
import { ErrorCode, McpError, type ClientRequest, type ServerCapabilities } from "@modelcontextprotocol/sdk/types.js";
import type { JsonSchemaValidator, jsonSchemaValidator } from "@modelcontextprotocol/sdk/validation/types.js";
import type { McpServerConfig } from "../../schema/mcp";

// The connection to a tenant's upstream MCP server for one request of the agent. The
// handshake's outcome (session id, protocol version, capabilities) is kept per isolate as
// plain data, so a stateful upstream is initialized once and later requests go straight
// to their call: one round trip instead of three. (SDK objects cannot be shared: workerd
// forbids a request from using another request's I/O.) An upstream without sessions is
// initialized on every request. A kept session is used for REUSE_MS, then replaced.

/**
 * Nothing is validated on the agent's behalf: its own client checks what it receives.
 * (The SDK's default validator compiles schemas with `new Function`, which workerd forbids.)
 */
export const passThroughValidator: jsonSchemaValidator = {
  getValidator<T>(): JsonSchemaValidator<T> {
    return (input: unknown) => ({ valid: true, data: input as T, errorMessage: undefined });
  },
};

interface Handshake {
  sessionId: string;
  protocolVersion: string;
  capabilities: ServerCapabilities;
  instructions?: string;
  at: number;
}

const REUSE_MS = 5 * 60_000;
const handshakes = new Map<string, Handshake>();

export interface Upstream {
  capabilities: ServerCapabilities;
  instructions?: string;
  /** One request upstream; a kept session the upstream no longer knows is replaced once, transparently. */
  request<S extends AnySchema>(request: ClientRequest, schema: S, options?: RequestOptions): Promise<SchemaOutput<S>>;
  /** Ends this request's connection; a session kept for reuse stays open upstream. */
  close(): Promise<void>;
}

interface Connection {
  client: Client;
  transport: StreamableHTTPClientTransport;
  handshake: Omit<Handshake, "sessionId" | "at"> & { sessionId?: string };
  reused: boolean;
}

function transportFor(cfg: McpServerConfig, sessionId?: string) {
  // The configured headers are the only credentials that go upstream; nothing of the
  // agent's request (its token above all) is forwarded.
  return new StreamableHTTPClientTransport(new URL(cfg.url), { requestInit: { headers: { ...(cfg.headers ?? {}) } }, sessionId });
}

function newClient() {
  return new Client({ name: "governor", version: "1.0.0" }, { capabilities: {}, jsonSchemaValidator: passThroughValidator });
}

async function handshake(key: string, cfg: McpServerConfig, signal: AbortSignal, background: (p: Promise<unknown>) => void): Promise<Connection> {
  const transport = transportFor(cfg);
  const client = newClient();
  await client.connect(transport, { timeout: cfg.timeout, signal });
  const found = {
    protocolVersion: transport.protocolVersion ?? "2025-03-26",
    capabilities: client.getServerCapabilities() ?? {},
    instructions: client.getInstructions(),
  };
  const old = handshakes.get(key);
  if (transport.sessionId) handshakes.set(key, { ...found, sessionId: transport.sessionId, at: Date.now() });
  else handshakes.delete(key);
  // The session this one replaces is ended, so the upstream does not keep it forever.
  if (old && old.sessionId !== transport.sessionId) background(transportFor(cfg, old.sessionId).terminateSession().catch(() => undefined));
  return { client, transport, handshake: { ...found, sessionId: transport.sessionId }, reused: false };
}

async function resume(h: Handshake, cfg: McpServerConfig): Promise<Connection> {
  const transport = transportFor(cfg, h.sessionId);
  transport.setProtocolVersion(h.protocolVersion);
  const client = newClient();
  // With the session id set, the SDK client skips the handshake: it was done before.
  await client.connect(transport);
  return { client, transport, handshake: h, reused: true };
}

/** `key` names the tenant, the server and its configuration: a changed configuration starts a new session. */
export async function connectUpstream(key: string, server: string, cfg: McpServerConfig, signal: AbortSignal, background: (p: Promise<unknown>) => void): Promise<Upstream> {
  let conn: Connection;
  try {
    const kept = handshakes.get(key);
    conn = kept && Date.now() - kept.at < REUSE_MS ? await resume(kept, cfg) : await handshake(key, cfg, signal, background);
  } catch (e) {
    throw upstreamFailure(server, e, cfg.timeout);
  }
  const connections = [conn];
  return {
    capabilities: conn.handshake.capabilities,
    instructions: conn.handshake.instructions,
    async request(request, schema, options) {
      try {
        return await conn.client.request(request, schema, options);
      } catch (e) {
        // The upstream forgot the session (a restart, its own expiry): the request was not run.
        if (!(conn.reused && e instanceof StreamableHTTPError && e.code === 404)) throw e;
        if (handshakes.get(key)?.sessionId === conn.handshake.sessionId) handshakes.delete(key);
        conn = await handshake(key, cfg, options?.signal ?? signal, background);
        connections.push(conn);
        return await conn.client.request(request, schema, options);
      }
    },
    async close() {
      for (const c of connections) await c.client.close().catch(() => undefined);
    },
  };
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
    // McpError prefixes "MCP error <code>: "; the wire carries the message without it (wire.ts).
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
