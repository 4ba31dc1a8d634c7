import type * as Party from "partykit/server";
import { GovernorError } from "../lib/errors";
import { ErasureBody } from "../schema/api";
import type { SessionSummary } from "../schema/protocol";
import { auditFetch, auditService } from "./audit-proxy";
import type { Principal } from "./auth";
import { callSession, callTenant } from "./calls";
import { json, parseJson, readText, validate } from "./http";
import type { EraseAnswer } from "./session/erasure";

// POST /v1/audit/erasures {user}: erasure of one person (GDPR Art. 17), for operators.
// 1. The tenant actor gives the subject's keyed digest (what logs and the store record
//    instead of the id) and forgets the subject's cross-session rate counts.
// 2. Which sessions to visit: those the audit store has the subject in, those the tenant's
//    index names with the subject as their user, and those the store has not read to their
//    end (the subject may be in what it has not read). Without an audit service: every
//    session of the tenant.
// 3. Each session actor deletes the subject's values beside its log and appends
//    `subject.redacted` (party/session/erasure.ts), and pushes its new summary to the index.
// 4. The audit service records the erasure (the digest only) and blanks its copies at once;
//    its sync applies the `subject.redacted` events too, so a copy it had not reached yet,
//    or a restored backup, is blanked when the sync gets there.

const AT_ONCE = 8;

interface Candidates {
  sessions: string[];
  /** The store's head per session. */
  stored: Record<string, number>;
}

export async function erasureRoute(req: Request, lobby: Party.FetchLobby, p: Principal): Promise<Response> {
  const env = lobby.env as Record<string, unknown>;
  const text = await readText(req);
  if (text.trim() && !(req.headers.get("content-type") ?? "").includes("json")) throw new GovernorError("bad_request", 400, "send the body as JSON (Content-Type: application/json)", { field: "body" });
  const { user } = validate(ErasureBody, parseJson(text));
  const store = auditService(env) !== undefined;
  // Asked before anything is erased: with the store unreachable nothing is, and the caller can try again.
  const fromStore = store ? await storeCandidates(env, p, user) : undefined;
  const { subject, rateKeys } = (await (await callTenant(lobby, p.tenant, { op: "subject", user })).json()) as { subject: string; rateKeys: number };
  const index = ((await (await callTenant(lobby, p.tenant, { op: "list" })).json()) as { sessions: SessionSummary[] }).sessions;

  const visit = new Set(fromStore?.sessions ?? []);
  for (const s of index) {
    if (!fromStore || s.user === user || (fromStore.stored[s.session] ?? 0) < s.seq) visit.add(s.session);
  }
  const erasure = `era_${crypto.randomUUID()}`;
  const answers = await inBatches([...visit], AT_ONCE, async (session) => {
    const res = await callSession(lobby, p, session, { op: "erase", user, subject, erasure });
    if (res.status === 404) {
      await res.body?.cancel();
      return undefined;
    }
    if (!res.ok) throw new GovernorError("internal_error", 502, `session ${session} did not complete the erasure (${res.status}): ${(await res.text()).slice(0, 200)}; erasing again is safe`);
    return (await res.json()) as EraseAnswer;
  });
  const touched = answers.filter((a): a is EraseAnswer => a !== undefined && (a.erased.length > 0 || a.kept.length > 0 || a.appended.length > 0));

  let recorded: unknown = null;
  if (store) {
    const res = await auditFetch(env, p, "erasures", {
      method: "POST",
      body: JSON.stringify({ erasure, subject, user, sessions: touched.map((a) => ({ session: a.session, erased: a.erased })) }),
    });
    recorded = await res.json().catch(() => null);
    if (!res.ok) throw new GovernorError("audit_unavailable", 503, `the actors' logs are erased, but the audit store did not record it (${res.status}); erasing again is safe`);
  }
  return json({
    erasure,
    subject,
    values: touched.reduce((n, a) => n + a.values, 0),
    sessions: touched.map((a) => ({ session: a.session, erased: a.erased, values: a.values, kept: a.kept, appended: a.appended })),
    kept: touched.filter((a) => a.kept.length).map((a) => ({ session: a.session, seqs: a.kept })),
    visited: visit.size,
    rateKeys,
    store: recorded,
  });
}

async function storeCandidates(env: Record<string, unknown>, p: Principal, user: string): Promise<Candidates> {
  const res = await auditFetch(env, p, "erasures/candidates", { method: "POST", body: JSON.stringify({ user }) });
  if (!res.ok) throw new GovernorError("audit_unavailable", 503, `the audit service could not say where the subject is (${res.status}); nothing was erased`);
  return (await res.json()) as Candidates;
}

async function inBatches<T, U>(items: T[], size: number, fn: (t: T) => Promise<U>): Promise<U[]> {
  const out: U[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(size, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]);
      }
    }),
  );
  return out;
}
