import { performance } from "node:perf_hooks";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openDatabase } from "./audit/db";
import { prepare, emptyCursor } from "./audit/ingest";
import { AuditStore } from "./audit/store";
import { eventHash, GENESIS } from "./lib/chain";
import { parsePolicy } from "./schema/policy";
const POLICY = parsePolicy({ budget: { session_usd: 100 } });
function sessionLog(i: number): unknown[] {
  const session = `s-${i}`; let ts = Date.now() - 1e8; let prev = GENESIS; const out: unknown[] = [];
  const push = (seq: number, id: string, type: string, data: unknown) => { const base = { seq, id, ts: (ts += 250), type, data, prev }; const e = { ...base, hash: eventHash(base) }; prev = e.hash; out.push(e); };
  push(1, `open:${session}`, "session.opened", { tenant: "b", session, policy: POLICY, user: `u${i}`, agent: "a" });
  for (let seq = 2; seq <= 500; seq++) push(seq, `action:${session}-${seq}`, "action.checked", { requestId: `${session}-${seq}`, action: "search", argsHash: "9f".repeat(32), decision: "allow", costUsd: 0.0001 * (1 + (seq % 7)), attribution: { run: `run-${seq % 5}`, action: "search" } });
  return out;
}
const logs = Array.from({ length: 40 }, (_, i) => JSON.parse(JSON.stringify(sessionLog(i))));
let t = performance.now();
const preps = logs.map((l, i) => prepare("b", `s-${i}`, emptyCursor(), l));
const prepMs = performance.now() - t;
console.log("prepare us/event", (prepMs * 1000 / 20000).toFixed(2));
const store = new AuditStore(await openDatabase({ dir: mkdtempSync(join(tmpdir(), "prof-")) }));
t = performance.now();
for (let i = 0; i < preps.length; i++) await store.append("b", `s-${i}`, 0, preps[i]);
console.log("append us/event", ((performance.now() - t) * 1000 / 20000).toFixed(2));
await store.close();
