import { request as httpRequest } from "node:http";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { joinDevtools, type DevtoolsSession } from "../../bench/inspector";
import { costUsd, priceFor } from "../../schema/pricing";
import { client, startGovernor, TOKENS, type Governor } from "../support/server";
import { useProxiedGovernor } from "../support/proxied";

// The proxy's hot path (issue 9): a finished call's settle rides along with the session's
// next reserve, bodies are read natively, and partykit dev's DevTools network events are
// off. What a user would notice if any of it went wrong: money off, calls refused that
// fit, settles late or lost, bodies misread.

const rig = useProxiedGovernor((up) => ({ OPENAI_BASE_URL: `${up.url}/v1`, OPENAI_API_KEY: "sk-provider" }), "hp");
const { op, session, summary, openai, whenSettled } = rig;
const cost = (u: { prompt_tokens: number; completion_tokens: number }) =>
  costUsd(priceFor("openai", "gpt-4o-mini")!.price, { inputTokens: u.prompt_tokens, outputTokens: u.completion_tokens, cachedInputTokens: 0, cacheWriteTokens: 0 });
const chat = (maxTokens = 16) => ({ model: "gpt-4o-mini", messages: [{ role: "user" as const, content: "Say hello." }], max_tokens: maxTokens });

describe("settles carried by the next reserve", () => {
  it("back-to-back calls each see the previous call's real cost, not its reservation", async () => {
    // Each call reserves its worst case, $0.06 (100k output tokens at $0.60/M); the budget
    // holds one such reservation but not two, so every call fits only because the previous
    // call's settle (a few thousandths of a cent) is applied before it is decided.
    const id = await session({ budget: { session_usd: 0.1 } });
    const ai = openai(id);
    let expected = 0;
    for (let i = 0; i < 10; i++) {
      const r = await ai.chat.completions.create(chat(100_000));
      expected += cost(r.usage!);
    }
    const s = await whenSettled(id, 2_000);
    expect(s.spentUsd).toBeCloseTo(expected, 12);
    expect(s.counters.llmCalls).toBe(10);
    expect(s.counters.denied).toBe(0);
  });

  it("a lone call's settle does not wait for a next call", async () => {
    const id = await session();
    const r = await openai(id).chat.completions.create(chat());
    const s = await whenSettled(id, 1_000);
    expect(s.spentUsd).toBeCloseTo(cost(r.usage!), 12);
  });

  it("calls in parallel on one session are each settled exactly once", async () => {
    const id = await session();
    const ai = openai(id);
    const answers = await Promise.all(Array.from({ length: 24 }, () => ai.chat.completions.create(chat())));
    const s = await whenSettled(id, 2_000);
    expect(s.spentUsd).toBeCloseTo(answers.reduce((a, r) => a + cost(r.usage!), 0), 12);
    const log = (await op(`/v1/sessions/${id}/log`)).text.trim().split("\n").map((l) => JSON.parse(l)).filter((e) => typeof e.seq === "number");
    const settles = log.filter((e) => e.type === "request.settled").map((e) => e.data.requestId);
    expect(settles).toHaveLength(24);
    expect(new Set(settles).size).toBe(24);
  });

  it("a kill right after a call still records what the call cost", async () => {
    const id = await session();
    const r = await openai(id).chat.completions.create(chat());
    expect((await op(`/v1/sessions/${id}/kill`, { body: { reason: "stop" } })).status).toBe(200);
    const s = await whenSettled(id, 1_000);
    expect(s.state).toBe("killed");
    expect(s.spentUsd).toBeCloseTo(cost(r.usage!), 12);
  });

});

