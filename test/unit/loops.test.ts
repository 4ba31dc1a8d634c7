import { describe, expect, it } from "vitest";
import { canonicalJson, sha256Hex } from "../../lib/chain";
import { decideAction, decideApproval, decideReport, decideReserve, decideSettle, type Decision } from "../../machines/decide";
import { levelFor, repeatConfig } from "../../machines/loops";
import { replay, restore, stateOf, step } from "../../machines/session";
import { GovernorEvent, type SeenToolCall } from "../../schema/events";
import { Policy, parsePolicy } from "../../schema/policy";
import { FoldedSession } from "../support/folded";

// Loop detection by repetition, as pure functions of the folded log.

// Every event a millisecond after the last.
class Sim extends FoldedSession {
  override apply(d: Decision) {
    const verdict = super.apply(d);
    this.now++;
    return verdict;
  }
  action(action: string, args: Record<string, unknown> = {}) {
    return this.apply(decideAction(this.view, { id: `a${this.log.length}`, action, args, argsHash: sha256Hex(canonicalJson(args)), costUsd: 0, attribution: {} }, this.now));
  }
  error(action: string, message: string) {
    return this.apply(decideReport(this.view, { id: `e${this.log.length}`, type: "error", action, code: "E", message }, this.now));
  }
  reserve(toolCalls?: SeenToolCall[]) {
    const requestId = `r${this.log.length}`;
    const v = this.apply(
      decideReserve(this.view, { requestId, provider: "openai", model: "gpt-4o", path: "v1/chat/completions", estimateUsd: 0.01, priced: true, promptTokens: 100, maxOutputTokens: 10, attribution: {}, toolCalls }, this.now),
    );
    return { ...v, requestId };
  }
  settle(requestId: string, error?: { code: string; message?: string }) {
    return this.apply(decideSettle(this.view, { requestId, costUsd: error ? 0 : 0.001, outcome: error ? "released" : "completed", error }, this.now)!);
  }
  anomalies() {
    return this.log.filter((e) => e.type === "anomaly.detected").map((e) => e.data as Record<string, unknown>);
  }
}

const tc = (key: string, name = "search", args: unknown = { q: "x" }): SeenToolCall => ({ key, name, argsHash: sha256Hex(canonicalJson(args)) });

describe("repeat policy", () => {
  it("is off unless set; on_detect defaults to runaway.on_detect, where off turns it off too", () => {
    expect(repeatConfig(parsePolicy({}))).toBeUndefined();
    expect(repeatConfig(parsePolicy({ runaway: { repeat: { same_call: 5 } } }))).toEqual({ sameCall: 5, sameError: undefined, window: 10, onDetect: "alert", escalate: true });
    expect(repeatConfig(parsePolicy({ runaway: { on_detect: "kill", repeat: { same_call: 12 } } }))).toMatchObject({ onDetect: "kill", window: 12 });
    expect(repeatConfig(parsePolicy({ runaway: { on_detect: "off", repeat: { same_error: 3 } } }))).toBeUndefined();
    expect(repeatConfig(parsePolicy({ runaway: { on_detect: "off", repeat: { same_error: 3, on_detect: "review" } } }))).toMatchObject({ onDetect: "review" });
  });

  it("refuses settings that could never fire, naming the field", () => {
    expect(() => parsePolicy({ runaway: { repeat: {} } })).toThrow(/policy.runaway.repeat.same_call: set same_call, same_error or both/);
    expect(() => parsePolicy({ runaway: { repeat: { same_call: 5, window: 4 } } })).toThrow(/policy.runaway.repeat.window: window must be at least same_call/);
    expect(() => parsePolicy({ runaway: { repeat: { same_call: 1 } } })).toThrow(/policy.runaway.repeat.same_call/);
    expect(() => parsePolicy({ runaway: { repeat: { same_call: 3, on_detect: "off" } } })).toThrow(/policy.runaway.repeat.on_detect/);
  });

  it("climbs the ladder one step per detection from on_detect, unless escalate is false", () => {
    const cfg = repeatConfig(parsePolicy({ runaway: { repeat: { same_call: 3 } } }))!;
    expect([0, 1, 2, 3].map((d) => levelFor(cfg, d))).toEqual(["alert", "review", "kill", "kill"]);
    expect(levelFor({ ...cfg, onDetect: "review" }, 0)).toBe("review");
    expect(levelFor({ ...cfg, escalate: false }, 5)).toBe("alert");
  });
});

