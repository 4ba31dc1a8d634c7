import { createReadStream, existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { Command, CommanderError, InvalidArgumentError } from "commander";
import { LogIntegrityError, parseNdjson, type AuditBad, type Entry, type KeySource } from "../lib/audit";
import { describeKey, generateSigningKey, importPublicKey } from "../lib/checkpoint";
import { BadRequestError } from "../lib/errors";
import { replayReport, type ReplayResult } from "../lib/replay";
import { parseYamlText } from "../schema/policy";
import { Governor } from "./client";
import { GovernorApiError } from "./errors";
import { formatApproval, formatError, formatSession, formatSessionPage, usd, type ActionChecked } from "./cli/format";
import { formatReplay } from "./cli/replay-format";
import type { SessionPage, SessionState, SessionSummary } from "./types";
import { registerAudit } from "./cli/audit";

// `governor`: exit 0 on success, 1 when the answer is bad (a broken log, a refusal, an
// unreachable server), 2 when the command line itself is wrong.

interface Globals {
  url: string;
  token: string;
  /** Only when given (--tenant or GOVERNOR_TENANT); else the token's, asked of the server. */
  tenant?: string;
  json?: boolean;
}

class UsageError extends Error {}

async function readTokenFile(file: string): Promise<string> {
  let text: string;
  try {
    // Typed at a terminal: say what is awaited, or the command looks hung.
    if (file === "-" && process.stdin.isTTY) process.stderr.write("governor: API token (then Enter and Ctrl-D): ");
    text = await firstLine(file === "-" ? process.stdin : createReadStream(file));
  } catch (e) {
    throw new UsageError(`--token-file ${file}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (e as Error).message}`);
  }
  const token = text.trim();
  if (!token) throw new UsageError(`--token-file ${file}: the first line is empty`);
  // A wrong file (binary, another secret) would otherwise fail in the HTTP client, whose
  // message quotes the header, and so the file's first line: said here, without the text.
  const bad = /[\u0000-\u001f\u007f]|[^\u0000-\u00ff]/.exec(token);
  if (bad) throw new UsageError(`--token-file ${file}: the first line is not a token (character ${bad.index + 1} is a control character or cannot go in an HTTP header)`);
  return token;
}

// A reader that stops early (`| head`) is not an error.
process.stdout.on("error", (e: NodeJS.ErrnoException) => {
  if (e.code === "EPIPE") process.exit(0);
  throw e;
});
const out = (s: string) => process.stdout.write(`${s}\n`);
const err = (s: string) => process.stderr.write(`${s}\n`);

// Actions (HTTP, socket and MCP tool calls alike) are read from the log's tail.
const ACTION_TAIL = 500;

/** The latest actions of a session, oldest first; undefined for a token that may not read the log. */
async function recentActions(gov: Governor, session: string, seq: number, n: number): Promise<ActionChecked[] | undefined> {
  try {
    const page = await gov.logPage(session, { after: Math.max(0, seq - ACTION_TAIL), limit: ACTION_TAIL });
    return page.events.filter((e): e is ActionChecked => e.type === "action.checked").slice(-n);
  } catch (e) {
    if (e instanceof GovernorApiError && e.status === 403) return undefined;
    throw e;
  }
}

function nonNegativeInt(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n)) throw new InvalidArgumentError("expected a non-negative integer");
  return n;
}

function pageSize(v: string): number {
  const n = nonNegativeInt(v);
  if (n < 1 || n > 500) throw new InvalidArgumentError("expected an integer from 1 to 500");
  return n;
}

interface SessionsOptions {
  limit?: number;
  cursor?: string;
  state?: string;
  agent?: string;
  user?: string;
  since?: string;
  until?: string;
  all?: boolean;
}

