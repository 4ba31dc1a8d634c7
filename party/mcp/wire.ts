import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";

// The SDK's McpError puts "MCP error <code>: " in front of its message, and the SDK's
// server sends that message as it is; the agent's client, reading the error, puts the
// same prefix in front again ("MCP error -32602: MCP error -32602: ..."). The code is a
// field of its own on the wire, so the message leaves here without it.

const PREFIX = /^(?:MCP error -?\d+: )+/;

/** The message without the prefix(es) McpError added. */
export function plainMessage(message: string): string {
  return message.replace(PREFIX, "");
}

/** An outgoing JSON-RPC message with its error's message plain; anything else as it is. */
export function plainError<M extends JSONRPCMessage>(m: M): M {
  const error = (m as { error?: { message?: unknown } }).error;
  if (!error || typeof error.message !== "string" || !PREFIX.test(error.message)) return m;
  return { ...m, error: { ...error, message: plainMessage(error.message) } };
}