describe.runIf(process.platform === "linux")("one hop per call", () => {
  // A carry window far above any turnaround, so that the count does not depend on how busy the machine is.
  let slow: Governor;
  beforeAll(async () => {
    slow = await startGovernor({ vars: { OPENAI_BASE_URL: `${rig.up.url}/v1`, OPENAI_API_KEY: "sk-provider", GOVERNOR_SETTLE_CARRY_MS: "1000" } });
  });
  afterAll(async () => {
    await slow?.stop();
  });

  it("an agent calling in a loop costs one hop to its actor per call, not two", async () => {
    const id = `loop-${Date.now().toString(36)}`;
    expect((await client(slow.url, TOKENS.operator)("/v1/sessions", { body: { id, policy: { budget: { session_usd: 10 } } } })).status).toBe(201);
    const ai = new OpenAI({ apiKey: TOKENS.agent, baseURL: `${slow.url}/v1/proxy/openai/v1`, maxRetries: 0, defaultHeaders: { "X-Session-ID": id } });
    let expected = cost((await ai.chat.completions.create(chat())).usage!);
    const devtools: DevtoolsSession | null = await joinDevtools(slow.pid);
    expect(devtools, "partykit dev's DevTools proxy").not.toBeNull();
    try {
      // The test server runs with partykit dev's network events off, as `npm start` does.
      devtools!.counted();
      expected += cost((await ai.chat.completions.create(chat())).usage!);
      await new Promise((r) => setTimeout(r, 300));
      expect(devtools!.counted()["Network.requestWillBeSent"] ?? 0).toBe(0);
      // On again, so that workerd reports each subrequest: the hops to this session's actor are counted.
      devtools!.send("Network.enable");
      await new Promise((r) => setTimeout(r, 300));
      devtools!.subrequests();
      const calls = 10;
      for (let i = 0; i < calls; i++) expected += cost((await ai.chat.completions.create(chat())).usage!);
      const open = await client(slow.url, TOKENS.operator)(`/v1/sessions/${id}`);
      // Read through the gateway, the session shows the last call settled: the read carried it.
      expect(open.json.reservations).toEqual([]);
      expect(open.json.spentUsd).toBeCloseTo(expected, 12);
      const hops = devtools!.subrequests().filter((u) => u.includes(`/parties/session/acme:${id}`));
      // One reserve per call and the read; a settle per call would make 21. A call slower than
      // 250 ms (a very busy machine) adds a progress report.
      expect(hops.length).toBeGreaterThanOrEqual(calls + 1);
      expect(hops.length).toBeLessThanOrEqual(calls + 3);
      devtools!.send("Network.disable");
    } finally {
      devtools!.close();
    }
  });
});

/** A POST whose body is sent in chunks with no Content-Length (the reader loop's path). */
function chunked(path: string, token: string, parts: Buffer[], headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL(path, rig.gov.url);
    const req = httpRequest(url, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json", "transfer-encoding": "chunked", ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("error", reject);
    for (const p of parts) req.write(p);
    req.end();
  });
}

describe("bodies, with and without a declared length", () => {
  it("a chunked proxied call is read, forwarded and billed like any other", async () => {
    const id = await session();
    const text = JSON.stringify({ ...chat(), messages: [{ role: "user", content: "Grüße, ünïcode and a split multi-byte char: €" }] });
    const bytes = Buffer.from(text, "utf8");
    // Split inside the 3-byte euro sign: the reader must join the chunks before decoding.
    const cut = bytes.length - 4;
    const r = await chunked("/v1/proxy/openai/v1/chat/completions", TOKENS.agent, [bytes.subarray(0, cut), bytes.subarray(cut)], { "x-session-id": id });
    expect(r.status, r.body).toBe(200);
    expect(rig.up.requests.at(-1)!.body).toEqual(JSON.parse(text));
    expect((await whenSettled(id, 1_000)).spentUsd).toBeCloseTo(cost(JSON.parse(r.body).usage), 12);
  });

  it("a chunked body past the limit is a 413 and bytes that are not UTF-8 a 400, as with a declared length", async () => {
    const id = await session();
    const big = await chunked(`/v1/sessions/${id}/actions`, TOKENS.agent, [Buffer.from('{"action":"a","args":{"blob":"'), Buffer.alloc(1024 * 1024, "x"), Buffer.from('"}}')]);
    expect(big.status).toBe(413);
    const latin1 = Buffer.from('{"action":"caf\xe9"}', "latin1");
    const declared = await fetch(`${rig.gov.url}/v1/sessions/${id}/actions`, { method: "POST", headers: { authorization: `Bearer ${TOKENS.agent}`, "content-type": "application/json" }, body: latin1 });
    for (const r of [await chunked(`/v1/sessions/${id}/actions`, TOKENS.agent, [latin1]), { status: declared.status, body: await declared.text() }]) {
      expect(r.status).toBe(400);
      expect(JSON.parse(r.body).error.message).toMatch(/UTF-8/);
    }
    expect((await summary(id)).counters.actions).toBe(0);
  });
});