function program(): { p: Command; result: () => number } {
  const p = new Command("governor")
    .description("Governor: inspect and steer governed agent sessions, and verify their logs")
    .option("--url <url>", "Governor base URL", process.env.GOVERNOR_URL || "http://127.0.0.1:1999")
    .option("--token <token>", "API token (operator or auditor for most commands)", process.env.GOVERNOR_TOKEN || "dev")
    .option("--token-file <file>", "read the API token from this file's first line ('-' for stdin): unlike --token, not visible in the process list", process.env.GOVERNOR_TOKEN_FILE || undefined)
    .option("--tenant <tenant>", "tenant of the token (default: the token's own, from GET /v1/whoami)", process.env.GOVERNOR_TENANT || undefined)
    .option("--json", "machine-readable output")
    .exitOverride()
    .showHelpAfterError();

  // A token given on the command line shows in `ps` to every user of the machine; a file
  // (or stdin) does not. The file wins over GOVERNOR_TOKEN; --token given for one command
  // wins over GOVERNOR_TOKEN_FILE; both options at once are a mistake.
  p.hook("preAction", async (root, action) => {
    const file = root.opts<{ tokenFile?: string }>().tokenFile;
    if (file === undefined) return;
    if (root.getOptionValueSource("token") === "cli") {
      if (root.getOptionValueSource("tokenFile") === "cli") throw new UsageError("--token and --token-file: give one of them");
      return;
    }
    if (file === "-" && action.name() === "replay" && action.args[0] === "-") throw new UsageError("--token-file - and replay -: only one of them can read stdin; give the token in a file or GOVERNOR_TOKEN");
    root.setOptionValue("token", await readTokenFile(file));
  });

  const ctx = (cmd: Command) => {
    const g = cmd.optsWithGlobals<Globals>();
    return { g, gov: new Governor({ baseUrl: g.url, token: g.token, tenant: g.tenant }) };
  };
  const print = (g: Globals, data: unknown, human: () => string) => out(g.json ? JSON.stringify(data, null, 2) : human());

  let code = 0;
  const result = () => code;

  p.command("replay")
    .description("verify a log (hash chain, signed checkpoint) and fold it through the session machine; with --policy, decide it again under another policy")
    .argument("[file]", "an exported NDJSON log ('-' for stdin)")
    .option("--session <id>", "fetch the log of this session from the server instead of a file")
    .option("--policy <file>", "what-if: re-decide every recorded call and action under this policy (YAML or JSON)")
    .option("--replace", "with --policy: take the file as the whole policy (default: it overrides the recorded policy field by field)")
    .option("--key <key>", "public key to verify the checkpoint with: base64url, JWK, PEM, or a file holding one (default: the server's)")
    .action(async (file: string | undefined, opts: { session?: string; policy?: string; replace?: boolean; key?: string }, cmd: Command) => {
      const { g, gov } = ctx(cmd);
      if ((file === undefined) === (opts.session === undefined)) throw new UsageError("replay takes a file or --session <id>, not both or neither");
      if (opts.replace && !opts.policy) throw new UsageError("--replace goes with --policy <file>");
      const other = opts.policy === undefined ? undefined : { policy: await readPolicy(opts.policy), mode: opts.replace ? ("replace" as const) : ("merge" as const) };
      const keys = opts.key !== undefined ? await keysFromOption(opts.key) : () => keysFromServer(gov, g.url);
      let result: ReplayResult;
      const entries = file !== undefined ? parseNdjson(await readLog(file)) : await known(gov, g, opts.session!, () => sessionEntries(gov, opts.session!));
      if (!Array.isArray(entries)) result = entries;
      else {
        try {
          result = await replayReport(entries, keys, other);
        } catch (e) {
          if (e instanceof BadRequestError) throw new UsageError(`--policy ${opts.policy}: ${e.message}`);
          throw e;
        }
      }
      print(g, result, () => formatReplay(result, opts.policy));
      if (!result.ok) code = 1;
    });

  p.command("keygen")
    .description("make an Ed25519 key for GOVERNOR_SIGNING_KEY (the key that signs checkpoints)")
    .action(async (_opts: unknown, cmd: Command) => {
      const { g } = ctx(cmd);
      const { key, jwk } = await generateSigningKey();
      const pub = await describeKey(key);
      print(g, { privateJwk: jwk, public: pub }, () =>
        [
          "# the private key: keep it secret, set it as a secret of the deployment",
          `GOVERNOR_SIGNING_KEY='${JSON.stringify(jwk)}'`,
          "",
          `# the public key (kid ${pub.kid}): give it to whoever verifies logs (governor replay --key)`,
          pub.x,
        ].join("\n"),
      );
    });

  p.command("sessions")
    .description("list the tenant's sessions, newest opened first, a page at a time")
    .option("--limit <n>", "page size, 1-500 (server default 100)", pageSize)
    .option("--cursor <cursor>", "the next page: the cursor the previous page printed")
    .option("--state <states>", "comma list of active, alerting, awaiting-approval, killed, closed")
    .option("--agent <agent>", "only this agent's sessions")
    .option("--user <user>", "only this user's sessions")
    .option("--since <when>", "opened at or after: epoch ms, an ISO date, or a duration ago (30d, 12h)")
    .option("--until <when>", "opened before; same forms as --since")
    .option("--all", "follow the cursor through every page")
    .action(async (opts: SessionsOptions, cmd: Command) => {
      const { g, gov } = ctx(cmd);
      const filters = { limit: opts.limit, state: opts.state as SessionState | undefined, agent: opts.agent, user: opts.user, since: opts.since, until: opts.until };
      let page: SessionPage;
      if (opts.all) {
        if (opts.cursor) throw new UsageError("--all starts at the first page; leave out --cursor");
        const sessions: SessionSummary[] = [];
        for await (const s of gov.allSessions(filters)) sessions.push(s);
        page = { sessions, nextCursor: null, total: sessions.length };
      } else {
        page = await gov.listSessions({ ...filters, cursor: opts.cursor });
      }
      print(g, page, () => formatSessionPage(page));
    });

  p.command("whoami")
    .description("the token's tenant, role and name (GET /v1/whoami); exit 1 when --tenant names another tenant")
    .action(async (_opts: unknown, cmd: Command) => {
      const { g, gov } = ctx(cmd);
      const who = await gov.whoami();
      print(g, who, () => `${who.name}: ${who.role} of tenant ${who.tenant}`);
      if (g.tenant !== undefined && g.tenant !== who.tenant) {
        err(`--tenant ${g.tenant} is not this token's tenant (${who.tenant}): every route answers for ${who.tenant}`);
        code = 1;
      }
    });

  p.command("show")
    .description("a session's state, spend, counters, pending approvals and recent actions")
    .argument("<session>")
    .option("--actions <n>", "how many recent actions to list (from the log: operators and auditors)", nonNegativeInt, 10)
    .action(async (session: string, opts: { actions: number }, cmd: Command) => {
      const { g, gov } = ctx(cmd);
      const s = await known(gov, g, session, () => gov.getSession(session));
      const actions = opts.actions > 0 ? await recentActions(gov, session, s.seq, opts.actions) : undefined;
      print(g, actions ? { ...s, recentActions: actions } : s, () => formatSession(s, actions));
    });

  for (const verb of ["approve", "deny"] as const) {
    p.command(verb)
      .description(`${verb} a pending approval`)
      .argument("<session>")
      .argument("<approval>", "approval id, as shown by `governor show`")
      .option("--note <text>", "recorded with the decision")
      .action(async (session: string, approval: string, opts: { note?: string }, cmd: Command) => {
        const { g, gov } = ctx(cmd);
        const r = await known(gov, g, session, () => gov[verb](session, approval, opts.note));
        print(g, r, () => formatApproval(session, r));
      });
  }

  p.command("kill")
    .description("kill a session: every further call and action is refused")
    .argument("<session>")
    .option("--reason <text>", "why, recorded in the log")
    .action(async (session: string, opts: { reason?: string }, cmd: Command) => {
      const { g, gov } = ctx(cmd);
      const s = await known(gov, g, session, () => gov.kill(session, opts.reason));
      print(g, s, () => `killed ${session}: ${s.killed?.reason ?? "killed"} (spent ${usd(s.spentUsd)})`);
    });

  p.command("log")
    .description("print a session's event log as NDJSON")
    .argument("<session>")
    .option("--after <seq>", "only events after this sequence number", nonNegativeInt)
    .action(async (session: string, opts: { after?: number }, cmd: Command) => {
      const { g, gov } = ctx(cmd);
      const { events, checkpoint } = await known(gov, g, session, () => gov.exportSigned(session, { after: opts.after }));
      for (const e of events) out(JSON.stringify(e));
      // The signed head last, so the file proves itself: `governor replay <file>`.
      if (checkpoint) out(JSON.stringify(checkpoint));
    });

  registerAudit(p, { out, err, fail: (c) => (code = c) });
  return { p, result };
}

