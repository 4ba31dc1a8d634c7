import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decideAction, decideApproval, decideReport, type Decision } from "../../machines/decide";
import { appendDrafts, EMPTY_HEAD } from "../../machines/log";
import { initialSnapshot, stateOf } from "../../machines/session";
import { summarize } from "../../machines/summary";
import type { GovernorEvent } from "../../schema/events";
import { parsePolicy } from "../../schema/policy";

// The CLI as users run it (a child process through the bin shim), against logs built by
// the same functions the actor uses, so a passing replay means the chain format agrees.

const ROOT = resolve(import.meta.dirname, "../..");
const BIN = join(ROOT, "sdk/bin/governor.js");
const run = promisify(execFile);

async function governor(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { cwd: ROOT });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

function buildLog() {
  let snapshot = initialSnapshot();
  let head = EMPTY_HEAD;
  let now = 1_700_000_000_000;
  const log: GovernorEvent[] = [];
  const view = () => ({ state: stateOf(snapshot), context: snapshot.context });
  const apply = (d: Decision) => {
    const r = appendDrafts(snapshot, head, d.drafts, (now += 1000));
    snapshot = r.snapshot;
    head = r.head;
    log.push(...r.events);
    return d.verdict;
  };
  const policy = parsePolicy({ budget: { session_usd: 2, alert_at: 0.5 }, actions: { rules: { refund: { amount: { require_approval_above: 100 } } } } });
  apply({ drafts: [{ type: "session.opened", id: "open", data: { tenant: "acme", session: "s1", policy } }], verdict: { decision: "allow" } });
  const action = (id: string, name: string, costUsd: number, args: Record<string, unknown> = {}) =>
    apply(decideAction(view(), { id, action: name, args, argsHash: "h", costUsd, attribution: {} }, now));
  action("a1", "search", 0.25);
  action("a2", "search", 0.5);
  apply(decideReport(view(), { id: "c1", type: "cost", usd: 0.125 }, now));
  const review = action("a3", "refund", 0.375, { amount: 500 });
  apply(decideApproval(view(), { approvalId: review.approvalId!, decision: "approve", by: "alice" }, now)!);
  action("a4", "search", 0.0625);
  return { log, summary: summarize(snapshot) };
}

let dir: string;
const { log, summary } = buildLog();
const lines = log.map((e) => JSON.stringify(e));
const replaced = (ls: string[], i: number, line: string) => ls.map((l, j) => (j === i ? line : l));
const file = (name: string, ls: string[]) => {
  const p = join(dir, name);
  writeFileSync(p, `${ls.join("\n")}\n`);
  return p;
};

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "governor-replay-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("governor replay <file>", () => {
  it("verifies an intact log and prints state, spend, count and head", async () => {
    expect(summary.spentUsd).toBe(1.3125);
    const r = await governor("replay", file("ok.ndjson", lines));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/state\s+alerting/);
    expect(r.stdout).toMatch(/spent\s+\$1\.3125 of \$2\.00 \(remaining \$0\.6875\)/);
    expect(r.stdout).toMatch(new RegExp(`events\\s+${log.length}\\b`));
    expect(r.stdout).toContain(log.at(-1)!.hash);

    const j = await governor("replay", file("ok.ndjson", lines), "--json");
    expect(j.code).toBe(0);
    expect(JSON.parse(j.stdout)).toMatchObject({ ok: true, state: "alerting", spentUsd: 1.3125, events: log.length, head: { seq: log.length, hash: log.at(-1)!.hash } });
  });

  it("names the seq of an event whose cost was edited by one byte", async () => {
    const target = log.find((e) => e.type === "action.checked" && e.data.costUsd === 0.5)!;
    const i = target.seq - 1;
    const edited = lines[i].replace('"costUsd":0.5', '"costUsd":0.6');
    expect(edited).not.toBe(lines[i]);
    expect(edited.length).toBe(lines[i].length);
    const r = await governor("replay", file("edited.ndjson", replaced(lines, i, edited)));
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`seq ${target.seq}\\b.*hash does not match`));
    const j = await governor("--json", "replay", file("edited.ndjson", replaced(lines, i, edited)));
    expect(JSON.parse(j.stdout)).toMatchObject({ ok: false, seq: target.seq });
  });

  it("detects a deleted line and swapped lines", async () => {
    const del = await governor("replay", file("deleted.ndjson", lines.filter((_, j) => j !== 3)));
    expect(del.code).toBe(1);
    expect(del.stdout).toMatch(/seq 5\b.*expected sequence 4/);

    const swapped = lines.slice();
    [swapped[2], swapped[3]] = [swapped[3], swapped[2]];
    const sw = await governor("replay", file("swapped.ndjson", swapped));
    expect(sw.code).toBe(1);
    expect(sw.stdout).toMatch(/seq 4\b.*expected sequence 3/);
  });

  it("a line broken into invalid JSON still names its seq", async () => {
    const broken = replaced(lines, 2, lines[2].replace("{", "["));
    const r = await governor("replay", file("broken.ndjson", broken));
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/seq 3 \(line 3\).*not valid JSON/);
  });

  it("a re-hashed edit is caught by the next event's link", async () => {
    // Someone who recomputes the edited event's hash still cannot fix the chain after it.
    const { eventHash } = await import("../../lib/chain");
    const e = structuredClone(log[1]) as GovernorEvent & { data: { costUsd: number } };
    e.data.costUsd = 0;
    e.hash = eventHash(e);
    const r = await governor("replay", file("rehashed.ndjson", replaced(lines, 1, JSON.stringify(e))));
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/seq 3\b.*prev does not match/);
  });

  it("usage errors exit 2", async () => {
    expect((await governor("replay")).code).toBe(2);
    expect((await governor("replay", join(dir, "missing.ndjson"))).code).toBe(2);
    expect((await governor("replay", "x", "--session", "y")).code).toBe(2);
    expect((await governor("nope")).code).toBe(2);
  });
});