describe("the same call again and again", () => {
  it("trips on the same_call-th identical call within the window; other arguments or calls outside it do not count", () => {
    const s = new Sim({ runaway: { repeat: { same_call: 3, window: 4 } } });
    // Key order does not make a different call.
    s.action("search", { q: "a", page: 1 });
    s.action("search", { page: 1, q: "a" });
    s.action("search", { q: "b", page: 1 });
    expect(s.anomalies()).toHaveLength(0);
    const v = s.action("search", { q: "a", page: 1 });
    expect(v.decision).toBe("allow");
    expect(s.anomalies()).toEqual([expect.objectContaining({ kind: "repeat_call", rule: "runaway.repeat.same_call", onDetect: "alert", action: "search", count: 3 })]);
    expect(s.state).toBe("alerting");

    const t = new Sim({ runaway: { repeat: { same_call: 3, window: 4 } } });
    for (let i = 0; i < 3; i++) for (const q of ["a", "b", "c", "d"]) t.action("search", { q });
    expect(t.anomalies()).toHaveLength(0);
  });

  it("escalates: alert, then review (an operator decides), then kill, which refuses the call", () => {
    const s = new Sim({ runaway: { repeat: { same_call: 2 } } });
    s.action("poll");
    expect(s.action("poll").decision).toBe("allow");
    s.action("poll");
    const review = s.action("poll");
    expect(review).toMatchObject({ decision: "review", rule: "runaway.repeat.same_call" });
    expect(s.state).toBe("awaiting-approval");
    s.apply(decideApproval(s.view, { approvalId: review.approvalId!, decision: "approve", by: "alice" }, s.now)!);
    s.action("poll");
    const killed = s.action("poll");
    expect(killed).toMatchObject({ decision: "deny", code: "session_killed", rule: "runaway.repeat.same_call" });
    expect(s.state).toBe("killed");
    expect(s.anomalies().map((a) => a.onDetect)).toEqual(["alert", "review", "kill"]);
    expect(s.action("other")).toMatchObject({ decision: "deny", code: "session_killed", rule: "session.killed" });
  });

  it("counts refused calls too: an agent stuck on a denied tool is looping", () => {
    const s = new Sim({ actions: { deny: ["rm"] }, runaway: { repeat: { same_call: 3, on_detect: "kill" } } });
    expect(s.action("rm").rule).toBe("actions.deny");
    expect(s.action("rm").rule).toBe("actions.deny");
    expect(s.action("rm")).toMatchObject({ decision: "deny", rule: "runaway.repeat.same_call" });
    expect(s.state).toBe("killed");
  });

  it("escalate: false stays at on_detect", () => {
    const s = new Sim({ runaway: { repeat: { same_call: 2, escalate: false } } });
    for (let i = 0; i < 8; i++) expect(s.action("poll").decision).toBe("allow");
    expect(s.anomalies().map((a) => a.onDetect)).toEqual(["alert", "alert", "alert", "alert"]);
  });
});

describe("tool calls seen in proxied LLM requests", () => {
  it("counts each call once, however often its history is re-sent, and kills the call that completes the loop", () => {
    const s = new Sim({ runaway: { repeat: { same_call: 3, on_detect: "kill" } } });
    expect(s.reserve([tc("call_1")]).decision).toBe("allow");
    // A retry re-sends the same turn: not a new call.
    expect(s.reserve([tc("call_1")]).decision).toBe("allow");
    expect(s.reserve([tc("call_2")]).decision).toBe("allow");
    expect(s.anomalies()).toHaveLength(0);
    const r = s.reserve([tc("call_3")]);
    expect(r).toMatchObject({ decision: "deny", code: "session_killed", rule: "runaway.repeat.same_call" });
    expect(s.state).toBe("killed");
    const denied = s.log.find((e) => e.type === "request.denied");
    expect(denied?.data).toMatchObject({ requestId: r.requestId, rule: "runaway.repeat.same_call" });
  });

  it("review refuses the model call and asks an operator about the loop", () => {
    const s = new Sim({ runaway: { repeat: { same_call: 2, on_detect: "review" } } });
    s.reserve([tc("c1", "lookup")]);
    const r = s.reserve([tc("c2", "lookup")]);
    expect(r).toMatchObject({ decision: "deny", code: "awaiting_approval", rule: "runaway.repeat.same_call" });
    expect(s.state).toBe("awaiting-approval");
    const pending = Object.values(s.view.context.approvals);
    expect(pending).toEqual([expect.objectContaining({ action: "lookup", rule: "runaway.repeat.same_call", costUsd: 0 })]);
  });

  it("actions and model-visible calls keep separate windows, so one loop seen both ways is not counted twice", () => {
    const s = new Sim({ runaway: { repeat: { same_call: 3 } } });
    s.action("search", { q: "x" });
    s.reserve([tc("k1", "search", { q: "x" })]);
    s.action("search", { q: "x" });
    s.reserve([tc("k2", "search", { q: "x" })]);
    expect(s.anomalies()).toHaveLength(0);
  });
});

