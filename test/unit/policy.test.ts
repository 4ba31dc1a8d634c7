import { describe, expect, it } from "vitest";
import { parseDuration } from "../../lib/duration";
import { toNanos, toUsd } from "../../lib/money";
import { mergePolicies, parsePolicy } from "../../schema/policy";
import { authenticate } from "../../party/auth";

describe("policy parsing", () => {
  it("fills defaults and turns durations into milliseconds", () => {
    const p = parsePolicy({ limits: { max_duration: "30m", rate: [{ per: "user", max: 5, window: "1h" }] }, approval: { timeout: "90s" } });
    expect(p.limits.max_duration).toBe(1_800_000);
    expect(p.limits.rate?.[0].window).toBe(3_600_000);
    expect(p.approval).toMatchObject({ timeout: 90_000, on_timeout: "deny", while_pending: "refuse" });
    expect(p.runaway).toEqual({ growth_ratio: 1.4, consecutive: 3, window: 5, on_detect: "alert" });
    expect(p.budget).toMatchObject({ alert_at: 0.8, on_exceed: "deny", default_max_tokens: 4096, reservation_ttl: 600_000 });
    // A parsed policy parses to itself: what the log stores is what replay reads.
    expect(parsePolicy(p)).toEqual(p);
  });

  it("names the path of the first bad field", () => {
    expect(() => parsePolicy({ budget: { alert_at: 1.5 } })).toThrow(/policy\.budget\.alert_at/);
    expect(() => parsePolicy({ actions: { rules: { pay: { amount: { mx: 3 } } } } })).toThrow(/policy\.actions\.rules\.pay\.amount/);
  });

  it("merges a session's policy over the tenant default field by field; lists are replaced", () => {
    const merged = mergePolicies(
      { budget: { session_usd: 5, alert_at: 0.5 }, actions: { deny: ["rm", "dd"] } },
      { budget: { session_usd: 2 }, actions: { deny: ["curl"] } },
    );
    expect(merged).toEqual({ budget: { session_usd: 2, alert_at: 0.5 }, actions: { deny: ["curl"] } });
  });

  it("durations and money", () => {
    expect(parseDuration("250ms")).toBe(250);
    expect(parseDuration("1.5h")).toBe(5_400_000);
    expect(parseDuration("soon")).toBeUndefined();
    let sum = 0;
    for (let i = 0; i < 10; i++) sum += toNanos(0.1);
    expect(toUsd(sum)).toBe(1);
  });
});

describe("tokens", () => {
  const map = JSON.stringify({ "tok-aaaa-0001": { tenant: "acme", role: "agent" }, "tok-bbbb-0002": { tenant: "beta", role: "auditor", name: "eve" } });

  it("maps a token to its tenant and role, in either form", () => {
    expect(authenticate("tok-aaaa-0001", map)).toMatchObject({ tenant: "acme", role: "agent" });
    expect(authenticate("tok-bbbb-0002", map)).toEqual({ tenant: "beta", role: "auditor", name: "eve" });
    const list = JSON.stringify([{ token: "tok-cccc-0003", tenant: "gamma", role: "operator" }]);
    expect(authenticate("tok-cccc-0003", list)).toMatchObject({ tenant: "gamma", role: "operator" });
  });

  it("refuses unknown and missing tokens, and a deployment without GOVERNOR_TOKENS", () => {
    expect(() => authenticate("tok-aaaa-0002", map)).toThrow(/unknown token/);
    expect(() => authenticate(undefined, map)).toThrow(/missing token/);
    // Outside `partykit dev` there is no built-in dev token.
    expect(() => authenticate("dev", undefined)).toThrow(/GOVERNOR_TOKENS is not set/);
  });
});
