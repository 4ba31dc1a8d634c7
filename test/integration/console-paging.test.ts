import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { client, startGovernor, TOKENS, type Governor } from "../support/server";
import { until } from "../support/until";

// `GET /v1/sessions` paging and filters against a real server: the index the console's
// sessions view walks. Sessions keep changing while a client pages through them.

let gov: Governor;
let op: ReturnType<typeof client>;
const run = `pg${Date.now().toString(36)}`;
const AGENTS = ["triage", "refunds", "search"];
const USERS = ["ann", "bob"];
const N = 24;

interface Opened {
  id: string;
  agent: string;
  user: string;
  openedAt: number;
}
const opened: Opened[] = [];

/** Every page of a query, following nextCursor; `between` runs after each page. */
async function walk(query: string, between: (page: number) => Promise<void> = async () => {}) {
  const ids: string[] = [];
  const totals: number[] = [];
  let cursor: string | null = null;
  for (let page = 0; ; page++) {
    const r = await op(`/v1/sessions?${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    expect(r.status, r.text).toBe(200);
    ids.push(...r.json.sessions.map((s: { session: string }) => s.session));
    totals.push(r.json.total);
    cursor = r.json.nextCursor;
    if (!cursor) return { ids, totals, pages: page + 1 };
    await between(page);
  }
}

const mine = (ids: string[]) => ids.filter((id) => id.startsWith(run));
const expectedOrder = (list: Opened[]) => [...list].sort((a, b) => b.openedAt - a.openedAt || (a.id < b.id ? -1 : 1)).map((o) => o.id);

describe("GET /v1/sessions paging", () => {
  beforeAll(async () => {
    gov = await startGovernor();
    op = client(gov.url, TOKENS.operator);
    for (let i = 0; i < N; i++) {
      const id = `${run}-${String(i).padStart(2, "0")}`;
      const agent = AGENTS[i % AGENTS.length];
      const user = USERS[i % USERS.length];
      const r = await op("/v1/sessions", { body: { id, agent, user, policy: { budget: { session_usd: 10 } } } });
      expect(r.status).toBe(201);
      opened.push({ id, agent, user, openedAt: r.json.openedAt });
    }
    // The index is fed by the session actors in the background.
    await until(() => op(`/v1/sessions?limit=500`), (r) => mine(r.json.sessions.map((s: { session: string }) => s.session)).length === N);
  });

  afterAll(async () => {
    await gov?.stop();
  });

  it("walks every session exactly once, newest opened first, while sessions update and new ones open", async () => {
    const kills: Promise<unknown>[] = [];
    const walked = await walk("limit=5", async (page) => {
      // Activity between pages: spend, a kill, a new session. None may move a session across the cursor.
      const target = opened[(page * 7) % N].id;
      await op(`/v1/sessions/${target}/actions`, { body: { action: "lookup", costUsd: 0.25 } });
      if (page === 1) kills.push(op(`/v1/sessions/${opened[N - 1].id}/kill`, { body: { reason: "paging test" } }));
      await op("/v1/sessions", { body: { id: `${run}-late-${page}`, agent: "late" } });
    });
    await Promise.all(kills);
    const seen = walked.ids.filter((id) => opened.some((o) => o.id === id));
    expect(seen).toEqual(expectedOrder(opened));
    expect(new Set(walked.ids).size).toBe(walked.ids.length);
    expect(walked.pages).toBeGreaterThanOrEqual(5);
  });

  it("filters by state, agent, user and time, with the total of all matches", async () => {
    const r = await op(`/v1/sessions?agent=refunds&user=bob&limit=2`);
    const want = expectedOrder(opened.filter((o) => o.agent === "refunds" && o.user === "bob"));
    expect(r.json.total).toBe(want.length);
    expect(r.json.sessions.map((s: { session: string }) => s.session)).toEqual(want.slice(0, 2));
    expect((await walk("agent=refunds&user=bob&limit=2")).ids).toEqual(want);

    const killed = await until(() => op(`/v1/sessions?state=killed`), (x) => x.json.total >= 1);
    expect(killed.json.sessions.map((s: { session: string }) => s.session)).toContain(opened[N - 1].id);
    expect(killed.json.sessions.every((s: { state: string }) => s.state === "killed")).toBe(true);
    const both = await op(`/v1/sessions?state=active,killed&limit=500`);
    expect(mine(both.json.sessions.map((s: { session: string }) => s.session))).toEqual(expect.arrayContaining(opened.map((o) => o.id)));

    // Opening time: the window holds exactly the sessions opened inside it.
    const mid = opened[N / 2].openedAt;
    const since = await walk(`since=${mid}&limit=500`);
    expect(mine(since.ids).filter((id) => !id.includes("late"))).toEqual(expectedOrder(opened.filter((o) => o.openedAt >= mid)));
    const iso = new Date(mid).toISOString();
    const before = await walk(`until=${encodeURIComponent(iso)}&limit=500`);
    expect(mine(before.ids)).toEqual(expectedOrder(opened.filter((o) => o.openedAt < mid)));
    expect((await op(`/v1/sessions?since=1h&limit=500`)).json.total).toBeGreaterThanOrEqual(N);
    expect((await op(`/v1/sessions?until=1h`)).json.total).toBe(0);
  });

  it("refuses bad parameters with 400 naming them", async () => {
    for (const [query, field] of [
      ["limit=0", "limit"],
      ["limit=abc", "limit"],
      ["state=running", "state"],
      ["since=last-week", "since"],
      ["cursor=zzz", "cursor"],
      ["since=1h&until=2h", "until"],
      ["sort=asc", "sort"],
    ]) {
      const r = await op(`/v1/sessions?${query}`);
      expect(r.status, query).toBe(400);
      expect(r.json.error, query).toMatchObject({ code: "bad_request", field });
    }
  });

  it("lists only the caller's tenant, for operators and auditors", async () => {
    const auditor = await client(gov.url, TOKENS.auditor)(`/v1/sessions?agent=triage`);
    expect(auditor.status).toBe(200);
    expect(auditor.json.total).toBe(opened.filter((o) => o.agent === "triage").length);
    expect((await client(gov.url, TOKENS.agent)("/v1/sessions")).status).toBe(403);
    const foreign = await client(gov.url, TOKENS.foreign)("/v1/sessions?limit=500");
    expect(foreign.status).toBe(200);
    expect(foreign.json).toEqual({ sessions: [], nextCursor: null, total: 0 });
  });
});
