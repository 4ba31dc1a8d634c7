import Anthropic from "@anthropic-ai/sdk";
import { generateKeyPairSync } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { useProxiedGovernor } from "../support/proxied";
import { client, TOKENS } from "../support/server";

// What a new user runs into in the first hour: proxy paths that are not governed, secrets
// on the command line, error messages that do not say what to do, the policy route's body
// shape, and the learned ratios an operator cannot see or reset.

const OPENAI_KEY = "sk-provider-secret-openai-first-use";
const ANTHROPIC_KEY = "sk-ant-provider-secret-first-use";
// A real key, and a value of many lines: it must reach the server whole.
const SIGNING_KEY = generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString();
const SIGNING_KEY_BODY = SIGNING_KEY.split("\n")[1];

const rig = useProxiedGovernor(
  (up) => ({ OPENAI_BASE_URL: `${up.url}/v1`, OPENAI_API_KEY: OPENAI_KEY, ANTHROPIC_BASE_URL: up.url, ANTHROPIC_API_KEY: ANTHROPIC_KEY, GOVERNOR_SIGNING_KEY: SIGNING_KEY }),
  "fu",
);
const { op, session, summary, openai, anthropic } = rig;
const agent = rig.as(TOKENS.agent);
const auditor = rig.as(TOKENS.auditor);

describe("only governed endpoints go upstream", () => {
  it.each([
    ["openai", "v1/images/generations", { model: "gpt-image-1", prompt: "a cat" }],
    ["openai", "v1/audio/speech", { model: "gpt-4o-mini-tts", input: "hi", voice: "alloy" }],
    ["openai", "v1/moderations", { model: "omni-moderation-latest", input: "hi" }],
    ["anthropic", "v1/messages/batches", { requests: [] }],
  ])("%s %s: 404 in the provider's shape, nothing upstream, no reservation", async (provider, path, body) => {
    const id = await session();
    const r = await agent(`/v1/proxy/${provider}/${path}`, { body, headers: { "X-Session-ID": id } });
    expect(r.status).toBe(404);
    expect(r.headers.get("x-should-retry")).toBe("false");
    const message = provider === "openai" ? r.json.error.message : r.json.error.message;
    if (provider === "anthropic") expect(r.json.type).toBe("error");
    expect(message).toContain(`not a governed endpoint: ${provider} ${path}`);
    expect(message).toContain(provider === "openai" ? "v1/chat/completions, v1/completions, v1/responses, v1/embeddings" : "v1/messages");
    expect(rig.up.requests).toHaveLength(0);
    const s = await summary(id);
    expect(s.reservations).toHaveLength(0);
    expect(s.spentUsd).toBe(0);
  });

  it("the official SDK sees a NotFoundError naming the governed endpoints", async () => {
    const id = await session();
    const err = await openai(id)
      .images.generate({ model: "gpt-image-1", prompt: "a cat" })
      .catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    expect(err.message).toMatch(/not a governed endpoint: openai v1\/images\/generations.*Governed: v1\/chat\/completions/);
    expect(rig.up.requests).toHaveLength(0);
  });

  it("GET routes such as /v1/models are not forwarded", async () => {
    const r = await agent("/v1/proxy/openai/v1/models");
    expect(r.status).toBe(404);
    expect(r.json.error.message).toContain("not a governed endpoint: openai v1/models");
    expect(rig.up.requests).toHaveLength(0);
    // A governed path asked with GET is a wrong method, not a missing route.
    expect((await agent("/v1/proxy/openai/v1/chat/completions")).status).toBe(405);
  });

  it("an OpenAI base URL without its /v1 is told what to change", async () => {
    const r = await agent("/v1/proxy/openai/chat/completions", { body: { model: "gpt-4o-mini", messages: [] }, headers: { "X-Session-ID": "x" } });
    expect(r.status).toBe(404);
    expect(r.json.error.message).toContain("baseURL must end in /v1/proxy/openai/v1");
  });

  it("Anthropic's free token count passes through without a reservation or a session", async () => {
    const id = await session();
    const counted = await anthropic(id).messages.countTokens({ model: "claude-sonnet-4-5", messages: [{ role: "user", content: "How many tokens is this?" }] });
    expect(counted.input_tokens).toBeGreaterThan(0);
    expect(rig.up.requests).toHaveLength(1);
    expect(rig.up.requests[0].path).toBe("/v1/messages/count_tokens");
    // The gateway's key went upstream, not the caller's token.
    expect(rig.up.requests[0].headers["x-api-key"]).toBe(ANTHROPIC_KEY);
    const s = await summary(id);
    expect(s.spentUsd).toBe(0);
    expect(s.counters.llmCalls ?? 0).toBe(0);
    // Auditors may not make proxied calls, free or not.
    const refused = await auditor("/v1/proxy/anthropic/v1/messages/count_tokens", { body: { model: "claude-sonnet-4-5", messages: [] } });
    expect(refused.status).toBe(403);
    expect(rig.up.requests).toHaveLength(1);
  });

  it("a governed call still goes through", async () => {
    const id = await session();
    const res = await openai(id).chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }], max_tokens: 20 });
    expect(res.choices[0].message.content).toBeTruthy();
    expect(rig.up.requests.map((r) => r.path)).toEqual(["/v1/chat/completions"]);
  });
});

