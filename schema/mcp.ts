import { z } from "zod";
import { Duration } from "../lib/duration";

// The tenant's upstream MCP servers (policy `mcp.servers`), reached through
// `/v1/mcp/<server>`. A server's headers are its credentials: they stay in the tenant's
// policy, are shown only to operators, and never enter a session's log.

/** No dots: a tool is exposed as `mcp.<server>.<tool>`, so the server part must be unambiguous. */
export const McpServerName = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "use 1-64 letters, digits, '_' or '-'");

// The MCP transport sets these itself; a policy that set them would break the protocol.
const RESERVED_HEADERS = new Set(["accept", "content-type", "content-length", "host", "connection", "transfer-encoding", "mcp-session-id", "mcp-protocol-version", "last-event-id"]);

// Keys are checked here rather than by a key schema, so the refusal names the header and says why.
function keysMatch(check: (key: string) => string | undefined) {
  return (value: Record<string, unknown>, ctx: z.RefinementCtx) => {
    for (const key of Object.keys(value)) {
      const problem = check(key);
      if (problem) ctx.addIssue({ code: "custom", path: [key], message: problem });
    }
  };
}

const headerProblem = (h: string) =>
  !/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$/.test(h) ? "not a valid header name" : RESERVED_HEADERS.has(h.toLowerCase()) ? "set by the MCP transport itself" : undefined;

const HeaderValue = z.string().max(4096).regex(/^[^\r\n\0]*$/, "a header value may not hold line breaks");

export const McpServerConfig = z.strictObject({
  url: z.url({ protocol: /^https?$/, error: "an http(s) URL" }),
  headers: z.record(z.string(), HeaderValue).superRefine(keysMatch(headerProblem)).optional(),
  /** USD charged per call of a tool (by the upstream's tool name), as an action's `costUsd`. */
  tool_costs: z.record(z.string().min(1).max(128), z.number().finite().nonnegative()).optional(),
  /** How long one upstream request may take before the agent gets an MCP error. */
  timeout: Duration.default(60_000),
});

export const McpPolicy = z.strictObject({
  servers: z
    .record(z.string(), McpServerConfig)
    .superRefine(keysMatch((name) => (McpServerName.safeParse(name).success ? undefined : "server names are 1-64 letters, digits, '_' or '-'")))
    .default({}),
});

export type McpServerConfig = z.infer<typeof McpServerConfig>;
export type McpPolicy = z.infer<typeof McpPolicy>;

/** The action name an MCP tool call is decided under. */
export function mcpActionName(server: string, tool: string): string {
  return `mcp.${server}.${tool}`;
}

/**
 * Where the secrets of the `mcp` section are: every header value, and the credentials or
 * query string of a server URL. Every place that shows a policy to someone who may not
 * configure it masks these paths (with `maskMcpSecrets`), and sessions never store them.
 */
export const MCP_SECRET_PATHS = ["mcp.servers.*.headers.*", "mcp.servers.*.url (user info and query)"] as const;

export const MASKED = "***";

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function maskServer(server: unknown): unknown {
  if (!isObject(server)) return server;
  const s: Record<string, unknown> = { ...server };
  if (isObject(server.headers)) s.headers = Object.fromEntries(Object.keys(server.headers).map((h) => [h, MASKED]));
  if (typeof server.url === "string") {
    try {
      const u = new URL(server.url);
      if (u.username || u.password || u.search) s.url = `${u.protocol}//${u.host}${u.pathname}${u.search ? `?${MASKED}` : ""}`;
    } catch {
      s.url = MASKED;
    }
  }
  return s;
}

/** A copy of a policy (parsed or as stored, any shape) with the secrets of its `mcp` section masked. */
export function maskMcpSecrets<T>(policy: T): T {
  if (!isObject(policy) || !isObject(policy.mcp) || !isObject(policy.mcp.servers)) return policy;
  const servers = Object.fromEntries(Object.entries(policy.mcp.servers).map(([name, s]) => [name, maskServer(s)]));
  return { ...policy, mcp: { ...policy.mcp, servers } } as T;
}
