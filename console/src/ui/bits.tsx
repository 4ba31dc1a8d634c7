import { Fragment, type ComponentChildren } from "preact";
import type { SessionSummary } from "../../../schema/protocol";
import { ago, decimalsFor, stamp, usd } from "../format";
import type { LinkStatus } from "../live";

export const STATES = ["active", "alerting", "awaiting-approval", "killed", "closed"] as const;
export type StateName = (typeof STATES)[number];

export function StateBadge({ state }: { state: StateName }) {
  return (
    <span class={`badge state-${state}`} data-state={state}>
      {state}
    </span>
  );
}

/** Spent (solid) and reserved (hatched) against the budget. */
export function SpendBar({ s }: { s: Pick<SessionSummary, "spentUsd" | "reservedUsd" | "budgetUsd"> }) {
  const budget = s.budgetUsd;
  if (!budget) return <div class="bar none" title="no budget" />;
  const pct = (v: number) => `${Math.min(100, Math.max(0, (v / budget) * 100)).toFixed(2)}%`;
  const used = s.spentUsd / budget;
  return (
    <div class="bar" title={`spent ${usd(s.spentUsd)}, reserved ${usd(s.reservedUsd)} of ${usd(budget)}`}>
      <span class={`fill${used >= 1 ? " over" : used >= 0.8 ? " warn" : ""}`} style={{ width: pct(s.spentUsd) }} />
      <span class="held" style={{ width: pct(Math.min(s.reservedUsd, Math.max(0, budget - s.spentUsd))) }} />
    </div>
  );
}

export function Stat({ label, value, hint, name, children }: { label: string; value: ComponentChildren; hint?: string; name?: string; children?: ComponentChildren }) {
  return (
    <div class="stat" data-stat={name ?? label} title={hint}>
      <span class="label">{label}</span>
      <span class="value">{value}</span>
      {children}
    </div>
  );
}

export function Ago({ ts, now }: { ts: number; now?: number }) {
  return (
    <time dateTime={new Date(ts).toISOString()} title={stamp(ts)}>
      {ago(ts, now)}
    </time>
  );
}

export function Link({ status, label }: { status: LinkStatus; label?: string }) {
  const text = status.state === "retrying" ? `reconnecting in ${Math.ceil(status.inMs / 1000)}s` : status.state === "refused" ? "refused" : status.state;
  return (
    <span class="conn" data-status={status.state} title={status.state === "refused" ? status.why : label}>
      {text}
    </span>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="empty muted">{children}</p>;
}

export function Card({ title, extra, children, class: cls, name }: { title: ComponentChildren; extra?: ComponentChildren; children: ComponentChildren; class?: string; name?: string }) {
  return (
    <section class={`card ${cls ?? ""}`} data-card={name}>
      <div class="card-head">
        <h2>{title}</h2>
        {extra}
      </div>
      {children}
    </section>
  );
}

export function Count({ n, hot }: { n: number; hot?: boolean }) {
  return <span class={`count${hot && n > 0 ? " hot" : ""}`}>{n}</span>;
}

/**
 * An exact amount (format.ts `usd`), every digit alike: a lighter tail past the cents made
 * $2.4999703 read as $2.49. `align`: the decimals of the widest amount in the column; the
 * missing ones are reserved as blank space (not zeros, not text), so decimal points line
 * up in a right-aligned column.
 */
export function Usd({ v, align }: { v: number | null | undefined; align?: number }) {
  const own = v == null ? 0 : decimalsFor([v]);
  const pad = v != null && align !== undefined && align > own ? "0".repeat(align - own) : undefined;
  return (
    <span class="usd" data-pad={pad}>
      {usd(v)}
    </span>
  );
}

/** A policy path (`actions.rules.wire_transfer.amount.require_approval_above`) that wraps at its dots, not mid-word. */
export function Rule({ path }: { path: string }) {
  const parts = path.split(/(?<=\.)/);
  return (
    <code class="rule">
      {parts.map((p, i) => (
        <Fragment key={i}>
          {i > 0 && <wbr />}
          {p}
        </Fragment>
      ))}
    </code>
  );
}