/**
 * A session the server does not know, told the way a CLI user can act on: the server's
 * own text names its HTTP route, and the tenant is the token's unless --tenant said it.
 */
async function known<T>(gov: Governor, g: Globals, session: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (e) {
    if (!(e instanceof GovernorApiError) || e.status !== 404 || e.code !== "not_found" || !e.message.startsWith("no such session")) throw e;
    const tenant = g.tenant ?? (await gov.whoami().then((w) => w.tenant, () => undefined));
    throw new GovernorApiError(404, {
      code: "not_found",
      field: "session",
      message: `no such session "${session}" in tenant ${tenant ?? "(the token's)"}. \`governor sessions\` lists the tenant's sessions; an agent's session is opened by the agent, with the SDK's gov.openSession({ id }) or gov.start({ id }), before its first call`,
    });
  }
}

async function readLog(file: string): Promise<string> {
  try {
    return file === "-" ? await readStdin() : await readFile(file, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read ${file}: ${(e as Error).message}`);
  }
}

async function readPolicy(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read --policy ${file}: ${(e as Error).message}`);
  }
  try {
    return parseYamlText(text);
  } catch (e) {
    throw new UsageError(`--policy ${file}: ${(e as Error).message}`);
  }
}

/** The log and its checkpoint as lines, or what made the server's log unreadable. */
async function sessionEntries(gov: Governor, session: string): Promise<Entry[] | AuditBad> {
  try {
    const { events, checkpoint } = await gov.exportSigned(session);
    return [...events, ...(checkpoint ? [checkpoint] : [])].map((raw) => ({ raw }));
  } catch (e) {
    if (!(e instanceof LogIntegrityError)) throw e;
    return { ok: false, problem: "chain", seq: e.seq, reason: e.reason };
  }
}

