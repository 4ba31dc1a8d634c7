import { createHash, timingSafeEqual } from "node:crypto";
import { z } from "zod";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { pipeline } from "node:stream/promises";
import { ForbiddenError, GovernorError, NotFoundError, UnauthorizedError } from "../lib/errors";
import { toUsd } from "../lib/money";
import { checkpointsOf } from "./checkpoints";
import { CONTENT_TYPES, exportStream, withCheckpoints } from "./export";
import { parseEventQuery, parseExportQuery, parseSpendQuery } from "./filters";
import { eachEvent, eventPage, spend } from "./query";
import { erasureCandidates, listErasures, recordErasure } from "./erase";
import type { AuditStore } from "./store";

// The audit service: answers /v1/audit/* for the gateway, which has already checked the
// caller's token and passes the caller's tenant and role with a shared secret. It never
// sees a client token, and it answers only on the loopback address unless told otherwise.

export const AUDIT_HEADERS = {
  secret: "x-governor-audit-secret",
  tenant: "x-governor-tenant",
  role: "x-governor-role",
  name: "x-governor-name",
} as const;

const READERS = new Set(["operator", "auditor"]);

export interface ServiceOptions {
  store: AuditStore;
  secret: string;
  host?: string;
  port?: number;
  /** Sync state per tenant, for GET /v1/audit/sessions. */
  syncStatus?: (tenant: string) => unknown;
}

export interface AuditService {
  url: string;
  close(): Promise<void>;
}

const digest = (s: string) => createHash("sha256").update(s).digest();

/** Equal-length digests, compared without an early exit. */
function secretMatches(given: string | undefined, expected: Buffer): boolean {
  return timingSafeEqual(digest(given ?? ""), expected) && given !== undefined;
}

function send(res: ServerResponse, status: number, body: unknown) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: ServerResponse, e: unknown) {
  if (res.headersSent) {
    // Mid-stream: cut the connection so the reader sees a failed transfer, not a short file.
    res.destroy(e instanceof Error ? e : undefined);
    return;
  }
  if (e instanceof GovernorError) return send(res, e.status, { error: e.toJSON() });
  console.error("audit service: unexpected error", e instanceof Error ? e.stack : e);
  send(res, 500, { error: { code: "internal_error", message: "internal error" } });
}

const ErasureBody = z.object({ user: z.string().min(1).max(4096) });
const ErasureRecordBody = ErasureBody.extend({
  erasure: z.string().min(1).max(256),
  subject: z.string().min(1).max(256),
  sessions: z.array(z.object({ session: z.string().min(1).max(256), erased: z.array(z.number().int().positive()) })),
});

function parseBody<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const field = issue?.path.join(".") || "body";
  throw new GovernorError("bad_request", 400, `${field}: ${issue?.message ?? "invalid"}`, { field });
}

function operatorOnly(role: string) {
  if (role !== "operator") throw new ForbiddenError(`role "${role}" may not erase: operators only`);
}

const MAX_BODY = 16 * 1024 * 1024;

async function readJson(req: IncomingMessage): Promise<unknown> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new GovernorError("payload_too_large", 413, "the body is too large");
    parts.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(parts).toString("utf8"));
  } catch {
    throw new GovernorError("bad_request", 400, "the body is not JSON", { field: "body" });
  }
}

function caller(req: IncomingMessage, secret: Buffer): { tenant: string; role: string; name: string } {
  const h = (n: string) => {
    const v = req.headers[n];
    return Array.isArray(v) ? v[0] : v;
  };
  if (!secretMatches(h(AUDIT_HEADERS.secret), secret)) throw new UnauthorizedError("the audit service answers the gateway only");
  const tenant = h(AUDIT_HEADERS.tenant);
  const role = h(AUDIT_HEADERS.role) ?? "";
  if (!tenant) throw new UnauthorizedError("no tenant");
  if (!READERS.has(role)) throw new ForbiddenError(`role "${role}" may not read the audit store`);
  return { tenant, role, name: h(AUDIT_HEADERS.name) ?? "" };
}

export async function startAuditService(opts: ServiceOptions): Promise<AuditService> {
  if (!opts.secret) throw new Error("the audit service needs a secret (GOVERNOR_AUDIT_SECRET)");
  const secret = digest(opts.secret);
  const { store } = opts;

  async function handle(req: IncomingMessage, res: ServerResponse) {
    const url = new URL(req.url ?? "/", "http://audit");
    if (url.pathname === "/healthz") return send(res, 200, { ok: true, store: store.database.describe });
    const who = caller(req, secret);
    const route = `${req.method} ${url.pathname.replace(/\/+$/, "")}`;
    switch (route) {
      case "GET /v1/audit/events":
        return send(res, 200, await eventPage(store.db, who.tenant, parseEventQuery(url.searchParams)));
      case "GET /v1/audit/spend": {
        const { by, ...filter } = parseSpendQuery(url.searchParams);
        return send(res, 200, await spend(store.db, who.tenant, by, filter));
      }
      case "GET /v1/audit/export": {
        const { format, checkpoints, ...filter } = parseExportQuery(url.searchParams);
        res.writeHead(200, {
          "content-type": CONTENT_TYPES[format],
          "content-disposition": `attachment; filename="governor-audit-${who.tenant}.${format}"`,
          "cache-control": "no-store",
        });
        const events = eachEvent(store.db, who.tenant, filter);
        await pipeline(exportStream(format, checkpoints ? withCheckpoints(events, (sessions) => checkpointsOf(store.db, who.tenant, sessions)) : events), res);
        return;
      }
      case "GET /v1/audit/sessions": {
        const rows = await store.sessions(who.tenant);
        return send(res, 200, {
          sessions: rows.map((r) => ({
            session: r.session,
            state: r.state,
            storedSeq: r.seq,
            knownSeq: r.knownSeq,
            spentUsd: toUsd(r.spentNanos),
            user: r.user,
            agent: r.agent,
            ...(r.problemSeq !== null && { problem: { seq: r.problemSeq, reason: r.problem, at: r.problemAt } }),
          })),
          sync: opts.syncStatus?.(who.tenant) ?? null,
        });
      }
      case "GET /v1/audit/erasures":
        return send(res, 200, { erasures: await listErasures(store.db, who.tenant) });
      // The gateway's erasure (party/erasure.ts): where the store has the subject, then,
      // once the actors have erased, the store's own part. Operators only.
      case "POST /v1/audit/erasures/candidates": {
        operatorOnly(who.role);
        const body = parseBody(ErasureBody, await readJson(req));
        return send(res, 200, await erasureCandidates(store.db, who.tenant, body.user));
      }
      case "POST /v1/audit/erasures": {
        operatorOnly(who.role);
        const body = parseBody(ErasureRecordBody, await readJson(req));
        return send(res, 200, { erasure: await recordErasure(store.db, who.tenant, { ...body, by: who.name }) });
      }
    }
    throw new NotFoundError(`no audit route ${req.method} ${url.pathname}`);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((e) => sendError(res, e));
  });
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", () => ok());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${host}:${addr.port}`,
    close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
      }),
  };
}
