import type * as Party from "partykit/server";
import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
import { isJSONRPCRequest, JSONRPCMessageSchema, type JSONRPCMessage, type McpError } from "@modelcontextprotocol/sdk/types.js";
import { canonicalJson, sha256Hex } from "../../lib/chain";
import { BadRequestError, GovernorError, NotFoundError } from "../../lib/errors";
import { SessionId } from "../../schema/api";
import { McpPolicy, McpServerName, type McpServerConfig } from "../../schema/mcp";
import { requirePermission, type Principal } from "../auth";
import { callSession } from "../calls";
import { assertDepth, assertWellFormed, attributionOf, readText } from "../http";
import { callKey, cancel } from "./cancel";
import { withdrawApproval, type SessionRef } from "./govern";
import { buildServer } from "./server";
import { answerUnreachable } from "./unreachable";
import { connectUpstream, type Upstream } from "./upstream";
import { plainError } from "./wire";

// `/v1/mcp/<server>`: a Streamable HTTP MCP endpoint, stateless (no Mcp-Session-Id of its
// own: the agent's Governor session, named by X-Session-ID, is the session). Each POST
// gets a fresh MCP server bound to that session and a fresh upstream connection.

export interface McpRouteContext {
  lobby: Party.FetchLobby;
  ctx: Party.ExecutionContext;
  principal: Principal;
  /** The tenant's policy as stored (or the deployment's default): where the servers are. */
  tenantPolicy: () => Promise<unknown>;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** Errors before the protocol starts, in JSON-RPC's shape (MCP clients read that), with the HTTP status. */
export function mcpErrorResponse(e: unknown, id: string | number | null = null): Response {
  const err = e instanceof GovernorError ? e : new GovernorError("internal_error", 500, "internal error");
  if (!(e instanceof GovernorError)) console.error("MCP route failed", e);
  const data = { code: err.code, ...(err.field && { field: err.field }), ...(err.rule && { rule: err.rule }) };
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (err.status === 405) headers.allow = "POST";
  return new Response(JSON.stringify({ jsonrpc: "2.0", id, error: { code: -32000, message: err.message, data } }), { status: err.status, headers });
}

function serverConfig(policy: unknown, name: string): McpServerConfig {
  const parsed = McpPolicy.safeParse((isObject(policy) ? policy.mcp : undefined) ?? {});
  if (!parsed.success) throw new GovernorError("conflict", 409, "the tenant's mcp policy no longer passes validation: an operator must set it again (PUT /v1/policy)", { field: "mcp" });
  const cfg = parsed.data.servers[name];
  if (!cfg) throw new NotFoundError(`no MCP server "${name}" in this tenant's policy (mcp.servers)`);
  return cfg;
}

function sessionOf(req: Request, url: URL): string {
  const raw = req.headers.get("x-session-id") ?? url.searchParams.get("session");
  if (!raw) throw new BadRequestError("X-Session-ID header (or a session query parameter) is required", "X-Session-ID");
  const r = SessionId.safeParse(raw);
  if (!r.success) throw new BadRequestError(`X-Session-ID: ${r.error.issues[0]?.message}`, "X-Session-ID");
  return r.data;
}

function messagesOf(text: string): { messages: JSONRPCMessage[]; batch: boolean } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new BadRequestError(`body is not valid JSON: ${(e as Error).message}`, "body");
  }
  assertDepth(raw);
  assertWellFormed(raw);
  const batch = Array.isArray(raw);
  const messages = (batch ? (raw as unknown[]) : [raw]).map((m, i) => {
    const r = JSONRPCMessageSchema.safeParse(m);
    if (!r.success) throw new BadRequestError(`body${batch ? `.${i}` : ""} is not a JSON-RPC message`, "body");
    return r.data;
  });
  return { messages, batch };
}

