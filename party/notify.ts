import type * as Party from "partykit/server";
import { scrub } from "../lib/pii";
import type { GovernorEvent } from "../schema/events";
import type { NotifyTarget } from "../schema/policy";
import type { SessionSummary } from "../schema/protocol";

// Alerts leave the actor in the background: no call waits on Slack. Each delivery is
// written to an outbox before the first try, so one that is still retrying when the
// actor is evicted is tried again when it wakes; every outcome is kept for operators.

const NOTIFY_ON = new Set(["alert.raised", "anomaly.detected", "approval.requested", "session.killed"]);
const MAX_ATTEMPTS = 5;
const BASE_DELAY_MS = 500;
const TIMEOUT_MS = 5_000;

export interface Delivery {
  key: string;
  seq: number;
  eventType: string;
  target: "slack" | "webhook";
  url: string;
  attempts: number;
  ok: boolean;
  status?: number;
  error?: string;
  done: boolean;
  lastAttemptAt?: number;
}

interface Outbox {
  delivery: Delivery;
  body: unknown;
}

function reasonOf(e: GovernorEvent): string {
  switch (e.type) {
    case "alert.raised":
    case "anomaly.detected":
    case "session.killed":
      return e.data.reason;
    case "approval.requested":
      return `${e.data.action} needs approval: ${e.data.reason}`;
    default:
      return e.type;
  }
}

const TITLES: Record<string, string> = {
  "alert.raised": "Alert",
  "anomaly.detected": "Runaway loop detected",
  "approval.requested": "Approval requested",
  "session.killed": "Session killed",
};

export function webhookBody(e: GovernorEvent, s: SessionSummary, consoleUrl?: string) {
  return {
    type: e.type,
    tenant: s.tenant,
    session: s.session,
    seq: e.seq,
    ts: e.ts,
    state: s.state,
    agent: s.agent ?? null,
    user: s.user ?? null,
    spentUsd: s.spentUsd,
    budgetUsd: s.budgetUsd,
    reason: reasonOf(e),
    consoleUrl: consoleUrl ?? null,
    event: e,
  };
}

/** Slack's incoming-webhook shape: `text` for notifications, Block Kit `blocks` for the message. */
export function slackBody(e: GovernorEvent, s: SessionSummary, consoleUrl?: string) {
  const money = s.budgetUsd === null ? `$${s.spentUsd.toFixed(4)}` : `$${s.spentUsd.toFixed(4)} of $${s.budgetUsd}`;
  const title = `Governor: ${TITLES[e.type] ?? e.type} in ${s.session}`;
  const blocks: unknown[] = [
    { type: "header", text: { type: "plain_text", text: title.slice(0, 150) } },
    {
      type: "section",
      fields: [
        { type: "mrkdwn", text: `*Session*\n${s.session}` },
        { type: "mrkdwn", text: `*State*\n${s.state}` },
        { type: "mrkdwn", text: `*Agent*\n${s.agent ?? "-"}` },
        { type: "mrkdwn", text: `*User*\n${s.user ?? "-"}` },
        { type: "mrkdwn", text: `*Spend*\n${money}` },
        { type: "mrkdwn", text: `*Tenant*\n${s.tenant}` },
      ],
    },
    { type: "section", text: { type: "mrkdwn", text: `*Reason*\n${reasonOf(e)}` } },
  ];
  if (consoleUrl) {
    blocks.push({ type: "actions", elements: [{ type: "button", text: { type: "plain_text", text: "Open in console" }, url: consoleUrl }] });
  }
  return { text: `${title}: ${reasonOf(e)}`, blocks };
}

export class Notifier {
  private timers = new Set<ReturnType<typeof setTimeout>>();
  /** Deliveries not yet done, by key: the objects the retries hold (an erasure edits them in place). */
  private pending = new Map<string, Outbox>();

  constructor(
    private readonly storage: Party.Storage,
    private readonly consoleUrl: () => string | undefined,
    private readonly send: typeof fetch = (input, init) => fetch(input, init),
  ) {}

