import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import canonicalize from "canonicalize";
import { describe, expect, it } from "vitest";
import { canonicalJson, eventHash, GENESIS, sha256Hex } from "../../lib/chain";
import { MAX_CHECK_WORK, MAX_PATTERN_PROGRAM } from "../../lib/limits";
import { MAX_EVENT_USD, MAX_SESSION_USD, moneyLimit, toNanos, toUsd } from "../../lib/money";
import { findBadText, isWellFormed, toWellFormed, truncate, utf8Length } from "../../lib/text";
import { checkArgs } from "../../machines/rules";
import { auditNdjson } from "../../sdk/audit";
import { ActionBody, AttributionHeaders, killReason, killRequest, ReportBody } from "../../schema/api";
import { Policy, parsePolicy } from "../../schema/policy";
import { ClientMessage } from "../../schema/protocol";
import { maskDeliveries, maskPolicySecrets } from "../../schema/secrets";
import { json, Rng, seedFromEnv } from "../fuzz/prng";
import { cpuMsOf } from "../support/cpu";

const FIXTURES = join(import.meta.dirname, "../fixtures/pre-issue-8");
const seed = seedFromEnv();

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

describe("canonical JSON and hashing", () => {
  it(`is exactly the canonicalize package's output for well-formed JSON (seed ${seed})`, () => {
    const r = new Rng(seed);
    for (let i = 0; i < 3000; i++) {
      const v = json(r, 4, true);
      const expected = canonicalize(v);
      if (canonicalJson(v) !== expected) throw new Error(`seed ${seed}, case ${i}: ${JSON.stringify(v)}`);
    }
    expect(canonicalJson({ b: [1, "é", { z: null, a: 1e300 }], a: "\ud83d\ude00" })).toBe(canonicalize({ b: [1, "é", { z: null, a: 1e300 }], a: "\ud83d\ude00" }));
  });

  it("never throws: lone surrogates, non-finite numbers, cycles, undefined", () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    expect(canonicalJson({ reason: "half an emoji \ud83d" })).toBe('{"reason":"half an emoji \\ud83d"}');
    expect(canonicalJson({ "\udc00k": 1 })).toBe('{"\\udc00k":1}');
    expect(canonicalJson([NaN, Infinity, -Infinity, undefined])).toBe("[null,null,null,null]");
    expect(canonicalJson(undefined)).toBe("null");
    expect(canonicalJson(cyclic)).toBe('{"a":1,"self":null}');
    let deep: unknown = 1;
    for (let i = 0; i < 100_000; i++) deep = [deep];
    expect(typeof canonicalJson(deep)).toBe("string");
    expect(eventHash({ seq: 1, id: "kill:\ud800", ts: 1, type: "session.killed", data: { by: "x", reason: "\udfff" }, prev: GENESIS })).toMatch(/^[0-9a-f]{64}$/);
    // Distinct inputs stay distinct: the escape is not the replacement character.
    expect(sha256Hex(canonicalJson("\ud800"))).not.toBe(sha256Hex(canonicalJson("\ufffd")));
    // Values built in memory that cannot be read: a getter that throws, a revoked proxy.
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    const throwing = Object.defineProperty({}, "a", {
      enumerable: true,
      get() {
        throw new Error("unreadable");
      },
    });
    expect(canonicalJson(throwing)).toBe("null");
    expect(canonicalJson({ p: proxy })).toBe("null");
  });

  it("keeps nothing of the keys it met beyond short ones: a client's long argument names cannot pile up in memory", () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    gc();
    gc();
    const before = process.memoryUsage().heapUsed;
    // 64 MiB of distinct keys, each seen once (as action arguments or tool-call arguments are).
    for (let i = 0; i < 1000; i++) expect(canonicalJson({ [`${i}:`.padEnd(64 * 1024, "k")]: 1 }).length).toBe(64 * 1024 + 6);
    // Twice: one full collection can leave what the last one freed for the next.
    gc();
    gc();
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(16 * 1024 * 1024);
  });

  it("logs exported before this change verify exactly, and their huge costs fold to finite numbers", () => {
    for (const name of ["old-1", "old-2", "old-3"]) {
      const text = readFileSync(join(FIXTURES, `${name}.ndjson`), "utf8");
      const r = auditNdjson(text);
      if (!r.ok) throw new Error(`${name}: ${r.reason} at ${r.seq}`);
      const lines = text.trim().split("\n").map((l) => JSON.parse(l));
      expect(r.head.hash).toBe(lines.at(-1).hash);
      for (const [k, v] of Object.entries(r.summary)) if (typeof v === "number") expect(Number.isFinite(v), `${name} ${k}`).toBe(true);
      expect(r.summary.spentUsd).not.toBeNull();
      expect(r.summary.reservedUsd).not.toBeNull();
    }
    const old1 = auditNdjson(readFileSync(join(FIXTURES, "old-1.ndjson"), "utf8"));
    expect(old1.ok && old1.state).toBe("killed");
    // 1e300 was accepted then (three times): each counts as the saturated maximum, never null.
    expect(old1.ok && old1.summary.spentUsd).toBeCloseTo(0.25 + (3 * Number.MAX_SAFE_INTEGER) / 1e9, 0);
  });
});

