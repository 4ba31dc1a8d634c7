import { request as httpRequest } from "node:http";
import { deflateSync } from "node:zlib";
import { getEncoding } from "js-tiktoken";
import { describe, expect, it } from "vitest";
import { agentContext } from "../../bench/context";
import { callCostUsd, priceFor, type Provider, type Usage } from "../../schema/pricing";
import { useProxiedGovernor } from "../support/proxied";
import { client, START_TIMEOUT_MS, startGovernor, TOKENS } from "../support/server";
import { countPromptTokens as standInCount, startUpstream, type Upstream } from "../support/upstream";

// The money lifecycle against a real server and the official SDKs: reservations that hold
// when the provider bills more than the local count, overruns that are recorded and learned
// from, budget.fit_output, kills that reach calls in flight, clients that leave mid-stream,
// refusals the SDKs do not retry, and reservations that outlive a restart.

const VARS = (up: Upstream) => ({
  OPENAI_BASE_URL: `${up.url}/v1`,
  OPENAI_API_KEY: "sk-openai",
  ANTHROPIC_BASE_URL: up.url,
  ANTHROPIC_API_KEY: "sk-ant",
  GOVERNOR_UPSTREAM_TIMEOUT_MS: "20000",
  GOVERNOR_STREAM_STALL_MS: "2000",
});

const rig = useProxiedGovernor(VARS, "m");
const { op, session, summary, openai, anthropic, whenSettled } = rig;
const logOf = async (id: string) => (await op(`/v1/sessions/${id}/log`)).text.trim().split("\n").map((l) => JSON.parse(l));
const cost = (provider: Provider, model: string, u: Usage) => {
  const p = priceFor(provider, model)!;
  return callCostUsd(provider, p.family, p.price, u);
};

