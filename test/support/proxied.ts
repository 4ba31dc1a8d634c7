import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, beforeAll, beforeEach, expect } from "vitest";
import { client, startGovernor, TOKENS, type Governor } from "./server";
import { startUpstream, type Upstream } from "./upstream";

// A Governor proxying to the provider stand-in, for the test files that drive the proxy
// with the official SDKs: started before the file's tests, stopped after them, the
// stand-in's script and record cleared before each test.

export interface Proxied {
  /** Set once the tests run. */
  up: Upstream;
  gov: Governor;
  /** The operator's client. */
  op: ReturnType<typeof client>;
  /** A client with this token, usable before the server is up (it reads its URL at each call). */
  as(token: string): ReturnType<typeof client>;
  /** A new session under `policy`, opened by the operator; its id starts with the file's prefix. */
  session(policy?: unknown): Promise<string>;
  summary(id: string): Promise<any>;
  openai(id: string, opts?: { headers?: Record<string, string>; maxRetries?: number }): OpenAI;
  anthropic(id: string, headers?: Record<string, string>): Anthropic;
  /** The summary once no reservation is open; fails past `withinMs`, with the server's last words. */
  whenSettled(id: string, withinMs?: number): Promise<any>;
}

/** `vars` are the server's, given the stand-in (its URL); `prefix` starts every session id. */
export function useProxiedGovernor(vars: (up: Upstream) => Record<string, string>, prefix: string): Proxied {
  const rig = {} as Proxied;
  let n = 0;
  beforeAll(async () => {
    rig.up = await startUpstream();
    rig.gov = await startGovernor({ vars: vars(rig.up) });
  });
  afterAll(async () => {
    await rig.gov?.stop();
    await rig.up?.close();
  });
  beforeEach(() => rig.up.reset());
  const agentOptions = (id: string, headers: Record<string, string>) => ({ apiKey: TOKENS.agent, maxRetries: 0, defaultHeaders: { "X-Session-ID": id, ...headers } });
  const as = (token: string): Proxied["op"] => (path, init) => client(rig.gov.url, token)(path, init);
  return Object.assign(rig, {
    as,
    op: as(TOKENS.operator),
    async session(policy: unknown = { budget: { session_usd: 10 } }) {
      const id = `${prefix}-${Date.now().toString(36)}-${n++}`;
      const r = await rig.op("/v1/sessions", { body: { id, policy } });
      expect(r.status, r.text).toBe(201);
      return id;
    },
    summary: async (id: string) => (await rig.op(`/v1/sessions/${id}`)).json,
    openai: (id: string, { headers = {}, maxRetries = 0 }: { headers?: Record<string, string>; maxRetries?: number } = {}) =>
      new OpenAI({ ...agentOptions(id, headers), maxRetries, baseURL: `${rig.gov.url}/v1/proxy/openai/v1` }),
    anthropic: (id: string, headers: Record<string, string> = {}) => new Anthropic({ ...agentOptions(id, headers), baseURL: `${rig.gov.url}/v1/proxy/anthropic` }),
    async whenSettled(id: string, withinMs = 15_000) {
      const stop = Date.now() + withinMs;
      for (;;) {
        const s = await rig.summary(id);
        if (s.reservations.length === 0) return s;
        if (Date.now() > stop) {
          const output = rig.gov.output().split("\n").filter((l) => !l.includes("GET /v1/sessions/")).slice(-40).join("\n");
          throw new Error(`still ${s.reservations.length} reservation(s) open after ${withinMs} ms; upstream aborted: ${rig.up.requests.map((r) => r.aborted)}\n${JSON.stringify(s)}\n${output}`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  });
}
