import type { JSONRPCRequest, McpError } from "@modelcontextprotocol/sdk/types.js";
import type { SessionSummary } from "../../schema/protocol";
import { callSession } from "../calls";
import { refusal, reportError, type SessionRef } from "./govern";
import { failureCode } from "./upstream";
import { plainMessage } from "./wire";

// The upstream could not even be connected to, so no MCP server answers this request:
// each of its requests gets the failure as a JSON-RPC error, and each is an error fact of
// the session. Without the fact, an agent hammering a dead server would leave nothing in
// the log, and `runaway.repeat.same_error` could never catch it.

/** What the error fact names: the tool for a call (as a call that failed upstream would), else the server. */
function actionOf(server: string, r: JSONRPCRequest): string {
  const name = r.method === "tools/call" ? (r.params as { name?: unknown } | undefined)?.name : undefined;
  return typeof name === "string" && name.length > 0 && name.length <= 1024 ? name : `mcp.${server}`;
}

async function summaryOf(ref: SessionRef): Promise<SessionSummary | undefined> {
  try {
    const res = await callSession(ref.lobby, ref.principal, ref.session, { op: "get" });
    if (res.ok) return (await res.json()) as SessionSummary;
    await res.body?.cancel();
  } catch (e) {
    console.error("could not read the session of an MCP request", e);
  }
  return undefined;
}

export async function answerUnreachable(ref: SessionRef, server: string, requests: JSONRPCRequest[], failure: McpError): Promise<Response> {
  const message = plainMessage(failure.message);
  const error = { code: failure.code, message, data: failure.data };
  const s = await summaryOf(ref);
  const ended = s?.state === "killed" || s?.state === "closed" ? s : undefined;
  const answers = [];
  for (const r of requests) {
    if (r.method === "ping") {
      answers.push({ jsonrpc: "2.0", id: r.id, result: {} });
    } else if (ended && r.method === "tools/call") {
      // A killed or closed session refuses the call whatever the upstream's state, and says so.
      const killed = ended.state === "killed";
      const answer = refusal({
        id: String(r.id),
        decision: "deny",
        code: killed ? "session_killed" : "session_closed",
        rule: killed ? "session.killed" : "session.closed",
        reason: killed ? `session was killed: ${ended.killed?.reason ?? "no reason given"}` : "session is closed",
        spentUsd: ended.spentUsd,
        remainingUsd: ended.remainingUsd,
      });
      answers.push({ jsonrpc: "2.0", id: r.id, result: answer });
    } else {
      if (!ended) await reportError(ref, crypto.randomUUID(), actionOf(server, r), failureCode(failure), message);
      answers.push({ jsonrpc: "2.0", id: r.id, error });
    }
  }
  return new Response(JSON.stringify(answers.length === 1 ? answers[0] : answers), { status: 200, headers: { "content-type": "application/json" } });
}