describe("no secret on a command line", () => {
  it("partykit and workerd run with no token, key or secret in their arguments, and the tokens work", () => {
    // Every process of the server's group (partykit dev and the workerd it starts).
    const group = readdirSync("/proc")
      .filter((d) => /^\d+$/.test(d))
      .filter((d) => {
        try {
          const stat = readFileSync(`/proc/${d}/stat`, "utf8");
          return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]) === rig.gov.pid;
        } catch {
          return false;
        }
      })
      .map((d) => readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0").join(" "));
    expect(group.some((c) => /partykit/.test(c))).toBe(true);
    expect(group.some((c) => /workerd/.test(c))).toBe(true);
    for (const cmd of group) {
      for (const secret of [...Object.values(TOKENS), OPENAI_KEY, ANTHROPIC_KEY, SIGNING_KEY_BODY, "GOVERNOR_TOKENS"]) expect(cmd).not.toContain(secret);
    }
  });

  it("the tokens and keys given that way are in force", async () => {
    expect((await op("/v1/whoami")).json).toMatchObject({ tenant: "acme", role: "operator" });
    expect((await client(rig.gov.url, "not-a-token-at-all")("/v1/whoami")).status).toBe(401);
    expect((await op("/v1/checkpoints/key")).json.source).toBe("env");
    const id = await session();
    await openai(id).chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }], max_tokens: 5 });
    expect(rig.up.requests[0].headers.authorization).toBe(`Bearer ${OPENAI_KEY}`);
  });
});

describe("error messages say what to do", () => {
  it("an Authorization header without Bearer names the form to use", async () => {
    const res = await fetch(`${rig.gov.url}/v1/whoami`, { headers: { authorization: TOKENS.operator } });
    expect(res.status).toBe(401);
    const body = (await res.json()) as { error: { message: string } };
    expect(body.error.message).toContain("use Authorization: Bearer <token>");
    expect(body.error.message).not.toContain("missing token");
    expect(body.error.message).not.toContain(TOKENS.operator);
  });

  it("a YAML policy sent as JSON is told to say content-type: application/yaml", async () => {
    const r = await op("/v1/policy", { method: "PUT", raw: "budget:\n  session_usd: 5\n", headers: { "content-type": "application/json" } });
    expect(r.status).toBe(400);
    expect(r.json.error.message).toContain("content-type: application/yaml");
  });

  it("bad YAML quotes the line instead of ending on a colon", async () => {
    const r = await op("/v1/policy", { method: "PUT", raw: "budget:\n  session_usd: 5\n on_exceed: kill\n", headers: { "content-type": "application/yaml" } });
    expect(r.status).toBe(400);
    const msg: string = r.json.error.message;
    expect(msg).toMatch(/at line 3, column \d+, which reads " on_exceed: kill"$/);
    expect(msg).not.toMatch(/:\s*$/);
  });

  it("a provider failure keeps the provider's own message", async () => {
    const id = await session();
    rig.up.next({ status: 529 });
    const err = await anthropic(id)
      .messages.create({ model: "claude-sonnet-4-5", max_tokens: 20, messages: [{ role: "user", content: "hi" }] })
      .catch((e) => e);
    expect(err).toBeInstanceOf(Anthropic.APIError);
    expect(err.status).toBe(502);
    expect(err.message).toContain("upstream answered 529: Overloaded");
  });
});

