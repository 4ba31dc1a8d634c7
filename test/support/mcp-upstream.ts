// A local upstream MCP server written with the official SDK, for the integration tests
// of /v1/mcp: stateful Streamable HTTP (it issues Mcp-Session-Id and accepts DELETE),
// recording every tool call and the headers it was sent with.
import { randomUUID } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

export interface ToolCallSeen {
  tool: string;
  args: Record<string, unknown>;
  headers: http.IncomingHttpHeaders;
}

export interface McpUpstream {
  url: string;
  calls: ToolCallSeen[];
  /** Headers of every HTTP request received, in order. */
  headers: http.IncomingHttpHeaders[];
  sessionsOpened: number;
  sessionsDeleted: number;
  /** As after a restart: every session is unknown from now on. */
  forgetSessions(): void;
  close(): Promise<void>;
}

function build(seen: McpUpstream, headers: () => http.IncomingHttpHeaders): McpServer {
  const server = new McpServer({ name: "stand-in-tools", version: "1.2.3" }, { instructions: "Tools for the Governor tests." });
  const record = (tool: string, args: Record<string, unknown>) => seen.calls.push({ tool, args, headers: headers() });
  server.registerTool("search", { description: "Search the index", inputSchema: { query: z.string() } }, async (args) => {
    record("search", args);
    return { content: [{ type: "text", text: `results for ${args.query}` }] };
  });
  server.registerTool("refund", { description: "Refund a customer", inputSchema: { amount: z.number(), account: z.string() } }, async (args) => {
    record("refund", args);
    return { content: [{ type: "text", text: `refunded ${args.amount} to ${args.account}` }] };
  });
  server.registerTool("delete_repo", { description: "Delete a repository", inputSchema: { name: z.string() } }, async (args) => {
    record("delete_repo", args);
    return { content: [{ type: "text", text: `deleted ${args.name}` }] };
  });
  server.registerTool("fail", { description: "Always fails", inputSchema: {} }, async (args) => {
    record("fail", args);
    return { isError: true, content: [{ type: "text", text: "backend exploded" }] };
  });
  server.registerTool("hang", { description: "Never answers", inputSchema: {} }, async (args) => {
    record("hang", args);
    return new Promise(() => undefined);
  });
  server.registerResource("readme", "doc://readme", { description: "The readme", mimeType: "text/plain" }, async (uri) => ({ contents: [{ uri: uri.href, text: "hello from the upstream" }] }));
  server.registerPrompt("greet", { description: "A greeting", argsSchema: { name: z.string() } }, ({ name }) => ({ messages: [{ role: "user", content: { type: "text", text: `Hello, ${name}` } }] }));
  return server;
}

export async function startMcpUpstream(): Promise<McpUpstream> {
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const seen: McpUpstream = {
    url: "",
    calls: [],
    headers: [],
    sessionsOpened: 0,
    sessionsDeleted: 0,
    forgetSessions: () => transports.clear(),
    close: async () => undefined,
  };
  const httpServer = http.createServer(async (req, res) => {
    seen.headers.push(req.headers);
    const id = req.headers["mcp-session-id"] as string | undefined;
    let transport = id ? transports.get(id) : undefined;
    if (id && !transport) {
      res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32001, message: "Session not found" } }));
      return;
    }
    if (!transport) {
      let current: http.IncomingHttpHeaders = req.headers;
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (sid) => {
          seen.sessionsOpened++;
          transports.set(sid, transport!);
        },
        onsessionclosed: (sid) => {
          seen.sessionsDeleted++;
          transports.delete(sid);
        },
      });
      const server = build(seen, () => current);
      await server.connect(transport);
      // Tool calls record the headers of the request they came in on.
      const handle = transport.handleRequest.bind(transport);
      transport.handleRequest = (r, s, body) => {
        current = r.headers;
        return handle(r, s, body);
      };
    }
    await transport.handleRequest(req, res);
  });
  await new Promise<void>((ok) => httpServer.listen(0, "127.0.0.1", ok));
  seen.url = `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}/mcp`;
  seen.close = async () => {
    for (const t of transports.values()) await t.close().catch(() => undefined);
    httpServer.closeAllConnections();
    await new Promise<void>((ok) => httpServer.close(() => ok()));
  };
  return seen;
}
