import { reveal } from "../../lib/pii";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isCheckpointLine } from "../../lib/checkpoint";
import { client, startGovernor, TOKENS, type Governor } from "../support/server";
import { until } from "../support/until";

// An action waiting for a human carries every argument the agent sent, though the log keeps
// only the one its rule reads: the actor holds them beside the log while the approval is
// pending (also across a restart), shows them to operators and auditors, and drops them
// once it is decided or the session ends.

let gov: Governor;
const run = Date.now().toString(36);
let n = 0;
const sid = (name: string) => `${name}-${run}-${n++}`;
const op = () => client(gov.url, TOKENS.operator);
const auditor = () => client(gov.url, TOKENS.auditor);
const agent = () => client(gov.url, TOKENS.agent);

const POLICY = { budget: { session_usd: 10_000 }, actions: { rules: { wire_transfer: { amount: { require_approval_above: 1000 } } } } };
const MEMO = `Invoice 2211 of 14 March, second of three instalments; ${"the customer confirmed by phone and by e-mail that the beneficiary changed banks. ".repeat(60)}`;
const ARGS = {
  amount: 4200,
  currency: "EUR",
  beneficiary: { name: "Müller & Söhne GmbH", iban: "DE89370400440532013000", address: { street: "Hauptstraße 5", city: "Köln", country: "DE" } },
  memo: MEMO,
  lines: [
    { invoice: "2211-1", amount: 1400 },
    { invoice: "2211-2", amount: 2800 },
  ],
  urgent: true,
  approvedBy: null,
};

async function logOf(id: string) {
  const res = await op()(`/v1/sessions/${id}/log?limit=10000`);
  return res.text.trim().split("\n").map((l) => JSON.parse(l)).filter((l) => !isCheckpointLine(l));
}

async function open(policy: unknown = POLICY) {
  const id = sid("held");
  const r = await op()("/v1/sessions", { body: { id, policy, agent: "payments-bot", user: "ines" } });
  expect(r.status, r.text).toBe(201);
  return id;
}

async function review(id: string, args: unknown) {
  const r = await agent()(`/v1/sessions/${id}/actions`, { body: { action: "wire_transfer", args, costUsd: 0.5 } });
  expect(r.json.decision, r.text).toBe("review");
  return r.json.approvalId as string;
}