  onEvent(e: GovernorEvent, targets: NotifyTarget[], summary: SessionSummary) {
    if (!NOTIFY_ON.has(e.type)) return;
    targets.forEach((t, i) => {
      const kind = "slack" in t ? "slack" : "webhook";
      const url = "slack" in t ? t.slack : t.webhook;
      const body = kind === "slack" ? slackBody(e, summary, this.consoleUrl()) : webhookBody(e, summary, this.consoleUrl());
      const delivery: Delivery = { key: `${String(e.seq).padStart(12, "0")}:${i}`, seq: e.seq, eventType: e.type, target: kind, url, attempts: 0, ok: false, done: false };
      const item: Outbox = { delivery, body };
      this.pending.set(delivery.key, item);
      void this.storage.put(`o:${delivery.key}`, item).then(() => this.attempt(item));
    });
  }

  /** Deliveries that were still in the outbox when the actor went away. */
  async resume() {
    const pending = await this.storage.list<Outbox>({ prefix: "o:" });
    for (const item of pending.values()) {
      this.pending.set(item.delivery.key, item);
      this.later(item, 0);
    }
  }

  /**
   * An erasure: the outbox's bodies (which name the session's user and may quote the
   * event's values) lose the erased values, in storage and in the retries under way.
   * Returns how many were changed. Delivery records hold no body.
   */
  async purge(values: readonly unknown[]): Promise<number> {
    const stored = await this.storage.list<Outbox>({ prefix: "o:" });
    const items = new Map(stored);
    for (const item of this.pending.values()) items.set(`o:${item.delivery.key}`, this.pending.get(item.delivery.key)!);
    const puts: Record<string, Outbox> = {};
    for (const [key, item] of items) {
      const body = scrub(item.body, values);
      if (body === item.body) continue;
      const live = this.pending.get(item.delivery.key);
      if (live) live.body = body;
      puts[key] = { ...item, body };
    }
    // At most 128 keys per storage call.
    const keys = Object.keys(puts);
    for (let i = 0; i < keys.length; i += 128) await this.storage.put(Object.fromEntries(keys.slice(i, i + 128).map((k) => [k, puts[k]])));
    return keys.length;
  }

  async list(): Promise<Delivery[]> {
    const done = await this.storage.list<Delivery>({ prefix: "d:" });
    const pending = await this.storage.list<Outbox>({ prefix: "o:" });
    return [...done.values(), ...[...pending.values()].map((p) => p.delivery)].sort((a, b) => a.key.localeCompare(b.key));
  }

  private later(item: Outbox, ms: number) {
    const t = setTimeout(() => {
      this.timers.delete(t);
      void this.attempt(item);
    }, ms);
    this.timers.add(t);
  }

  private async attempt(item: Outbox) {
    const d = item.delivery;
    d.attempts += 1;
    d.lastAttemptAt = Date.now();
    try {
      const res = await this.send(d.url, {
        method: "POST",
        headers: { "content-type": "application/json", "user-agent": "governor-notify" },
        body: JSON.stringify(item.body),
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
      d.status = res.status;
      d.ok = res.ok;
      d.error = res.ok ? undefined : `HTTP ${res.status}`;
      await res.body?.cancel();
    } catch (e) {
      d.ok = false;
      d.error = (e as Error).message;
    }
    // 4xx other than 429 will not get better by retrying.
    const permanent = d.status !== undefined && d.status >= 400 && d.status < 500 && d.status !== 429;
    if (d.ok || permanent || d.attempts >= MAX_ATTEMPTS) {
      d.done = true;
      this.pending.delete(d.key);
      await this.storage.put(`d:${d.key}`, d);
      await this.storage.delete(`o:${d.key}`);
      return;
    }
    await this.storage.put(`o:${d.key}`, item);
    this.later(item, BASE_DELAY_MS * 2 ** (d.attempts - 1));
  }
}
