import progress from "cli-progress";
import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { openDatabase } from "./db";
import { serve, syncTargets } from "./serve";
import { AuditStore } from "./store";
import { DEFAULT_CONCURRENCY, TenantSync } from "./sync";

// The server's side of the audit store: `npm run audit -- sync` follows a tenant into the
// store, `npm run audit -- serve` runs the audit service with its syncs (npm start runs
// that). Reading the store is the SDK CLI's: `governor audit query|spend|export`.
// Exit 0 on success, 1 when an event was refused, 2 when the command line is wrong.

interface Globals {
  url: string;
  token: string;
  tenant: string;
}

interface StoreOpts {
  dir: string;
  databaseUrl?: string;
  concurrency: number;
  sockets: number;
}

const err = (s: string) => process.stderr.write(`${s}\n`);
const out = (s: string) => process.stdout.write(`${s}\n`);

function count(min: number) {
  return (v: string) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min) throw new InvalidArgumentError(`expected an integer of at least ${min}`);
    return n;
  };
}

function storeOptions(cmd: Command): Command {
  return cmd
    .option("--dir <folder>", "PGlite folder of the store (when DATABASE_URL is not set)", process.env.GOVERNOR_AUDIT_DIR || ".governor/audit")
    .option("--database-url <url>", "Postgres instead of PGlite (or DATABASE_URL)", process.env.DATABASE_URL)
    .addOption(new Option("--concurrency <n>", "sessions read over HTTP at once").default(DEFAULT_CONCURRENCY).argParser(count(1)))
    .addOption(new Option("--sockets <n>", "live tail sockets at once (0: none)").default(32).argParser(count(0)));
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

/** The backfill's bar on a terminal (stderr), with log lines printed above it. */
function progressBar() {
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

async function sync(g: Globals, opts: StoreOpts & { once?: boolean }): Promise<number> {
  err(opts.databaseUrl ? "opening the audit store (Postgres)..." : `opening the audit store at ${opts.dir} (a new one takes a few seconds to create)...`);
  const store = new AuditStore(await openDatabase({ dir: opts.dir, databaseUrl: opts.databaseUrl }));
  const bar = progressBar();
  let refused = 0;
  const follower = new TenantSync({
    store,
    url: g.url,
    token: g.token,
    tenant: g.tenant,
    concurrency: opts.concurrency,
    sockets: opts.sockets,
    log: bar.log,
    onProblem: (p) => {
      refused++;
      bar.log(`REFUSED session ${p.session}: event seq ${p.seq} not stored: ${p.reason}`);
    },
    onProgress: bar.update,
  });
  try {
    await follower.start();
    err(`following tenant ${g.tenant} at ${g.url} into ${store.database.describe}`);
    if (opts.once) await follower.idle();
    else {
      const signal = untilSignal();
      await Promise.race([follower.idle().then(() => err("caught up; following live (Ctrl-C stops)")), signal]);
      await signal;
    }
  } finally {
    bar.stop();
    await follower.stop();
    const s = follower.status();
    err(`${s.sessions} sessions, ${s.behind} behind, ${s.broken.length} refused${s.unreadable.length ? `, ${s.unreadable.length} unreadable` : ""}`);
    await store.close();
  }
  return refused ? 1 : 0;
}

async function serveCommand(g: Globals, opts: StoreOpts & { host: string; port: number }, explicitToken: boolean): Promise<number> {
  const secret = process.env.GOVERNOR_AUDIT_SECRET;
  if (!secret) {
    err("error: set GOVERNOR_AUDIT_SECRET (the gateway sends it with every audit request)");
    return 2;
  }
  // An explicit --token names one tenant to follow; else every tenant of GOVERNOR_TOKENS.
  const targets = explicitToken ? [{ tenant: g.tenant, token: g.token }] : syncTargets(process.env.GOVERNOR_TOKENS);
  const running = await serve({
    url: g.url,
    targets,
    secret,
    host: opts.host,
    port: opts.port,
    dir: opts.dir,
    databaseUrl: opts.databaseUrl,
    concurrency: opts.concurrency,
    sockets: opts.sockets,
    log: err,
    onProblem: (tenant, p) => err(`[${tenant}] REFUSED session ${p.session}: event seq ${p.seq} not stored: ${p.reason}`),
  });
  out(`audit service listening on ${running.service.url} (store: ${running.store.database.describe}; following ${targets.map((t) => t.tenant).join(", ") || "no tenant"})`);
  // A store that failed answers nothing any more: the service ends (npm start says so, and
  // the gateway answers 503) rather than answer every query with an internal error.
  const ended = await Promise.race([untilSignal(), running.failed]);
  await running.stop();
  if (ended instanceof Error) {
    err(`error: ${ended.message}; the audit service stops`);
    return 1;
  }
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  let code = 0;
  const p = new Command("governor audit")
    .description("the audit store's sync and service (reads: `governor audit query|spend|export`)")
    .option("--url <url>", "Governor base URL", process.env.GOVERNOR_URL || "http://127.0.0.1:1999")
    .option("--token <token>", "an operator's or auditor's token of the tenant", process.env.GOVERNOR_TOKEN || "dev")
    .option("--tenant <tenant>", "the tenant to follow (the token's)", process.env.GOVERNOR_TENANT || "local")
    .exitOverride()
    .showHelpAfterError();

  storeOptions(
    p
      .command("sync")
      .description("follow the tenant's sessions into the audit store, verifying every event's chain link")
      .option("--once", "stop when every session is stored up to where the index said it was"),
  ).action(async (opts: StoreOpts & { once?: boolean }, cmd: Command) => {
    code = await sync(cmd.optsWithGlobals<Globals>(), opts);
  });

  storeOptions(
    p
      .command("serve")
      .description("the audit service for the gateway's /v1/audit routes, with the syncs that feed it (npm start runs it)")
      .option("--host <host>", "address to listen on", "127.0.0.1")
      .addOption(new Option("--port <port>", "port (0: any free one)").default(Number(process.env.GOVERNOR_AUDIT_PORT || 0)).argParser(count(0))),
  ).action(async (opts: StoreOpts & { host: string; port: number }, cmd: Command) => {
    code = await serveCommand(cmd.optsWithGlobals<Globals>(), opts, cmd.getOptionValueSourceWithGlobals("token") === "cli");
  });

  try {
    await p.parseAsync(argv);
    return code;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    err(`error: ${(e as Error)?.message ?? String(e)}`);
    return 1;
  }
}

process.exitCode = await main(process.argv);