describe("held arguments of pending approvals", () => {
  beforeAll(async () => {
    gov = await startGovernor();
  });
  afterAll(async () => {
    await gov?.stop();
  });

  it("shows every argument as sent to operators and auditors, keeps them across a restart, and drops them once decided", { timeout: 90_000 }, async () => {
    const id = await open();
    const aid = await review(id, ARGS);

    // The log keeps the argument the rule read, and the memo nowhere.
    const requested = (await logOf(id)).find((e) => e.type === "approval.requested");
    expect(reveal(requested.data, requested.pii).args).toEqual({ amount: 4200 });
    expect(JSON.stringify(await logOf(id))).not.toContain("beneficiary changed banks");

    // Operators and auditors see all of it, nested values and the long string included.
    for (const c of [op(), auditor()]) {
      const s = (await c(`/v1/sessions/${id}`)).json;
      expect(s.pendingApprovals[0]).toMatchObject({ approvalId: aid, action: "wire_transfer", argsFull: true });
      expect(s.pendingApprovals[0].args).toEqual(ARGS);
      expect(s.pendingApprovals[0].argsBytes).toBe(Buffer.byteLength(JSON.stringify(ARGS)));
    }
    // So does the tenant's index (the console's approvals come from it).
    const listed = await until(
      async () => (await op()(`/v1/sessions?agent=payments-bot`)).json.sessions.find((s: { session: string }) => s.session === id),
      (s) => s?.pendingApprovals?.[0]?.argsFull === true,
    );
    expect(listed.pendingApprovals[0].args).toEqual(ARGS);
    // An agent's token gets what the log keeps, as before.
    const seenByAgent = (await agent()(`/v1/sessions/${id}`)).json.pendingApprovals[0];
    expect(seenByAgent.args).toEqual({ amount: 4200 });
    expect(seenByAgent.argsFull).toBeUndefined();
    expect((await agent()(`/v1/sessions/${id}/approvals/${aid}`)).status).toBe(403);

    // A restart: the actor finds them again.
    await gov.stop({ keepStorage: true });
    gov = await startGovernor({ persist: gov.persist });
    const after = (await op()(`/v1/sessions/${id}`)).json.pendingApprovals[0];
    expect(after.args).toEqual(ARGS);
    expect(after.argsFull).toBe(true);

    // Decided: gone from the summary and from the route; the decision is the agent's answer.
    const decided = await op()(`/v1/sessions/${id}/approvals/${aid}`, { body: { decision: "approve", note: "checked the IBAN" } });
    expect(decided.json.decision).toBe("allow");
    expect((await op()(`/v1/sessions/${id}`)).json.pendingApprovals).toEqual([]);
    expect((await op()(`/v1/sessions/${id}/approvals/${aid}`)).status).toBe(404);
    // The session's end drops what a review still held.
    const aid2 = await review(id, { ...ARGS, memo: "short" });
    expect((await op()(`/v1/sessions/${id}/approvals/${aid2}`)).json.args.memo).toBe("short");
    await op()(`/v1/sessions/${id}/kill`, { body: { reason: "done" } });
    expect((await op()(`/v1/sessions/${id}/approvals/${aid2}`)).status).toBe(404);
  });

  it("names arguments too large for a summary by their size and gives them whole on the approval's route", { timeout: 30_000 }, async () => {
    const id = await open();
    // 300 KB over ten parts of storage, nested.
    const big = { amount: 5000, attachments: Array.from({ length: 10 }, (_, i) => ({ name: `scan-${i}.txt`, text: `${i}`.repeat(30_000) })) };
    const aid = await review(id, big);
    const s = (await op()(`/v1/sessions/${id}`)).json.pendingApprovals[0];
    expect(s.argsFull).toBe(false);
    expect(s.argsBytes).toBe(Buffer.byteLength(JSON.stringify(big)));
    expect(s.args).toEqual({ amount: 5000 });
    const whole = await auditor()(`/v1/sessions/${id}/approvals/${aid}`);
    expect(whole.status, whole.text).toBe(200);
    expect(whole.json).toMatchObject({ approvalId: aid, argsFull: true });
    expect(whole.json.args).toEqual(big);
    expect((await op()(`/v1/sessions/${id}/approvals/apr_999`)).status).toBe(404);
    const denied = await op()(`/v1/sessions/${id}/approvals/${aid}`, { body: { decision: "deny" } });
    expect(denied.json.decision).toBe("deny");
    expect((await op()(`/v1/sessions/${id}/approvals/${aid}`)).status).toBe(404);
  });

  it("holds at most 8 MiB of pending arguments per session: past it, the log's fields only", { timeout: 60_000 }, async () => {
    const id = await open();
    const doc = (i: number) => ({ amount: 2000 + i, scan: `${i}`.repeat(950_000) });
    const ids: string[] = [];
    for (let i = 0; i < 9; i++) ids.push(await review(id, doc(i)));
    const pending = (await op()(`/v1/sessions/${id}`)).json.pendingApprovals as Array<{ approvalId: string; argsFull: boolean; argsBytes?: number; args: unknown }>;
    expect(pending.map((p) => p.argsBytes !== undefined)).toEqual([...Array(8).fill(true), false]);
    expect(pending[8]).toMatchObject({ argsFull: false, args: { amount: 2008 } });
    expect((await op()(`/v1/sessions/${id}/approvals/${ids[7]}`)).json.args).toEqual(doc(7));
    // Deciding one makes room again.
    await op()(`/v1/sessions/${id}/approvals/${ids[0]}`, { body: { decision: "deny" } });
    const next = await review(id, doc(9));
    expect((await op()(`/v1/sessions/${id}/approvals/${next}`)).json).toMatchObject({ argsFull: true, argsBytes: Buffer.byteLength(JSON.stringify(doc(9))) });
  });

  it("with keep_raw the log itself keeps them whole, and the summary says they are all there", { timeout: 30_000 }, async () => {
    const id = await open({ ...POLICY, keep_raw: true });
    await review(id, ARGS);
    const requested = (await logOf(id)).find((e) => e.type === "approval.requested");
    expect(reveal(requested.data, requested.pii).args).toEqual(ARGS);
    const s = (await op()(`/v1/sessions/${id}`)).json.pendingApprovals[0];
    expect(s.args).toEqual(ARGS);
    expect(s.argsFull).toBe(true);
  });
});