describe("money bounds", () => {
  it("nano-dollars are exact in bounds and saturate, never Infinity or NaN, beyond", () => {
    expect(toNanos(MAX_SESSION_USD)).toBe(1e15);
    expect(toNanos(0.1) * 10).toBe(toNanos(1));
    expect(toNanos(1e300)).toBe(Number.MAX_SAFE_INTEGER);
    expect(toNanos(Infinity)).toBe(Number.MAX_SAFE_INTEGER);
    expect(toNanos(NaN)).toBe(0);
    expect(Number.isFinite(toUsd(toNanos(1e300) * 3))).toBe(true);
    expect(toUsd(Infinity)).toBe(Number.MAX_SAFE_INTEGER / 1e9);
    // Every sum the actor can make of in-bound values stays below MAX_SAFE_INTEGER.
    expect(toNanos(MAX_SESSION_USD) * 3 + toNanos(MAX_EVENT_USD)).toBeLessThan(Number.MAX_SAFE_INTEGER);
  });

  it("refuses a cost above the per-event maximum and a session past its maximum", () => {
    expect(moneyLimit(0, toNanos(MAX_EVENT_USD))).toBeUndefined();
    expect(moneyLimit(0, toNanos(MAX_EVENT_USD + 0.01))?.rule).toBe("max_event_usd");
    expect(moneyLimit(toNanos(MAX_SESSION_USD - 1), toNanos(2))?.rule).toBe("max_session_usd");
    expect(ActionBody.safeParse({ action: "a", costUsd: 1e300 }).success).toBe(false);
    expect(ReportBody.safeParse({ type: "cost", usd: MAX_EVENT_USD + 1 }).success).toBe(false);
    expect(() => parsePolicy({ budget: { session_usd: 1e300 } })).toThrow(/policy\.budget\.session_usd/);
  });
});

