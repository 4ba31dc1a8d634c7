import { afterAll, beforeAll, beforeEach } from "vitest";
import { Governor } from "../../sdk/index";
import { startGovernor, TOKENS, type Governor as Server } from "./server";
import { startUpstream, type Upstream } from "./upstream";

// A Governor in front of the provider stand-in, with an operator client and an agent
// client: what the framework integration tests run against.

export const POLICY = {
  budget: { session_usd: 1 },
  actions: {
    deny: ["delete_database"],
    rules: { refund: { amount: { max: 1000, require_approval_above: 500 } } },
  },
};

export interface Stack {
  server: Server;
  up: Upstream;
  operator: Governor;
  agent: Governor;
  stop(): Promise<void>;
}

export async function startStack(): Promise<Stack> {
  const up = await startUpstream();
  const server = await startGovernor({
    vars: { OPENAI_BASE_URL: `${up.url}/v1`, OPENAI_API_KEY: "sk-provider-openai", ANTHROPIC_BASE_URL: up.url, ANTHROPIC_API_KEY: "sk-provider-anthropic" },
  }).catch(async (e) => {
    await up.close();
    throw e;
  });
  return {
    server,
    up,
    operator: new Governor({ baseUrl: server.url, token: TOKENS.operator, tenant: "acme" }),
    agent: new Governor({ baseUrl: server.url, token: TOKENS.agent, tenant: "acme" }),
    async stop() {
      await server.stop();
      await up.close();
    },
  };
}

/**
 * The stack of one test file: started before its tests, stopped after them, the stand-in's
 * script and record cleared before each test. Its fields are there once the tests run.
 */
export function useStack(): Stack {
  const stack = {} as Stack;
  beforeAll(async () => {
    Object.assign(stack, await startStack());
  });
  afterAll(async () => {
    await stack.stop?.();
  });
  beforeEach(() => stack.up.reset());
  return stack;
}

let n = 0;
/** A fresh session under `policy`, opened by the operator (agents may not set policies). */
export async function openFresh(stack: Stack, prefix: string, policy: unknown = POLICY): Promise<string> {
  const id = `${prefix}-${Date.now().toString(36)}-${n++}`;
  await stack.operator.openSession({ id, policy: policy as never });
  return id;
}

/** Approves the session's next pending approval from the operator's client, as a person at the console would. */
export async function approveNext(stack: Stack, session: string, decision: "approve" | "deny" = "approve"): Promise<string> {
  const end = Date.now() + 15_000;
  for (;;) {
    const s = await stack.operator.getSession(session);
    const p = s.pendingApprovals[0];
    if (p) {
      await (decision === "approve" ? stack.operator.approve(session, p.approvalId, "ok by test") : stack.operator.deny(session, p.approvalId, "no by test"));
      return p.approvalId;
    }
    if (Date.now() > end) throw new Error(`no approval became pending in ${session}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
