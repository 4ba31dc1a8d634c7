import { describe, expect, it } from "vitest";
import { GovernorError } from "../../lib/errors";
import { SessionIndex } from "../../party/session-index";
import type { SessionSummary } from "../../schema/protocol";
import { decodeCursor, encodeCursor, parseSessionListQuery } from "../../schema/session-list";

function summary(session: string, openedAt: number, extra: Partial<SessionSummary> = {}): SessionSummary {
  return {
    tenant: "t",
    session,
    state: "active",
    seq: 1,
    spentUsd: 0,
    reservedUsd: 0,
    budgetUsd: null,
    remainingUsd: null,
    openedAt,
    lastActivity: openedAt,
    counters: { llmCalls: 0, actions: 0, allowed: 0, denied: 0, reviews: 0, violations: 0, alerts: 0, anomalies: 0, errors: 0 },
    violations: {},
    reservations: [],
    pendingApprovals: [],
    alerts: [],
    ...extra,
  };
}

const NOW = Date.UTC(2025, 5, 1);
const q = (s: string) => parseSessionListQuery(new URLSearchParams(s), NOW);

function badField(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof GovernorError && e.status === 400) return e.field;
    throw e;
  }
  throw new Error("expected a 400");
}

describe("session list query", () => {
  it("defaults to 100 newest first with no filter", () => {
    expect(q("")).toEqual({ limit: 100 });
  });

  it("reads states, people and times in every accepted form", () => {
    expect(q("limit=5&state=killed,alerting&agent=bot&user=u1&since=30d&until=2025-05-31T00:00:00Z")).toEqual({
      limit: 5,
      states: ["killed", "alerting"],
      agent: "bot",
      user: "u1",
      since: NOW - 30 * 86_400_000,
      until: Date.UTC(2025, 4, 31),
    });
    expect(q("since=1700000000000").since).toBe(1_700_000_000_000);
    expect(q("since=12h").since).toBe(NOW - 12 * 3_600_000);
    expect(q("since=2025-01-31").since).toBe(Date.UTC(2025, 0, 31));
  });

  it("names the bad parameter", () => {
    expect(badField(() => q("limit=0"))).toBe("limit");
    expect(badField(() => q("limit=501"))).toBe("limit");
    expect(badField(() => q("limit=2.5"))).toBe("limit");
    expect(badField(() => q("state=active,dead"))).toBe("state");
    expect(badField(() => q("since=yesterday"))).toBe("since");
    expect(badField(() => q("until=2025-13-45"))).toBe("until");
    expect(badField(() => q("since=1d&until=2d"))).toBe("until");
    expect(badField(() => q("cursor=not-a-cursor"))).toBe("cursor");
    expect(badField(() => q("stat=killed"))).toBe("stat");
    expect(badField(() => q("agent=a&agent=b"))).toBe("agent");
  });

  it("round-trips a cursor", () => {
    const p = { openedAt: 1_700_000_000_123, session: "a.b~c-d_e" };
    expect(decodeCursor(encodeCursor(p))).toEqual(p);
  });
});

describe("session index", () => {
  it("pages newest opened first, ties by id, each session once while sessions update and arrive", () => {
    const index = new SessionIndex();
    // Equal openedAt on purpose: the id breaks the tie, so the order is total.
    for (let i = 0; i < 23; i++) index.upsert(summary(`s${String(i).padStart(2, "0")}`, 1000 + Math.floor(i / 3)));
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page = index.page({ limit: 5, ...(cursor && { after: decodeCursor(cursor) }) });
      expect(page.total).toBe(23 + pages);
      seen.push(...page.sessions.map((s) => s.session));
      cursor = page.nextCursor;
      // Between pages: every session is updated (new spend, activity), and a new one opens.
      for (const s of [...index.values()]) index.upsert({ ...s, seq: s.seq + 1, lastActivity: s.lastActivity + 10_000, spentUsd: s.spentUsd + 1 });
      index.upsert(summary(`new${pages}`, 5000 + pages));
      pages++;
    } while (cursor);
    expect(seen).toHaveLength(23);
    expect(new Set(seen).size).toBe(23);
    const expected = Array.from({ length: 23 }, (_, i) => ({ id: `s${String(i).padStart(2, "0")}`, at: 1000 + Math.floor(i / 3) }))
      .sort((a, b) => b.at - a.at || (a.id < b.id ? -1 : 1))
      .map((x) => x.id);
    expect(seen).toEqual(expected);
  });

  it("filters by state, agent, user and opening time, and counts every match", () => {
    const index = SessionIndex.from([
      summary("a", 100, { agent: "bot", user: "u1" }),
      summary("b", 200, { agent: "bot", user: "u2", state: "killed" }),
      summary("c", 300, { agent: "other", user: "u1", state: "alerting" }),
      summary("d", 400, { agent: "bot", user: "u1", state: "killed" }),
    ]);
    const ids = (query: Parameters<SessionIndex["page"]>[0]) => index.page(query).sessions.map((s) => s.session);
    expect(ids({ limit: 10 })).toEqual(["d", "c", "b", "a"]);
    expect(ids({ limit: 10, states: ["killed"] })).toEqual(["d", "b"]);
    expect(ids({ limit: 10, states: ["killed", "alerting"], user: "u1" })).toEqual(["d", "c"]);
    expect(ids({ limit: 10, agent: "bot" })).toEqual(["d", "b", "a"]);
    expect(ids({ limit: 10, since: 200, until: 400 })).toEqual(["c", "b"]);
    const first = index.page({ limit: 1, agent: "bot" });
    expect(first).toMatchObject({ total: 3, sessions: [{ session: "d" }] });
    expect(first.nextCursor).not.toBeNull();
    const last = index.page({ limit: 2, agent: "bot", after: decodeCursor(first.nextCursor!) });
    expect(last.sessions.map((s) => s.session)).toEqual(["b", "a"]);
    expect(last.nextCursor).toBeNull();
    // A state change moves a session in or out of a filter, never to another place in the order.
    index.upsert({ ...index.page({ limit: 10, states: ["active"] }).sessions[0], state: "killed" });
    expect(ids({ limit: 10, states: ["killed"] })).toEqual(["d", "b", "a"]);
  });
});
