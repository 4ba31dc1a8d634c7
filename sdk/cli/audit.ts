import { createWriteStream } from "node:fs";
import { Readable, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { Option, type Command } from "commander";
import { errorFromResponse } from "../errors";
import { usd } from "./format";

// `governor audit …`: the audit store. `sync` and `serve` write the store (they open it);
// `query`, `spend`, `export` and `sessions` read it through the gateway's /v1/audit
// routes with the caller's token, like every other command, so tenancy and roles hold.
// The store's code is loaded only by the commands that open it.

interface Globals {
  url: string;
  token: string;
  tenant: string;
  json?: boolean;
}

interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
  setCode: (code: number) => void;
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

/** Store options shared by sync and serve. */
function storeOptions(cmd: Command): Command {
  return cmd
    .option("--dir <folder>", "PGlite folder of the store (when DATABASE_URL is not set)", process.env.GOVERNOR_AUDIT_DIR || ".governor/audit")
    .option("--database-url <url>", "Postgres instead of PGlite (or DATABASE_URL)", process.env.DATABASE_URL)
    .option("--concurrency <n>", "sessions read over HTTP at once", positiveInt, 4)
    .addOption(new Option("--sockets <n>", "live tail sockets at once (0: none)").default(32).argParser((v) => Number(v)));
}

function untilSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string) => {
      process.off("SIGINT", on);
      process.off("SIGTERM", on);
      resolve(sig);
    };
    process.once("SIGINT", on);
    process.once("SIGTERM", on);
  });
}

type Progress = typeof import("cli-progress");

/** The backfill's bar on a terminal (stderr), with log lines printed above it. */
function progressBar(progress: Progress, err: (s: string) => void) {
  const multi = new progress.MultiBar(
    { format: "backfill |{bar}| {value}/{total} events | {percentage}% | eta {eta_formatted}", stream: process.stderr, hideCursor: true, etaBuffer: 50 },
    progress.Presets.shades_classic,
  );
  let bar: ReturnType<typeof multi.create> | undefined;
  let done = false;
  const stop = () => {
    if (bar) multi.stop();
    bar = undefined;
  };
  return {
    update(value: number, total: number) {
      if (done || total <= 0 || !process.stderr.isTTY) return;
      bar ??= multi.create(total, value);
      bar.setTotal(total);
      bar.update(value);
      if (value >= total) {
        done = true;
        stop();
      }
    },
    log(line: string) {
      if (bar) multi.log(`${line}\n`);
      else err(line);
    },
    stop,
  };
}

export function registerAudit(program: Command, io: Io) {
  const audit = program.command("audit").description("the audit store: every session's log in SQL; sync, query, spend and export");
  const globals = (cmd: Command) => cmd.optsWithGlobals<Globals>();

  storeOptions(
    audit
      .command("sync")
      .description("follow the tenant's sessions into the audit store (verifying every event's chain link)")
      .option("--once", "stop when every session is stored up to where the index said it was"),
  ).action(async (opts: { dir: string; databaseUrl?: string; concurrency: number; sockets: number; once?: boolean }, cmd: Command) => {
    const g = globals(cmd);
    const [{ openDatabase }, { AuditStore }, { TenantSync }, { default: progress }] = await Promise.all([
      import("../../audit/db"),
      import("../../audit/store"),
      import("../../audit/sync"),
      import("cli-progress"),
    ]);
    io.err(opts.databaseUrl ? "opening the audit store (Postgres)..." : `opening the audit store at ${opts.dir} (a new one takes a few seconds to create)...`);
    const store = new AuditStore(await openDatabase({ dir: opts.dir, databaseUrl: opts.databaseUrl }));
    const bar = progressBar(progress, io.err);
    let problems = 0;
    const sync = new TenantSync({
      store,
      url: g.url,
      token: g.token,
      tenant: g.tenant,
      concurrency: opts.concurrency,
      sockets: opts.sockets,
      log: bar.log,
      onProblem: (p) => {
        problems++;
        bar.log(`REFUSED session ${p.session}: event seq ${p.seq} not stored: ${p.reason}`);
      },
      onProgress: bar.update,
    });
    try {
      await sync.start();
      io.err(`following tenant ${g.tenant} at ${g.url} into ${store.database.describe}`);
      if (opts.once) await sync.idle();
      else {
        await Promise.race([sync.idle().then(() => io.err("caught up; following live (Ctrl-C stops)")), untilSignal()]);
        await untilSignal();
      }
    } finally {
      bar.stop();
      await sync.stop();
      const s = sync.status();
      io.err(`${s.sessions} sessions, ${s.behind} behind, ${s.broken.length} refused`);
      await store.close();
    }
    if (problems) io.setCode(1);
  });

  storeOptions(
    audit
      .command("serve")
      .description("the audit service for the gateway's /v1/audit routes, with the sync that feeds it (npm start runs it)")
      .option("--host <host>", "address to listen on", "127.0.0.1")
      .option("--port <port>", "port (0: any free one)", process.env.GOVERNOR_AUDIT_PORT || "0"),
  ).action(async (opts: { dir: string; databaseUrl?: string; concurrency: number; sockets: number; host: string; port: string }, cmd: Command) => {
    const g = globals(cmd);
    const secret = process.env.GOVERNOR_AUDIT_SECRET;
    if (!secret) return void cmd.error("error: set GOVERNOR_AUDIT_SECRET (the gateway sends it with every audit request)", { exitCode: 2 });
    const { serve, syncTargets } = await import("../../audit/serve");
    // An explicit --token names one tenant to follow; else every tenant of GOVERNOR_TOKENS.
    const explicit = cmd.getOptionValueSourceWithGlobals("token") === "cli";
    const targets = explicit ? [{ tenant: g.tenant, token: g.token }] : syncTargets(process.env.GOVERNOR_TOKENS);
    const running = await serve({
      url: g.url,
      targets,
      secret,
      host: opts.host,
      port: Number(opts.port),
      dir: opts.dir,
      databaseUrl: opts.databaseUrl,
      concurrency: opts.concurrency,
      sockets: opts.sockets,
      log: io.err,
      onProblem: (tenant, p) => io.err(`[${tenant}] REFUSED session ${p.session}: event seq ${p.seq} not stored: ${p.reason}`),
    });
    io.out(`audit service listening on ${running.service.url} (store: ${running.store.database.describe}; following ${targets.map((t) => t.tenant).join(", ") || "no tenant"})`);
    await untilSignal();
    await running.stop();
  });

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
