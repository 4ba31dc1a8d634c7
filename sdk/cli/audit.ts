import { createWriteStream } from "node:fs";
import { Readable, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { Option, type Command } from "commander";
import { errorFromResponse } from "../errors";
import { usd } from "./format";

// `governor audit …`: reads of the audit store (`query`, `spend`, `export`, `sessions`)
// through the gateway's /v1/audit routes with the caller's token, like every other
// command, so tenancy and roles hold. Writing the store (the sync, the audit service) is
// the server's: `npm run audit -- sync|serve` in the Governor repository.

interface Globals {
  url: string;
  token: string;
  tenant: string;
  json?: boolean;
}

interface Io {
  out: (s: string) => void;
}

const FILTERS = ["user", "agent", "session", "run", "type", "decision", "model", "since", "until"] as const;
type FilterOpts = Partial<Record<(typeof FILTERS)[number], string>>;

function withFilters(cmd: Command): Command {
  return cmd
    .option("--user <id>", "events of this user")
    .option("--agent <id>", "events of this agent")
    .option("--session <id>", "events of this session")
    .option("--run <id>", "events of this run")
    .option("--type <types>", "event types, comma-separated (e.g. request.denied,action.checked)")
    .option("--decision <decisions>", "allow, deny or review, comma-separated")
    .option("--model <model>", "events of this model")
    .option("--since <when>", "from: 30d / 12h ago, an ISO date or epoch ms (inclusive)")
    .option("--until <when>", "to: same forms as --since (exclusive)");
}

function params(opts: FilterOpts, extra: Record<string, string | number | undefined> = {}): URLSearchParams {
  const q = new URLSearchParams();
  for (const k of FILTERS) if (opts[k] !== undefined) q.set(k, opts[k]!);
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) q.set(k, String(v));
  return q;
}

async function get(g: Globals, path: string, q: URLSearchParams): Promise<Response> {
  const res = await fetch(`${g.url.replace(/\/+$/, "")}/v1/audit/${path}?${q}`, { headers: { authorization: `Bearer ${g.token}` } });
  if (!res.ok) throw errorFromResponse(res.status, await res.text());
  return res;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ")).join("\n");
}

interface Item {
  session: string;
  seq: number;
  ts: number;
  type: string;
  user: string | null;
  agent: string | null;
  action: string | null;
  model: string | null;
  decision: string | null;
  rule: string | null;
  costUsd: number;
}

function formatEvents(events: Item[], next: string | null): string {
  if (!events.length) return "no events";
  const rows = [["TIME", "SESSION", "SEQ", "TYPE", "USER", "AGENT", "ACTION/MODEL", "DECISION", "COST", "RULE"]];
  for (const e of events) {
    rows.push([new Date(e.ts).toISOString(), e.session, String(e.seq), e.type, e.user ?? "-", e.agent ?? "-", e.action ?? e.model ?? "-", e.decision ?? "-", e.costUsd ? usd(e.costUsd) : "-", e.rule ?? "-"]);
  }
  return `${table(rows)}${next ? `\n\nmore: --cursor ${next}` : ""}`;
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1) throw new Error("expected a positive integer");
  return n;
}

export function registerAudit(program: Command, io: Io) {
  const audit = program
    .command("audit")
    .description("the audit store (every session's log in SQL): query, spend and export; the server's `npm run audit -- sync|serve` fills it");
  const globals = (cmd: Command) => cmd.optsWithGlobals<Globals>();

  withFilters(audit.command("query").description("events matching the filters, a page at a time"))
    .option("--limit <n>", "events per page (1-1000)", positiveInt, 100)
    .option("--cursor <cursor>", "the next page, as the previous one printed")
    .action(async (opts: FilterOpts & { limit: number; cursor?: string }, cmd: Command) => {
      const g = globals(cmd);
      const res = await get(g, "events", params(opts, { limit: opts.limit, cursor: opts.cursor }));
      const page = (await res.json()) as { events: Item[]; nextCursor: string | null };
      io.out(g.json ? JSON.stringify(page, null, 2) : formatEvents(page.events, page.nextCursor));
    });

  withFilters(audit.command("spend").description("spend and calls rolled up by agent, user, model, session or day"))
    .addOption(new Option("--by <key>", "what to roll up by").choices(["agent", "user", "model", "session", "day"]).default("agent"))
    .action(async (opts: FilterOpts & { by: string }, cmd: Command) => {
      const g = globals(cmd);
      const res = await get(g, "spend", params(opts, { by: opts.by }));
      const data = (await res.json()) as { by: string; rows: Array<{ key: string | null; spentUsd: number; calls: number }> };
      if (g.json) return io.out(JSON.stringify(data, null, 2));
      if (!data.rows.length) return io.out("no spend in this window");
      io.out(table([[data.by.toUpperCase(), "SPENT", "CALLS"], ...data.rows.map((r) => [r.key ?? "(none)", usd(r.spentUsd), String(r.calls)])]));
    });

  withFilters(audit.command("export").description("every matching event as CSV, JSON or NDJSON, streamed"))
    .addOption(new Option("--format <format>", "output format").choices(["csv", "json", "ndjson"]).default("ndjson"))
    .option("-o, --output <file>", "write to a file instead of stdout")
    .action(async (opts: FilterOpts & { format: string; output?: string }, cmd: Command) => {
      const g = globals(cmd);
      const res = await get(g, "export", params(opts, { format: opts.format }));
      const sink: Writable = opts.output ? createWriteStream(opts.output) : process.stdout;
      const body = Readable.fromWeb(res.body as unknown as WebReadableStream<Uint8Array>);
      await pipeline(body, sink, { end: Boolean(opts.output) });
    });

  audit
    .command("sessions")
    .description("how far the store has each session, and any event it refused")
    .action(async (_opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const data = (await (await get(g, "sessions", new URLSearchParams())).json()) as {
        sessions: Array<{ session: string; state: string | null; storedSeq: number; knownSeq: number; spentUsd: number; problem?: { seq: number; reason: string } }>;
      };
      if (g.json) return io.out(JSON.stringify(data, null, 2));
      if (!data.sessions.length) return io.out("no sessions stored");
      const rows = [["SESSION", "STATE", "STORED", "KNOWN", "SPENT", "PROBLEM"]];
      for (const s of data.sessions) {
        rows.push([s.session, s.state ?? "-", String(s.storedSeq), String(s.knownSeq), usd(s.spentUsd), s.problem ? `seq ${s.problem.seq}: ${s.problem.reason}` : "-"]);
      }
      io.out(table(rows));
    });
}
