import { createWriteStream } from "node:fs";
import { Readable, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { Option, type Command } from "commander";
import { errorFromResponse } from "../errors";
import { usd } from "./format";
import { seqRuns } from "../../lib/pii";

// `governor audit …`: reads of the audit store (`query`, `spend`, `export`, `sessions`,
// `erasures`) and erasure (`erase`) through the gateway's /v1/audit routes with the
// caller's token, like every other command, so tenancy and roles hold. Writing the store
// (`sync`, the audit service `serve`) is the server's: the Governor checkout's own
// `governor` (`npx governor audit sync|serve` there) runs it, with PGlite and drizzle,
// which this package does not carry.

interface Globals {
  url: string;
  token: string;
  tenant?: string;
  json?: boolean;
}

interface Io {
  out: (s: string) => void;
  err?: (s: string) => void;
  /** Sets the exit code (a command that cannot run here). */
  fail?: (code: number) => void;
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

  withFilters(audit.command("spend").description("spend and calls rolled up by agent, user, model or session, or over time by day, hour or minute (UTC, oldest first)"))
    .addOption(new Option("--by <key>", "what to roll up by").choices(["agent", "user", "model", "session", "day", "hour", "minute"]).default("agent"))
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
    .option("--checkpoints", "end with the signed checkpoints stored for the sessions exported")
    .action(async (opts: FilterOpts & { format: string; output?: string; checkpoints?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const res = await get(g, "export", params(opts, { format: opts.format, checkpoints: opts.checkpoints ? "true" : undefined }));
      const sink: Writable = opts.output ? createWriteStream(opts.output) : process.stdout;
      const body = Readable.fromWeb(res.body as unknown as WebReadableStream<Uint8Array>);
      await pipeline(body, sink, { end: Boolean(opts.output) });
    });

  audit
    .command("erase")
    .description("erase a person (GDPR Art. 17): their id and kept raw text leave every session's log, the audit store and later exports; the logs still verify (operators)")
    .requiredOption("--user <id>", "the person's id, as the attribution carried it (X-User-ID, an action's user)")
    .action(async (opts: { user: string }, cmd: Command) => {
      const g = globals(cmd);
      const res = await fetch(`${g.url.replace(/\/+$/, "")}/v1/audit/erasures`, {
        method: "POST",
        headers: { authorization: `Bearer ${g.token}`, "content-type": "application/json" },
        body: JSON.stringify({ user: opts.user }),
      });
      if (!res.ok) throw errorFromResponse(res.status, await res.text());
      const r = (await res.json()) as ErasureAnswer;
      io.out(g.json ? JSON.stringify(r, null, 2) : formatErasure(r));
    });

  audit
    .command("erasures")
    .description("the erasures recorded in the audit store (subjects as keyed digests only)")
    .action(async (_opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const data = (await (await get(g, "erasures", new URLSearchParams())).json()) as { erasures: Array<{ id: string; subject: string; requestedBy: string; completedAt: number | null; sessions: number; events: number }> };
      if (g.json) return io.out(JSON.stringify(data, null, 2));
      if (!data.erasures.length) return io.out("no erasures recorded");
      io.out(table([["ERASURE", "SUBJECT", "BY", "COMPLETED", "SESSIONS", "ROWS"], ...data.erasures.map((e) => [e.id, e.subject, e.requestedBy, e.completedAt ? new Date(e.completedAt).toISOString() : "-", String(e.sessions), String(e.events)])]));
    });

  // The store's writers run with the server (they need its database drivers): say where.
  for (const name of ["sync", "serve"]) {
    audit
      .command(name, { hidden: true })
      .allowUnknownOption()
      .allowExcessArguments()
      .action(() => {
        (io.err ?? io.out)(
          `governor audit ${name} runs where the Governor server is, not from the SDK package: in the Governor checkout, \`npx governor audit ${name} …\` (or \`npm run audit -- ${name} …\`); \`npm start\` already runs the audit service and its sync. From here, read the store with \`governor audit query|spend|export|sessions\`.`,
        );
        io.fail?.(2);
      });
  }

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

interface ErasureAnswer {
  erasure: string;
  subject: string;
  values: number;
  sessions: Array<{ session: string; erased: number[]; values: number; kept: number[]; appended: number[] }>;
  kept: Array<{ session: string; seqs: number[] }>;
  visited: number;
  store: { erasure?: { id: string; events: number } } | null;
}

function runs(seqs: number[]): string {
  return seqRuns(seqs).join(",") || "-";
}

function formatErasure(r: ErasureAnswer): string {
  const lines = [`erasure ${r.erasure}: subject ${r.subject}`];
  if (!r.sessions.length) lines.push(`nothing left to erase (${r.visited} session${r.visited === 1 ? "" : "s"} looked at)`);
  else {
    lines.push(`${r.values} value${r.values === 1 ? "" : "s"} erased in ${r.sessions.filter((s) => s.values).length} session(s); each says so with a subject.redacted event`, "");
    lines.push(table([["SESSION", "EVENTS", "VALUES", "SUBJECT.REDACTED", "KEPT"], ...r.sessions.map((s) => [s.session, runs(s.erased), String(s.values), runs(s.appended), runs(s.kept)])]));
  }
  if (r.kept.length) {
    lines.push("", "kept: events written before commitments hold these values inside their hash, so they cannot be erased without breaking the chain:");
    for (const k of r.kept) lines.push(`  ${k.session} seq ${runs(k.seqs)}`);
  }
  const stored = r.store?.erasure;
  lines.push("", stored ? `audit store: erasure ${stored.id} recorded, ${stored.events} row(s) blanked` : "audit store: none here");
  return lines.join("\n");
}