describe("well-formed text at the edge", () => {
  it("finds the first lone surrogate, in values and keys, with its path", () => {
    expect(isWellFormed("\ud83d\ude00")).toBe(true);
    expect(isWellFormed("a\ud83d")).toBe(false);
    expect(toWellFormed("a\ud83db")).toBe("a\ufffdb");
    expect(truncate("ab\ud83d\ude00", 3)).toBe("ab");
    expect(utf8Length("é\ud83d\ude00\ud800")).toBe(2 + 4 + 3);
    expect(findBadText({ a: ["ok", { b: "x\udc00" }] })?.path).toEqual(["a", 1, "b"]);
    expect(findBadText({ ok: 1, ["k\ud800"]: 2 })?.message).toMatch(/key/);
  });

  it("every body schema refuses a lone surrogate naming the field", () => {
    const bad = "half \ud83d";
    const r = ActionBody.safeParse({ action: "a", args: { note: { deep: [bad] } } });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0].path).toEqual(["args", "note", "deep", 0]);
    expect(ActionBody.safeParse({ action: bad }).error?.issues[0].path).toEqual(["action"]);
    expect(ReportBody.safeParse({ type: "violation", kind: "pii", detail: bad }).error?.issues[0].path).toEqual(["detail"]);
    expect(ClientMessage.safeParse({ type: "approve", approvalId: "a", note: bad }).error?.issues[0].path).toEqual(["note"]);
    expect(AttributionHeaders.safeParse({ "X-User-ID": "u".repeat(1025) }).error?.issues[0].path).toEqual(["X-User-ID"]);
    expect(() => parsePolicy({ actions: { deny: [bad] } })).toThrow(/policy\.actions\.deny\.0/);
    expect(() => parsePolicy({ actions: { rules: { [`r${bad}`]: {} } } })).toThrow(/key/);
  });

  it("a kill's reason is replaced, never refused", () => {
    expect(killReason("stop")).toEqual({ reason: "stop" });
    const lone = killReason("half an emoji \ud83d");
    expect(lone.reason).toBe("half an emoji \ufffd");
    expect(lone.replaced).toMatch(/surrogate/);
    expect(killReason("x".repeat(5000)).reason.length).toBeLessThanOrEqual(1024);
    expect(killReason(42)).toMatchObject({ reason: "killed by an operator", replaced: expect.stringMatching(/number/) });
    expect(killRequest("{not json")).toMatchObject({ reason: "killed by an operator", replaced: expect.stringMatching(/not JSON/) });
    expect(killRequest("")).toEqual({ reason: "killed by an operator" });
    expect(ClientMessage.safeParse({ type: "kill", reason: { nested: "\ud800" } }).success).toBe(true);
  });
});