describe("PUT /v1/policy", () => {
  it("takes {policy} as GET answers it, and the bare policy", async () => {
    const wrapped = await op("/v1/policy", { method: "PUT", body: { policy: { budget: { session_usd: 3 } }, source: "tenant" } });
    expect(wrapped.status).toBe(200);
    expect((await op("/v1/policy")).json).toMatchObject({ source: "tenant", policy: { budget: { session_usd: 3 } } });
    // GET's answer goes back as it came.
    const got = (await op("/v1/policy")).json;
    expect((await op("/v1/policy", { method: "PUT", body: got })).status).toBe(200);
    expect((await op("/v1/policy", { method: "PUT", body: { budget: { session_usd: 4 } } })).status).toBe(200);
    expect((await op("/v1/policy")).json.policy).toEqual({ budget: { session_usd: 4 } });
    await op("/v1/policy", { method: "PUT", body: {} });
  });

  it("a typo names the unknown field and the valid ones", async () => {
    const r = await op("/v1/policy", { method: "PUT", body: { budgett: { session_usd: 3 } } });
    expect(r.status).toBe(400);
    expect(r.json.error.message).toContain('unknown field "budgett"');
    expect(r.json.error.message).toMatch(/valid fields: version, budget, limits, actions/);
    const nested = await op("/v1/policy", { method: "PUT", body: { policy: { budget: { sesion_usd: 3 } } } });
    expect(nested.json.error.message).toMatch(/policy\.budget: unknown field "sesion_usd"; valid fields: session_usd, run_usd/);
  });
});

describe("learned ratios", () => {
  it("an operator sees and resets them; auditors read; agents are refused", async () => {
    const id = await session();
    // The stand-in bills 3x the input the gateway counts: the settle teaches the tenant.
    rig.up.next({ inputFactor: 3 });
    await anthropic(id).messages.create({ model: "claude-haiku-4-5", max_tokens: 20, messages: [{ role: "user", content: "Count me in, twice over and then some more." }] });
    let rows: Array<{ model: string; profile: string; ratio: number }> = [];
    for (let i = 0; i < 100; i++) {
      rows = (await op("/v1/learned-ratios")).json.ratios;
      if (rows.some((r) => r.model === "claude-haiku-4-5")) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const learned = rows.find((r) => r.model === "claude-haiku-4-5");
    expect(learned).toMatchObject({ profile: "text" });
    expect(learned!.ratio).toBeGreaterThan(0);

    expect((await auditor("/v1/learned-ratios/claude-haiku-4-5")).json.ratios).toEqual([learned]);
    expect((await agent("/v1/learned-ratios")).status).toBe(403);
    expect((await auditor("/v1/learned-ratios", { method: "DELETE" })).status).toBe(403);
    // Another tenant's operator sees none of them.
    expect((await client(rig.gov.url, TOKENS.foreign)("/v1/learned-ratios")).json.ratios).toEqual([]);

    const del = await op("/v1/learned-ratios/claude-haiku-4-5", { method: "DELETE" });
    expect(del.status).toBe(200);
    expect(del.json.removed).toBe(1);
    expect((await op("/v1/learned-ratios")).json.ratios.filter((r: { model: string }) => r.model === "claude-haiku-4-5")).toEqual([]);
    expect((await op("/v1/learned-ratios", { method: "DELETE" })).json.removed).toBeGreaterThanOrEqual(0);
  });
});