describe("the same upstream error again and again", () => {
  it("trips on same_error identical errors in a row; a different error breaks the run", () => {
    const s = new Sim({ runaway: { repeat: { same_error: 3 } } });
    s.error("fetch", "timeout");
    s.error("fetch", "timeout");
    s.error("fetch", "refused");
    s.error("fetch", "timeout");
    s.error("fetch", "timeout");
    expect(s.anomalies()).toHaveLength(0);
    s.error("fetch", "timeout");
    expect(s.anomalies()).toEqual([expect.objectContaining({ kind: "repeat_error", rule: "runaway.repeat.same_error", count: 3, action: "fetch" })]);
  });

  it("counts failed model calls as LLM errors; a call that works ends the run", () => {
    const s = new Sim({ runaway: { repeat: { same_error: 2, on_detect: "kill" } } });
    s.settle(s.reserve().requestId, { code: "500 server_error", message: "boom" });
    s.settle(s.reserve().requestId);
    s.settle(s.reserve().requestId, { code: "500 server_error", message: "boom" });
    expect(s.state).toBe("active");
    s.settle(s.reserve().requestId, { code: "500 server_error", message: "boom" });
    expect(s.state).toBe("killed");
    const errors = s.log.filter((e) => e.type === "error.recorded");
    expect(errors.map((e) => e.data)).toEqual(Array(3).fill(expect.objectContaining({ source: "llm", action: "gpt-4o", code: "500 server_error" })));
    expect(JSON.stringify(errors)).not.toContain("boom");
    expect(s.view.context.killed?.rule).toBe("runaway.repeat.same_error");
  });

  it("asks for one review of the loop at a time", () => {
    const s = new Sim({ runaway: { repeat: { same_error: 2, on_detect: "review", escalate: false } } });
    for (let i = 0; i < 6; i++) s.error("fetch", "timeout");
    expect(s.anomalies()).toHaveLength(3);
    expect(s.log.filter((e) => e.type === "approval.requested")).toHaveLength(1);
  });
});

describe("replay", () => {
  it("folding the log gives the live state, loops included", () => {
    const s = new Sim({ runaway: { repeat: { same_call: 3, same_error: 2 } } });
    s.action("a");
    s.action("a");
    s.reserve([tc("k1")]);
    s.error("x", "y");
    s.action("a");
    const replayed = replay(s.log.map((e) => GovernorEvent.parse(JSON.parse(JSON.stringify(e)))));
    expect(replayed.context).toEqual(s.snapshot.context);
    expect(stateOf(replayed)).toBe(s.state);
  });

  it("old logs and snapshots still work: a runaway anomaly parses, a context without loop state folds on", () => {
    const s = new Sim({ runaway: { consecutive: 1, window: 2 } });
    s.reserve();
    s.apply(decideReserve(s.view, { requestId: "big", provider: "openai", model: "gpt-4o", path: "v1/chat/completions", estimateUsd: 0.01, priced: true, promptTokens: 1000, maxOutputTokens: 10, attribution: {} }, s.now));
    const old = s.log.find((e) => e.type === "anomaly.detected")!;
    expect(GovernorEvent.parse(JSON.parse(JSON.stringify(old))).data).toMatchObject({ kind: "runaway", promptTokens: [100, 1000], onDetect: "alert" });
    const { loops: _gone, ...before } = s.snapshot.context;
    const restored = restore(stateOf(s.snapshot), { ...before, policy: Policy.parse({ runaway: { repeat: { same_call: 2 } } }) });
    const next = step(restored, { ...s.log.at(-1)!, seq: s.head.seq + 1, type: "action.checked", data: { requestId: "x", action: "a", argsHash: "h", decision: "allow", costUsd: 0, attribution: {} } } as GovernorEvent);
    expect(next.context.loops?.calls).toHaveLength(1);
  });
});
