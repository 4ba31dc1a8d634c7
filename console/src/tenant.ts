import type { SessionSummary } from "../../schema/protocol";
import { banner } from "./banners";
import { config } from "./config";
import { checkSocket } from "./identity";
import { live, type Live, type LinkStatus } from "./live";
import { Observable } from "./signal";

// The tenant as the tenant socket tells it: every session's live summary, and the
// tenant's spend sampled each time a summary changes (the overview's live chart).

const NANOS = 1e9;
const SERIES_CAP = 4000;

export interface SpendPoint {
  ts: number;
  spentUsd: number;
  committedUsd: number;
}

export const tenantStatus = new Observable<LinkStatus>({ state: "offline" });
/** Bumped on every summary change; views read `sessions` after it. */
export const tenantVersion = new Observable(0);
export const sessions = new Map<string, SessionSummary>();
export const spendSeries: SpendPoint[] = [];
/** Summaries as they arrive, for views that follow single sessions. */
export const summaryListeners = new Set<(s: SessionSummary) => void>();

let spentNanos = 0;
let reservedNanos = 0;
let socket: Live | null = null;
let loaded = false;

const nanos = (usd: number) => Math.round(usd * NANOS);
const seriesKey = () => `governor.series.${config.tenant}`;

export function tenantTotals() {
  return { spentUsd: spentNanos / NANOS, reservedUsd: reservedNanos / NANOS, loaded };
}

function sample(ts: number) {
  const point = { ts, spentUsd: spentNanos / NANOS, committedUsd: (spentNanos + reservedNanos) / NANOS };
  const last = spendSeries.at(-1);
  if (last && last.spentUsd === point.spentUsd && last.committedUsd === point.committedUsd) return;
  // Several changes in one second: keep the latest, so the chart stays readable.
  if (last && ts - last.ts < 250) spendSeries[spendSeries.length - 1] = { ...point, ts: last.ts };
  else spendSeries.push(point);
  if (spendSeries.length > SERIES_CAP) spendSeries.splice(0, spendSeries.length - SERIES_CAP);
}

function put(s: SessionSummary): boolean {
  const known = sessions.get(s.session);
  if (known && known.seq > s.seq) return false;
  if (known) {
    spentNanos -= nanos(known.spentUsd);
    reservedNanos -= nanos(known.reservedUsd);
  }
  sessions.set(s.session, s);
  spentNanos += nanos(s.spentUsd);
  reservedNanos += nanos(s.reservedUsd);
  return true;
}

function restoreSeries() {
  spendSeries.length = 0;
  try {
    const stored = JSON.parse(sessionStorage.getItem(seriesKey()) ?? "[]") as SpendPoint[];
    if (Array.isArray(stored)) spendSeries.push(...stored.filter((p) => typeof p?.ts === "number").slice(-SERIES_CAP));
  } catch {
    /* nothing kept */
  }
}

let saveTimer: ReturnType<typeof setTimeout> | undefined;
function saveSeries() {
  saveTimer ??= setTimeout(() => {
    saveTimer = undefined;
    try {
      sessionStorage.setItem(seriesKey(), JSON.stringify(spendSeries.slice(-1500)));
    } catch {
      /* storage full: the chart still works */
    }
  }, 1000);
}

export function startTenant(): void {
  stopTenant();
  restoreSeries();
  socket = live({
    path: () => `/parties/tenant/${encodeURIComponent(config.tenant)}`,
    onStatus: (s) => tenantStatus.set(s),
    onInvalid: (why) => banner(`The tenant socket sent ${why}`),
    name: "The tenant's live connection",
    check: () => checkSocket("The tenant's live connection", (who) => (who.role === "agent" ? `role "agent" may not watch the tenant index` : null)),
    onRefused: (why) => banner(why),
    onMessage: (m) => {
      if (m.type === "sessions") {
        sessions.clear();
        spentNanos = 0;
        reservedNanos = 0;
        for (const s of m.sessions) put(s);
        loaded = true;
        sample(Date.now());
      } else if (m.type === "session") {
        if (!put(m.summary)) return;
        sample(Date.now());
        for (const l of summaryListeners) l(m.summary);
      } else if (m.type === "error") {
        banner(`${m.code}: ${m.message}`);
        return;
      } else return;
      saveSeries();
      tenantVersion.set(tenantVersion.value + 1);
    },
  });
}

export function stopTenant(): void {
  socket?.close();
  socket = null;
  sessions.clear();
  spentNanos = 0;
  reservedNanos = 0;
  loaded = false;
  tenantStatus.set({ state: "offline" });
}
