import WS from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditNdjson } from "../../sdk/audit";
import { ClientMessage } from "../../schema/protocol";
import { client, startGovernor, TOKENS, type Governor } from "../support/server";
import { startUpstream, type Upstream } from "../support/upstream";
import { Rng, seedFromEnv } from "./prng";
import { fuzzMessage, fuzzRequest, type FuzzRequest } from "./requests";

// A hostile client against a real server: every route and both socket kinds, random and
// adversarial input. Asserts no 5xx, no hang (each request has a deadline), no crash (the
// server still answers and does real work after), and that no refused request changed a
// log. The seed is printed; GOVERNOR_FUZZ_SEED=<seed> replays a failing run exactly.

const SEED = seedFromEnv();
const HTTP_CASES = Number(process.env.GOVERNOR_FUZZ_CASES ?? 300);
const SOCKET_CASES = Number(process.env.GOVERNOR_FUZZ_MESSAGES ?? 80);
const REQUEST_TIMEOUT_MS = 10_000;
// Refusals of the request itself: none of these may leave a trace in any log. (Policy
// refusals such as 402/429 append their decision by design.)
const NO_TRACE = new Set([400, 401, 404, 405, 413, 415]);

let gov: Governor;
let up: Upstream;
let op: ReturnType<typeof client>;
const SESSIONS = ["fz-budget", "fz-rules", "fz-open"];

beforeAll(async () => {
  console.log(`fuzz seed ${SEED} (set GOVERNOR_FUZZ_SEED=${SEED} to replay)`);
  up = await startUpstream();
  gov = await startGovernor({ vars: { OPENAI_BASE_URL: `${up.url}/v1`, OPENAI_API_KEY: "sk-fuzz", ANTHROPIC_BASE_URL: up.url, ANTHROPIC_API_KEY: "sk-ant-fuzz", GOVERNOR_UPSTREAM_TIMEOUT_MS: "5000" } });
  op = client(gov.url, TOKENS.operator);
  const policies: Record<string, unknown> = {
    "fz-budget": { budget: { session_usd: 5, alert_at: 0.5 }, notify: [{ webhook: "http://127.0.0.1:9/hook?token=fuzz-secret" }] },
    "fz-rules": {
      actions: {
        deny: ["delete_database"],
        rules: { refund: { account: { pattern: "^[A-Z]{2}[0-9]{8}$" }, amount: { max: 1000, require_approval_above: 500 } }, "*": { "*": { pattern: "^(a+)+$|^[^!]*$", forbidden: ["drop table"] } } },
      },
      limits: { rate: [{ per: "session", max: 1000, window: "1m" }] },
    },
    "fz-open": {},
  };
  for (const id of SESSIONS) expect((await op("/v1/sessions", { body: { id, policy: policies[id] } })).status).toBe(201);
});
afterAll(async () => {
  await gov?.stop();
  await up?.close();
});

async function heads(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const id of SESSIONS) out[id] = (await op(`/v1/sessions/${id}`)).json.seq;
  return out;
}

function describeReq(q: FuzzRequest): string {
  const body = q.body === undefined ? "" : typeof q.body === "string" ? q.body.slice(0, 200) : `<${q.body.byteLength} bytes>`;
  const headers = Object.fromEntries(Object.entries(q.headers).map(([k, v]) => [k, v.length > 60 ? `${v.slice(0, 20)}…(${v.length})` : v]));
  return `${q.method} ${q.path.slice(0, 200)} ${JSON.stringify(headers)} ${body}`;
}