// A real PNG of the given size (one colour), so the stand-in can read its header like a provider.
function png(width: number, height: number): string {
  const crcTable = Array.from({ length: 256 }, (_, k) => {
    let c = k;
    for (let i = 0; i < 8; i++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (b: Buffer) => {
    let c = 0xffffffff;
    for (const x of b) c = crcTable[(c ^ x) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const raw = Buffer.alloc(height * (1 + width * 3), 0x7f);
  for (let y = 0; y < height; y++) raw[y * (1 + width * 3)] = 0;
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", ihdr), chunk("IDAT", deflateSync(raw)), chunk("IEND", Buffer.alloc(0))]).toString("base64");
}

// A small PDF with `pages` pages of text.
function pdf(pages: number): string {
  const objs = [`<< /Type /Catalog /Pages 2 0 R >>`, `<< /Type /Pages /Count ${pages} /Kids [${Array.from({ length: pages }, (_, i) => `${3 + i} 0 R`).join(" ")}] >>`];
  for (let i = 0; i < pages; i++) objs.push(`<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>`);
  const body = objs.map((o, i) => `${i + 1} 0 obj\n${o}\nendobj\n`).join("");
  return Buffer.from(`%PDF-1.4\n${body}trailer << /Root 1 0 R >>\n%%EOF\n`, "latin1").toString("base64");
}

const HISTORY = "The agent read the file, found the failing test, and proposed a patch to the parser. ".repeat(6);

describe("the reservation is an upper bound: 200 concurrent calls never spend past the budget", () => {
  const image = png(1024, 768);
  const doc = pdf(3);
  // The long end of what agents send: a ~100k-token coding agent's context (a system prompt,
  // twelve tool schemas, tool calls whose results are files, test runs and diffs), 469 KiB.
  const context = agentContext(100_000).body;
  // maxPrompt: where the attachment's size can be read, the reservation is that image's bound, not the family's largest.
  // calls: fewer for the ~100k-token context, whose every call carries 469 KiB through the proxy and the stand-in's tokenizer.
  const cases: Array<{ name: string; budget: number; behavior: Record<string, unknown>; fire: (id: string) => Promise<unknown>; maxPrompt?: number; calls?: number }> = [
    {
      name: "Anthropic text (billed 1.3x the cl100k count)",
      budget: 0.02,
      behavior: { inputFactor: 1.3 },
      fire: (id) => anthropic(id).messages.create({ model: "claude-haiku-4-5", max_tokens: 20, messages: [{ role: "user", content: HISTORY }] }),
    },
    {
      name: "Anthropic with two tools (tool-use system prompt, billed 1.3x)",
      budget: 0.02,
      behavior: { inputFactor: 1.3 },
      fire: (id) =>
        anthropic(id).messages.create({
          model: "claude-haiku-4-5",
          max_tokens: 20,
          tools: [
            { name: "read_file", description: "Read a file of the repository", input_schema: { type: "object", properties: { path: { type: "string" } }, required: ["path"] } },
            { name: "run_tests", description: "Run the test suite and return failures", input_schema: { type: "object", properties: { filter: { type: "string" } } } },
          ],
          messages: [{ role: "user", content: HISTORY }],
        }),
    },
    {
      name: "an image on gpt-4o-mini (2833 + 5667 per tile)",
      budget: 0.03,
      maxPrompt: 2833 + 5 * 5667,
      behavior: {},
      fire: (id) => openai(id).chat.completions.create({ model: "gpt-4o-mini", max_tokens: 20, messages: [{ role: "user", content: [{ type: "text", text: "What is in this picture?" }, { type: "image_url", image_url: { url: `data:image/png;base64,${image}` } }] }] }),
    },
    {
      name: "an image on gpt-4o (85 + 170 per tile)",
      budget: 0.02,
      behavior: {},
      fire: (id) => openai(id).chat.completions.create({ model: "gpt-4o", max_tokens: 20, messages: [{ role: "user", content: [{ type: "text", text: "What is in this picture?" }, { type: "image_url", image_url: { url: `data:image/png;base64,${image}` } }] }] }),
    },
    {
      name: "a 3-page PDF on Claude (page image + text per page)",
      budget: 0.05,
      behavior: {},
      fire: (id) =>
        anthropic(id).messages.create({
          model: "claude-haiku-4-5",
          max_tokens: 20,
          messages: [{ role: "user", content: [{ type: "document", source: { type: "base64", media_type: "application/pdf", data: doc } }, { type: "text", text: "Summarise this." }] }],
        }),
    },
    {
      name: "a ~100k-token agent context on gpt-4o-mini, billed 1.1x the o200k count",
      budget: 0.1,
      calls: 30,
      behavior: { inputFactor: 1.1 },
      fire: (id) => openai(id).chat.completions.create({ ...(context as object), model: "gpt-4o-mini", max_tokens: 20 } as never),
    },
  ];

  for (const c of cases) {
    it(c.name, async () => {
      const calls = c.calls ?? 200;
      const id = await session({ budget: { session_usd: c.budget } });
      rig.up.setDefault({ ...c.behavior, delayMs: 5 });
      const results = await Promise.allSettled(Array.from({ length: calls }, () => c.fire(id)));
      const ok = results.filter((r) => r.status === "fulfilled").length;
      const refused = results.filter((r) => r.status === "rejected" && (r.reason as { status?: number }).status === 402).length;
      const other = results.flatMap((r) => (r.status === "rejected" && (r.reason as { status?: number }).status !== 402 ? [String((r.reason as Error).message).slice(0, 200)] : []));
      expect(other).toEqual([]);
      expect(ok + refused).toBe(calls);
      expect(ok).toBeGreaterThan(0);
      expect(refused).toBeGreaterThan(0);
      const s = await whenSettled(id);
      expect(s.spentUsd).toBeLessThanOrEqual(c.budget);
      expect(s.overBudgetUsd).toBe(0);
      // Every settle says whether it went past its reservation, and by how much.
      const log = await logOf(id);
      const reserved = new Map(log.filter((e) => e.type === "request.reserved").map((e) => [e.data.requestId, e.data.estimateUsd]));
      let overrun = 0;
      for (const e of log.filter((x) => x.type === "request.settled")) {
        const over = e.data.costUsd - reserved.get(e.data.requestId);
        if (over > 1e-9) expect(e.data.overrunUsd).toBeCloseTo(over, 9);
        else expect(e.data.overrunUsd).toBeUndefined();
        overrun += e.data.overrunUsd ?? 0;
      }
      expect(s.overrunUsd).toBeCloseTo(overrun, 9);
      expect(rig.up.requests).toHaveLength(ok);
      if (c.maxPrompt) for (const e of log.filter((x) => x.type === "request.reserved")) expect(e.data.promptTokens).toBeLessThan(c.maxPrompt);
    });
  }
});

describe("learning from settles", () => {
  it("an overrun is recorded, alerted once naming model and ratio, and raises the next session's estimate", async () => {
    const body = { model: "gpt-4o-mini", max_tokens: 10, messages: [{ role: "user" as const, content: "short prompt, long bill" }] };
    const first = await session({ budget: { session_usd: 5 } });
    // The provider bills far more input than any local measure of this prompt.
    rig.up.setDefault({ promptTokens: 20_000 });
    await openai(first).chat.completions.create(body);
    await openai(first).chat.completions.create(body);
    await whenSettled(first);
    const log = await logOf(first);
    const settles = log.filter((e) => e.type === "request.settled");
    expect(settles[0].data.overrunUsd).toBeGreaterThan(0);
    expect(settles[0].data.inputRatio).toBeGreaterThan(10);
    const alerts = log.filter((e) => e.type === "alert.raised" && e.data.kind === "overrun");
    expect(alerts).toHaveLength(1);
    expect(alerts[0].data).toMatchObject({ model: "gpt-4o-mini", ratio: settles[0].data.inputRatio });
    expect(alerts[0].data.reason).toContain("gpt-4o-mini");
    expect((await summary(first)).overrunUsd).toBeGreaterThan(0);

    // Another session of the tenant starts from what the first one learned.
    const second = await session({ budget: { session_usd: 5 } });
    await openai(second).chat.completions.create(body);
    await whenSettled(second);
    const log2 = await logOf(second);
    const reserved = log2.find((e) => e.type === "request.reserved");
    expect(reserved.data.inputRatio).toBeGreaterThanOrEqual(settles[0].data.inputRatio);
    expect(reserved.data.promptTokens).toBeGreaterThanOrEqual(20_000);
    const settled = log2.find((e) => e.type === "request.settled");
    expect(settled.data.overrunUsd).toBeUndefined();
    expect((await summary(second)).overrunUsd).toBe(0);
  });
});

describe("budget.fit_output", () => {
  // The AI SDK's Anthropic provider sends max_tokens 64000 by default, streaming.
  const call = async (id: string, max_tokens: number) => {
    const { data, response } = await anthropic(id).messages.create({ model: "claude-sonnet-4-5", max_tokens, stream: true, messages: [{ role: "user", content: "Write a long essay." }] }).withResponse();
    for await (const _ of data);
    return { response };
  };

  it("sends a call whose output cap does not fit with the cap lowered, and says so", async () => {
    const id = await session({ budget: { session_usd: 0.25, fit_output: true } });
    const { response } = await call(id, 64_000);
    const cap = Number(response.headers.get("x-governor-output-cap"));
    expect(cap).toBeGreaterThanOrEqual(256);
    expect(cap).toBeLessThan(64_000);
    expect(rig.up.requests[0].body.max_tokens).toBe(cap);
    const reserved = (await logOf(id)).find((e) => e.type === "request.reserved");
    expect(reserved.data.fittedCap).toBe(cap);
    expect(reserved.data.estimateUsd).toBeLessThanOrEqual(0.25);
  });

  it("without it, the 402 names the cap as the cause and budget.fit_output as the fix", async () => {
    const id = await session({ budget: { session_usd: 0.25 } });
    const e = await call(id, 64_000).catch((x) => x);
    expect(e.status).toBe(402);
    expect(e.message).toContain("budget.fit_output");
    expect(e.message).toContain("64000");
    expect(rig.up.requests).toHaveLength(0);
  });

  it("never lowers below min_output_tokens", async () => {
    const id = await session({ budget: { session_usd: 0.25, fit_output: true, min_output_tokens: 20_000 } });
    const e = await call(id, 64_000).catch((x) => x);
    expect(e.status).toBe(402);
    expect(rig.up.requests).toHaveLength(0);
  });
});

describe("the money lifecycle", () => {
  it("a kill ends 5 running streams within a second, aborts them upstream, and charges what they produced", async () => {
    const id = await session({ budget: { session_usd: 5, on_exceed: "kill" } });
    rig.up.setDefault({ chunkDelayMs: 100, chunks: 300 });
    const body = { model: "gpt-4o-mini", messages: [{ role: "user" as const, content: "Tell me a long story." }], stream: true as const };
    const ended: number[] = [];
    let started = 0;
    const streams = Array.from({ length: 5 }, async () => {
      const stream = await openai(id).chat.completions.create(body);
      let chunks = 0;
      try {
        for await (const _ of stream) if (++chunks === 3) started++;
      } catch (e) {
        ended.push(Date.now());
        return e;
      }
      ended.push(Date.now());
      return undefined;
    });
    for (let i = 0; i < 200 && started < 5; i++) await new Promise((r) => setTimeout(r, 25));
    expect(started).toBe(5);
    const killed = await op(`/v1/sessions/${id}/kill`, { body: { reason: "runaway spend" } });
    expect(killed.status).toBe(200);
    const at = Date.now();
    const errors = await Promise.all(streams);
    for (const t of ended) expect(t - at).toBeLessThan(1000);
    for (const e of errors) expect((e as { code?: string })?.code ?? (e as { error?: { code?: string } })?.error?.code).toBe("session_killed");
    for (let i = 0; i < 40 && !rig.up.requests.every((r) => r.aborted); i++) await new Promise((r) => setTimeout(r, 25));
    expect(rig.up.requests.map((r) => r.aborted)).toEqual([true, true, true, true, true]);

    const s = await whenSettled(id);
    const log = await logOf(id);
    expect(log.filter((e) => e.type === "session.killed")).toHaveLength(1);
    expect(s.killed).toMatchObject({ by: "alice", reason: "runaway spend" });
    // What the stand-in had sent is what was charged, give or take the chunk in flight at the abort.
    const enc = getEncoding("o200k_base");
    let produced = 0;
    let slack = 0;
    for (const r of rig.up.requests) {
      const text = r.sent.flatMap((ev) => [...ev.matchAll(/"content":"([^"]*)"/g)].map((m) => m[1])).join("");
      const input = standInCount("chat", r.body);
      produced += cost("openai", "gpt-4o-mini", { inputTokens: input, outputTokens: enc.encode(text).length, cachedInputTokens: 0, cacheWriteTokens: 0 });
      slack += cost("openai", "gpt-4o-mini", { inputTokens: 0, outputTokens: 4, cachedInputTokens: 0, cacheWriteTokens: 0 });
    }
    expect(s.spentUsd).toBeLessThanOrEqual(produced + 1e-12);
    expect(s.spentUsd).toBeGreaterThanOrEqual(produced - slack);
  });

  it("a client gone mid-stream is charged the provider's usage when it had already arrived", async () => {
    const id = await session({ budget: { session_usd: 5 } });
    // Everything, the usage chunk included, is sent at once; only the end of the stream waits.
    rig.up.next({ chunks: 5, completionTokens: 777, holdBeforeEndMs: 8_000 });
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest(`${rig.gov.url}/v1/proxy/openai/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${TOKENS.agent}`, "x-session-id": id, "content-type": "application/json" } });
      req.on("response", (res) =>
        res.once("data", () => {
          req.destroy();
          resolve();
        }),
      );
      req.on("error", (e) => (/aborted|hang up/.test(e.message) ? resolve() : reject(e)));
      req.end(JSON.stringify({ model: "gpt-4o", messages: [{ role: "user", content: "hello" }], stream: true }));
    });
    const s = await whenSettled(id, 20_000);
    const settled = (await logOf(id)).find((e) => e.type === "request.settled");
    expect(settled.data.usage.outputTokens).toBe(777);
    expect(s.spentUsd).toBeCloseTo(cost("openai", "gpt-4o", settled.data.usage), 12);
    expect(settled.data.usage.inputTokens).toBe(standInCount("chat", rig.up.requests[0].body));
  });

  it("a 409 carries x-should-retry: false, so the openai SDK makes exactly one attempt", async () => {
    const id = await session({ budget: { session_usd: 5 }, actions: { rules: { refund: { amount: { require_approval_above: 10 } } } } });
    const review = await op(`/v1/sessions/${id}/actions`, { body: { action: "refund", args: { amount: 50 } } });
    expect(review.json.decision).toBe("review");
    const e = await openai(id, { maxRetries: 2 }).chat.completions.create({ model: "gpt-4o-mini", max_tokens: 5, messages: [{ role: "user", content: "x" }] }).catch((x) => x);
    expect(e.status).toBe(409);
    expect(e.headers.get("x-should-retry")).toBe("false");
    const denied = (await logOf(id)).filter((x) => x.type === "request.denied");
    expect(denied).toHaveLength(1);
  });
});

describe("restart", () => {
  // Two server starts in the test body, each budgeted like a hook's (START_TIMEOUT_MS).
  it("reservations open when the server died are settled by the alarm after restart, with no other traffic", { timeout: 30_000 + 2 * START_TIMEOUT_MS }, async () => {
    // Every wait below is bounded and says what it waited for, and each stage is timed on
    // stderr: a failure on a loaded machine names its stage instead of the test's timeout.
    const t0 = Date.now();
    const stage = (what: string) => process.stderr.write(`[restart test +${Date.now() - t0} ms] ${what}\n`);
    const upstream = await startUpstream();
    upstream.setDefault({ hang: true });
    let g = await startGovernor({ vars: VARS(upstream) });
    stage("first server up");
    try {
      const c = client(g.url, TOKENS.operator);
      const id = `restart-${Date.now().toString(36)}`;
      expect((await within(10_000, "creating the session", c("/v1/sessions", { body: { id, policy: { budget: { session_usd: 1, reservation_ttl: "8s" } } } }))).status).toBe(201);
      // No timeout of its own: it ends when the server dies under it (checked below).
      const call = fetch(`${g.url}/v1/proxy/openai/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${TOKENS.agent}`, "x-session-id": id }, body: JSON.stringify({ model: "gpt-4o", max_tokens: 10, messages: [{ role: "user", content: "x" }] }) }).then(
        (r) => `answered ${r.status}`,
        (e: Error) => `failed: ${e.message}`,
      );
      await until(10_000, "the call to reach the provider stand-in", () => upstream.requests.length > 0);
      stage("call reached the stand-in");
      const open = (await within(10_000, "reading the session", c(`/v1/sessions/${id}`))).json.reservations[0];
      expect(open).toBeTruthy();
      // The server dies outright (no chance to settle anything on the way down).
      const { persist, port } = g;
      process.kill(-g.pid, "SIGKILL");
      await within(10_000, "the killed server to stop (process group gone)", g.stop({ keepStorage: true }));
      stage("first server gone");
      expect(await within(10_000, "the call in flight to end with its server", call)).toMatch(/^failed/);
      g = await startGovernor({ vars: VARS(upstream), persist, port });
      const back = Date.now();
      stage("second server up");
      const c2 = client(g.url, TOKENS.operator);
      // Watched through the tenant's index only: nothing reaches the session itself. Due at
      // the reservation's expiry, or at once if the server came back later than that.
      let row: { reservations: unknown[]; spentUsd: number } | undefined;
      await until(Math.max(open.expiresAt - Date.now(), 0) + 15_000, "the index to show the reservation settled by the alarm", async () => {
        row = (await c2("/v1/sessions")).json.sessions.find((s: { session: string }) => s.session === id);
        return !!row && row.reservations.length === 0 && row.spentUsd > 0;
      }, () => JSON.stringify(row));
      stage("settled");
      expect(row?.spentUsd).toBeCloseTo(open.estimateUsd, 9);
      const log = (await within(10_000, "reading the log", c2(`/v1/sessions/${id}/log`))).text.trim().split("\n").map((l) => JSON.parse(l));
      const settled = log.find((e) => e.type === "request.settled");
      expect(settled.data.outcome).toBe("expired");
      // Due at expiresAt; if the server took longer than the TTL to come back, due when it is back.
      expect(settled.ts).toBeLessThanOrEqual(Math.max(open.expiresAt, back) + 2_000);
    } finally {
      await g.stop();
      await upstream.close();
      stage("stopped");
    }
  });
});

/** `p`, or a failure naming what it waited for once `ms` have passed. */
async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, fail) => (timer = setTimeout(() => fail(new Error(`waited ${ms} ms for ${what}`)), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` until it holds; fails naming what it waited for (and `state()`) after `ms`. */
async function until(ms: number, what: string, check: () => boolean | Promise<boolean>, state?: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`waited ${ms} ms for ${what}${state ? `; last seen: ${state()}` : ""}`);
    if (await within(left, what, Promise.resolve(check()))) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}