describe("policy patterns run on RE2", () => {
  it("refuses at parse time what RE2 cannot run, naming the field", () => {
    const at = (pattern: string) => () => parsePolicy({ actions: { rules: { refund: { account: { pattern } } } } });
    expect(at("^(?=AB)[A-Z]+$")).toThrow(/policy\.actions\.rules\.refund\.account\.pattern: is not an RE2 pattern/);
    expect(at("(a)\\1")).toThrow(/policy\.actions\.rules\.refund\.account\.pattern/);
    expect(at("[")).toThrow(/missing closing \]/);
    expect(at("(?:.{999}){3}")).toThrow(/pattern/);
    expect(at("(?:[a-z]{999}x){2}")).toThrow(/pattern/);
    expect(at(".{999}.{999}.{999}")).toThrow(new RegExp(`limit ${MAX_PATTERN_PROGRAM}`));
    expect(at("x".repeat(600))).toThrow(/longer than 512/);
    expect(parsePolicy({ actions: { rules: { refund: { account: { pattern: "^[A-Z]{2}[0-9]{8}$" } } } } }).actions.rules?.refund.account.pattern).toBe("^[A-Z]{2}[0-9]{8}$");
    // The nested quantifier is fine for RE2: it cannot backtrack.
    expect(parsePolicy({ actions: { rules: { "*": { "*": { pattern: "^(a+)+$" } } } } })).toBeTruthy();
  });

  it("bounds the lists and counts of a policy", () => {
    expect(() => parsePolicy({ actions: { rules: { x: { y: { forbidden: Array.from({ length: 65 }, (_, i) => `w${i}`) } } } } })).toThrow(/forbidden: at most 64/);
    expect(() => parsePolicy({ limits: { rate: [{ per: "session", max: 1e9, window: "1m" }] } })).toThrow(/limits\.rate\.0\.max/);
    expect(() => parsePolicy({ budget: { reservation_ttl: "99999999d" } })).toThrow(/reservation_ttl/);
    const many = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`a${i}`, { x: { pattern: `^${i}$` } }]));
    expect(() => parsePolicy({ actions: { rules: many } })).toThrow(/at most 32 patterns/);
  });

  it("a nested quantifier against a long adversarial argument answers within 50 ms", () => {
    const policy = parsePolicy({ actions: { rules: { "*": { "*": { pattern: "^(a+)+$" } } } } });
    const evil = `${"a".repeat(50_000)}!`;
    // CPU time of each check (what backtracking would spend), not wall time: see test/support/cpu.ts.
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      let v!: ReturnType<typeof checkArgs>;
      times.push(cpuMsOf(() => (v = checkArgs(policy, "search", { q: evil }))));
      expect(v.deny?.rule).toBe("actions.rules.*.*.pattern");
    }
    expect(median(times)).toBeLessThan(50);
    expect(checkArgs(policy, "search", { q: "aaaa" })).toEqual({});
  });

  it("refuses, rather than checks in part, arguments past the work bound", () => {
    const policy = parsePolicy({ actions: { rules: { "*": { "*": { pattern: "[a-z]{1,450}[0-9]" } } } } });
    const big = "ab".repeat(Math.ceil(MAX_CHECK_WORK / 1800));
    let v!: ReturnType<typeof checkArgs>;
    expect(cpuMsOf(() => (v = checkArgs(policy, "search", { q: big })))).toBeLessThan(200);
    expect(v.deny?.reason).toMatch(/too large to check/);
    const wide = parsePolicy({ actions: { rules: { "*": { "*": { forbidden: Array.from({ length: 64 }, (_, i) => `zz${i}`) } } } } });
    expect(checkArgs(wide, "a", { text: "x".repeat(300_000) }).deny?.reason).toMatch(/too large to check/);
    expect(checkArgs(wide, "a", { text: "x".repeat(1000) })).toEqual({});
  });

  it("a pattern that makes RE2's DFA thrash stays near the bound's time at the largest input it allows", () => {
    const policy = parsePolicy({ actions: { rules: { "*": { q: { pattern: "[a-z]{1,150}[0-9]|[a-y]{1,150}0|[b-z]{1,150}1" } } } } });
    const r = new Rng(seed);
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      // Just under the work bound for this pattern's ~900 instructions.
      const q = Array.from({ length: 560 }, () => String.fromCharCode(r.int(97, 122))).join("");
      let v!: ReturnType<typeof checkArgs>;
      times.push(cpuMsOf(() => (v = checkArgs(policy, "a", { q }))));
      expect(v.deny?.reason ?? "").not.toMatch(/too large/);
    }
    // ~50 ms of CPU; loose all the same.
    expect(median(times)).toBeLessThan(300);
  });

  it("a pattern stored before RE2 (a JavaScript lookahead) fails closed instead of throwing", () => {
    const stored = Policy.parse({ actions: { rules: { refund: { account: { pattern: "^(?=AB)[A-Z]{2}\\d+$" } } } } });
    const v = checkArgs(stored, "refund", { account: "AB12" });
    expect(v.deny?.rule).toBe("actions.rules.refund.account.pattern");
    expect(v.deny?.reason).toMatch(/cannot be checked in linear time/);
  });

  it("forbidden text is still found case-insensitively", () => {
    const p = parsePolicy({ actions: { rules: { "*": { "*": { forbidden: ["DROP TABLE"] } } } } });
    expect(checkArgs(p, "sql", { q: { nested: ["select 1; drop table users"] } }).deny?.rule).toBe("actions.rules.*.*.forbidden");
  });
});

describe("secrets in policies", () => {
  it("masks notification URLs and MCP header values, keeping the shape", () => {
    const policy = {
      notify: [{ slack: "https://hooks.slack.com/services/T0/B0/SECRET" }, { webhook: "https://user:pw@example.com/hook?token=abc" }],
      mcp: { servers: { files: { url: "https://mcp.example.com/sse?key=k", headers: { Authorization: "Bearer s3cr3t" } } } },
      budget: { session_usd: 1 },
    };
    const masked = JSON.stringify(maskPolicySecrets(policy));
    for (const secret of ["SECRET", "pw", "abc", "s3cr3t", "key=k"]) expect(masked).not.toContain(secret);
    expect(masked).toContain("hooks.slack.com");
    expect(masked).toContain('"session_usd":1');
    expect(maskPolicySecrets(null)).toBeNull();
    expect(JSON.stringify(maskDeliveries({ deliveries: [{ url: "https://hooks.slack.com/services/T/B/X", ok: true }] }))).not.toContain("/T/B/X");
  });
});