/** Runs `cleanup` once the answer has been read to its end, or the agent stops reading. */
function whenDone(res: Response, ctx: Party.ExecutionContext, cleanup: () => Promise<void>): Response {
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    ctx.waitUntil(cleanup().catch((e) => console.error("MCP cleanup failed", e)));
  };
  if (!res.body) {
    finish();
    return res;
  }
  const reader = res.body.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done: end, value } = await reader.read();
        if (end) {
          controller.close();
          finish();
        } else controller.enqueue(value);
      } catch (e) {
        controller.error(e);
        finish();
      }
    },
    cancel(reason) {
      finish();
      return reader.cancel(reason);
    },
  });
  return new Response(body, { status: res.status, headers: res.headers });
}

export async function mcpRoute(req: Request, serverName: string | undefined, rest: string[], c: McpRouteContext): Promise<Response> {
  requirePermission(c.principal, "check");
  const name = McpServerName.safeParse(serverName ?? "");
  if (!name.success || rest.length) throw new NotFoundError("MCP endpoints are /v1/mcp/<server>, one per server in the tenant's policy (mcp.servers)");
  const server = name.data;
  // No stream of server-initiated messages: nothing is pushed outside a request's answer.
  if (req.method !== "POST") throw new GovernorError("method_not_allowed", 405, `${req.method} is not allowed here: this MCP endpoint takes POST only (stateless Streamable HTTP)`);
  const url = new URL(req.url);
  const session = sessionOf(req, url);
  const cfg = serverConfig(await c.tenantPolicy(), server);
  const { messages, batch } = messagesOf(await readText(req));
  const requests = messages.filter(isJSONRPCRequest);
  // A cancel reaches the call it names (cancel.ts); other notifications and responses have
  // nobody to go to: the upstream connection of the request they refer to is gone.
  for (const m of messages) {
    if ("method" in m && m.method === "notifications/cancelled" && !("id" in m)) {
      const id = (m.params as { requestId?: unknown } | undefined)?.requestId;
      if (typeof id !== "string" && typeof id !== "number") continue;
      for (const approvalId of cancel(callKey(c.principal.tenant, session, id))) {
        // Best effort: the waiting call also withdraws when its own request ends.
        await withdrawApproval({ lobby: c.lobby, principal: c.principal, session }, approvalId).catch((e) => console.error("could not withdraw a cancelled call", e));
      }
    }
  }
  if (!requests.length) return new Response(null, { status: 202 });

  // The tool is the action: X-Action names nothing here.
  const { action: _action, ...attribution } = attributionOf(req).attribution;
  const ref: SessionRef = { lobby: c.lobby, principal: c.principal, session, attribution };
  if (requests.some((r) => r.method === "initialize")) {
    // Fail the handshake, not the first call, when the session was never opened.
    const res = await callSession(c.lobby, c.principal, session, { op: "get" });
    if (!res.ok) {
      const body = (await res.json().catch(() => ({}))) as { error?: { message?: string } };
      throw new GovernorError(res.status === 404 ? "not_found" : "internal_error", res.status, body.error?.message ?? "session not available", { field: "X-Session-ID" });
    }
    await res.body?.cancel();
  }

  const gone = new AbortController();
  let upstream: Upstream | undefined;
  if (requests.some((r) => r.method !== "ping")) {
    try {
      const key = `${c.principal.tenant}\n${server}\n${sha256Hex(canonicalJson(cfg))}`;
      upstream = await connectUpstream(key, server, cfg, gone.signal, (p) => c.ctx.waitUntil(p));
    } catch (e) {
      return await answerUnreachable(ref, server, requests, e as McpError);
    }
  }
  const mcp = buildServer({ name: server, cfg, upstream, ref, gone: gone.signal });
  const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  // Every answer leaves with a plain error message (wire.ts).
  const send = transport.send.bind(transport);
  transport.send = (m, options) => send(plainError(m), options);
  await mcp.connect(transport);
  const res = await transport.handleRequest(req, { parsedBody: batch ? messages : messages[0] });
  return whenDone(res, c.ctx, async () => {
    gone.abort();
    await upstream?.close();
    await mcp.close();
  });
}