/** --key: a key, or a file holding one. */
async function keysFromOption(value: string): Promise<KeySource> {
  let text = value;
  if (existsSync(value)) text = await readFile(value, "utf8");
  try {
    return { keys: [await importPublicKey(text)], from: existsSync(value) ? `--key ${value}` : "--key" };
  } catch (e) {
    throw new UsageError(`--key: ${(e as Error).message}`);
  }
}

async function keysFromServer(gov: Governor, url: string): Promise<KeySource> {
  try {
    return { keys: [await importPublicKey(JSON.stringify(await gov.checkpointKey()))], from: `the server at ${url}` };
  } catch (e) {
    const why = e instanceof GovernorApiError ? `${e.code}: ${e.message}` : (e as Error).message;
    return { keys: [], error: `no --key was given, and the server at ${url} did not give its key (${why}): give --key (the signing server's GET /v1/checkpoints/key), or --url / GOVERNOR_URL naming that server` };
  }
}

/** A token is far shorter than this: a file past it without a line end (a device, a log) is no token file. */
const TOKEN_LINE_MAX = 16 * 1024;

/** The first line of `stream`, read no further than its end (a device like /dev/zero or a huge file is not read whole). */
async function firstLine(stream: NodeJS.ReadableStream & { destroy?: () => void }): Promise<string> {
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const c of stream) {
      const b = typeof c === "string" ? Buffer.from(c) : (c as Buffer);
      const end = b.indexOf(0x0a);
      chunks.push(end < 0 ? b : b.subarray(0, end));
      length += end < 0 ? b.length : end;
      if (end >= 0) break;
      if (length > TOKEN_LINE_MAX) throw new Error(`the first line is longer than ${TOKEN_LINE_MAX} bytes: not a token`);
    }
  } finally {
    if (stream !== process.stdin) stream.destroy?.();
  }
  return Buffer.concat(chunks).toString("utf8");
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function describeFailure(e: unknown, g: Globals): { text: string; code: number } {
  if (e instanceof UsageError) return { text: `error: ${e.message}`, code: 2 };
  if (e instanceof GovernorApiError) {
    const body = { error: { status: e.status, code: e.code, message: e.message, field: e.field, rule: e.rule } };
    return { text: g.json ? JSON.stringify(body) : formatError(e), code: 1 };
  }
  if (e instanceof LogIntegrityError) return { text: `error: the server's log is not intact: ${e.message}`, code: 1 };
  const cause = (e as { cause?: { code?: string } }).cause?.code;
  if (e instanceof TypeError && e.message === "fetch failed") return { text: `error: cannot reach Governor at ${g.url}${cause ? ` (${cause})` : ""}`, code: 1 };
  return { text: `error: ${(e as Error)?.message ?? String(e)}`, code: 1 };
}

/** Runs the CLI and returns its exit code; nothing here calls process.exit, so output flushes. */
export async function main(argv: string[]): Promise<number> {
  const { p, result } = program();
  try {
    await p.parseAsync(argv);
    return result();
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    const f = describeFailure(e, p.opts<Globals>());
    err(f.text);
    return f.code;
  }
}