async function send(q: FuzzRequest): Promise<{ status: number; text: string; forwarded: boolean }> {
  const res = await fetch(`${gov.url}${q.path}`, {
    method: q.method,
    headers: q.headers,
    body: q.body as BodyInit | undefined,
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  // A proxied call that went out carries its request id: a 4xx then is the provider's own,
  // passed through after the reservation (and its release) were recorded.
  return { status: res.status, text: await res.text(), forwarded: res.headers.has("x-governor-request-id") };
}

describe(`fuzz (seed ${SEED})`, () => {
  it(`${HTTP_CASES} hostile HTTP requests: no 5xx, no hang, no trace of a refused request`, async () => {
    const r = new Rng(SEED);
    let before = await heads();
    const statuses: Record<number, number> = {};
    for (let i = 0; i < HTTP_CASES; i++) {
      const q = fuzzRequest(r, SESSIONS);
      const where = `seed ${SEED}, case ${i}: ${describeReq(q)}`;
      let res: { status: number; text: string; forwarded: boolean };
      try {
        res = await send(q);
      } catch (e) {
        // A body past the limit may be cut off mid-upload: the answer (413) can race the write.
        if (q.body && typeof q.body === "string" && q.body.length > 1_000_000) continue;
        throw new Error(`${where}\n-> no answer: ${(e as Error).message}`);
      }
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      if (res.status >= 500) throw new Error(`${where}\n-> ${res.status} ${res.text.slice(0, 300)}`);
      let after: Record<string, number>;
      try {
        after = await heads();
      } catch (e) {
        throw new Error(`${where}\n-> ${res.status}, then the next request failed: ${(e as Error).message} ${((e as Error).cause as Error)?.message}`);
      }
      const forbidden = res.status === 403 && /"code":"forbidden"/.test(res.text);
      if ((NO_TRACE.has(res.status) || forbidden) && !res.forwarded) {
        if (JSON.stringify(after) !== JSON.stringify(before)) throw new Error(`${where}\n-> ${res.status}, yet a log changed: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
      }
      before = after;
    }
    console.log(`fuzz seed ${SEED}: statuses ${JSON.stringify(statuses)}`);
  }, 120_000);

  it(`${SOCKET_CASES} hostile socket messages on both socket kinds: errors, never a closed socket or an internal error`, async () => {
    const r = new Rng(SEED ^ 0x5eed);
    const open = (path: string) =>
      new Promise<{ ws: WS; messages: any[] }>((ok, fail) => {
        const ws = new WS(`${gov.wsUrl}${path}`);
        const messages: any[] = [];
        ws.on("message", (m) => messages.push(JSON.parse(String(m))));
        ws.once("open", () => ok({ ws, messages }));
        ws.once("error", fail);
      });
    const session = await open(`/parties/session/acme:fz-open?token=${TOKENS.operator}&tail=1`);
    const agentSocket = await open(`/parties/session/acme:fz-rules?token=${TOKENS.agent}`);
    const tenant = await open(`/parties/tenant/acme?token=${TOKENS.operator}`);
    const sockets = [session, agentSocket, tenant];
    let before = await heads();
    for (let i = 0; i < SOCKET_CASES; i++) {
      const m = fuzzMessage(r);
      const s = r.pick(sockets);
      const seen = s.messages.length;
      s.ws.send(m);
      // A message the schema refuses must be answered with an error and leave no trace.
      let invalid = typeof m !== "string";
      if (typeof m === "string") {
        try {
          invalid = m.length > 256 * 1024 || !ClientMessage.safeParse(JSON.parse(m)).success;
        } catch {
          invalid = true;
        }
      }
      const deadline = Date.now() + REQUEST_TIMEOUT_MS;
      while (s.messages.length === seen && Date.now() < deadline && s !== session) await new Promise((res) => setTimeout(res, 5));
      if (s === session) await new Promise((res) => setTimeout(res, 30));
      const where = `seed ${SEED}, message ${i}: ${typeof m === "string" ? m.slice(0, 200) : `<${m.byteLength} bytes>`}`;
      for (const sock of sockets) if (sock.ws.readyState !== WS.OPEN) throw new Error(`${where}\n-> a socket closed`);
      const internal = s.messages.slice(seen).find((x) => x.type === "error" && x.code === "internal_error");
      if (internal) throw new Error(`${where}\n-> ${JSON.stringify(internal)}`);
      const after = await heads();
      if (invalid && s !== tenant) {
        const answered = s.messages.slice(seen).some((x) => x.type === "error");
        if (!answered && s !== session) throw new Error(`${where}\n-> no error message for an invalid message`);
        if (JSON.stringify(after) !== JSON.stringify(before)) throw new Error(`${where}\n-> refused, yet a log changed`);
      }
      before = after;
    }
    // Still usable: a real check on the agent's socket gets its decision.
    agentSocket.ws.send(JSON.stringify({ type: "check", id: "after-fuzz", action: "search", args: { q: "aaa" } }));
    const deadline = Date.now() + 10_000;
    while (!agentSocket.messages.some((x) => x.type === "decision" && x.id === "after-fuzz") && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
    // Any decision: the HTTP fuzz may have killed or closed this session by now.
    expect(agentSocket.messages.find((x) => x.type === "decision" && x.id === "after-fuzz")?.decision).toMatch(/^(allow|deny|review)$/);
    for (const s of sockets) s.ws.close();
  }, 120_000);

  it("the server is still up and does real work; every log still verifies", async () => {
    expect((await fetch(`${gov.url}/healthz`)).status).toBe(200);
    const id = `fz-after-${SEED}`;
    expect((await op("/v1/sessions", { body: { id, policy: { budget: { session_usd: 1 } } } })).status).toBe(201);
    const agent = client(gov.url, TOKENS.agent);
    expect((await agent(`/v1/sessions/${id}/actions`, { body: { action: "search", costUsd: 0.5 } })).json).toMatchObject({ decision: "allow", spentUsd: 0.5 });
    expect((await op(`/v1/sessions/${id}/kill`, { body: { reason: "done" } })).json.state).toBe("killed");
    for (const s of [...SESSIONS, id]) {
      const log = await op(`/v1/sessions/${s}/log?limit=10000`);
      const audit = auditNdjson(log.text);
      if (!audit.ok) throw new Error(`${s}: ${audit.reason} at seq ${audit.seq}`);
      for (const [k, v] of Object.entries(audit.summary)) if (typeof v === "number") expect(Number.isFinite(v), `${s}.${k}`).toBe(true);
    }
  });
});
