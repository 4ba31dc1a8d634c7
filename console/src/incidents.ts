import { useEffect, useState } from "preact/hooks";
import { GovernorEvent } from "../../schema/events";
import type { SessionSummary } from "../../schema/protocol";
import { getLines } from "./api";

// Recent alerts, anomalies and kills across the tenant, each with its reason. Kills are in
// the summaries; an alert's reason is in its session's log, so the tails of the logs of the
// sessions that alerted most recently are read (and read again only when their counts move).

export interface Incident {
  ts: number;
  session: string;
  seq?: number;
  kind: "alert" | "anomaly" | "kill";
  rule?: string;
  reason: string;
  by?: string;
}

const TAIL = 400;
const SESSIONS = 8;
const cache = new Map<string, Incident[]>();

async function alertsOf(s: SessionSummary): Promise<Incident[]> {
  const key = `${s.session}:${s.counters.alerts}:${s.counters.anomalies}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const after = Math.max(0, s.seq - TAIL);
  const { lines } = await getLines(`/v1/sessions/${encodeURIComponent(s.session)}/log?after=${after}&limit=${TAIL}`);
  const found: Incident[] = [];
  for (const line of lines) {
    const e = GovernorEvent.safeParse(line);
    if (!e.success) continue;
    const ev = e.data;
    if (ev.type === "alert.raised") found.push({ ts: ev.ts, session: s.session, seq: ev.seq, kind: "alert", rule: ev.data.rule, reason: ev.data.reason });
    if (ev.type === "anomaly.detected") found.push({ ts: ev.ts, session: s.session, seq: ev.seq, kind: "anomaly", rule: `${ev.data.rule ?? ev.data.kind} (${ev.data.onDetect})`, reason: ev.data.reason });
  }
  cache.set(key, found);
  return found;
}

export function useIncidents(all: SessionSummary[], version: number): { incidents: Incident[]; error?: string } {
  const [alerts, setAlerts] = useState<Incident[]>([]);
  const [error, setError] = useState<string>();
  const alerting = all
    .filter((s) => s.counters.alerts + s.counters.anomalies > 0)
    .sort((a, b) => b.lastActivity - a.lastActivity)
    .slice(0, SESSIONS);
  const key = alerting.map((s) => `${s.session}:${s.counters.alerts}:${s.counters.anomalies}`).join("|");

  useEffect(() => {
    let stale = false;
    const t = setTimeout(async () => {
      try {
        const lists = await Promise.all(alerting.map(alertsOf));
        if (!stale) {
          setAlerts(lists.flat());
          setError(undefined);
        }
      } catch (e) {
        if (!stale) setError(String(e));
      }
    }, 300);
    return () => {
      stale = true;
      clearTimeout(t);
    };
    // `key` names exactly what `alerting` holds that matters here.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, version > 0]);

  const kills: Incident[] = all.filter((s) => s.killed).map((s) => ({ ts: s.killed!.at, session: s.session, kind: "kill", rule: s.killed!.rule, reason: s.killed!.reason, by: s.killed!.by }));
  return { incidents: [...kills, ...alerts].sort((a, b) => b.ts - a.ts).slice(0, 12), error };
}
