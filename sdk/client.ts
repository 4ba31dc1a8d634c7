import { isMap, parseDocument, stringify } from "yaml";
import type { GovernorEvent } from "../schema/events";
import type { SessionSummary } from "../schema/protocol";
import { checkEvent, LogIntegrityError } from "../lib/audit";
import { isCheckpointLine, SignedCheckpoint } from "../lib/checkpoint";
import { errorFromResponse, GovernorApiError } from "./errors";
import { SessionHandle } from "./handle";
import { BoundSession } from "./bound";
import type {
  Attribution,
  ListSessionsOptions,
  SessionPage,
  ActionDecision,
  ActionRequest,
  ApprovalResult,
  BudgetCheck,
  FailMode,
  Fact,
  GovernorOptions,
  OpenSessionInput,
  ReportResult,
  WhoAmI,
} from "./types";

// Typed methods over the gateway's /v1 routes. Every non-2xx answer becomes a
// GovernorApiError; only checkAction turns "could not reach the server" into a decision,
// because that is the one call an agent must be able to act on either way.

export interface LogPage {
  events: GovernorEvent[];
  /** The signed head, on the page that reaches it (lib/checkpoint.ts). */
  checkpoint?: SignedCheckpoint;
  /** Set when the server has more events after this page. */
  nextAfter?: number;
  headSeq?: number;
}

export const UNREACHABLE = "governor_unreachable";

type Body = { json: unknown } | { yaml: string } | undefined;

export class Governor {
  readonly baseUrl: string;
  readonly tenant?: string;
  readonly failMode: FailMode;
  /** Set only when the caller chose a fail mode; otherwise a session's policy decides. */
  readonly explicitFailMode?: FailMode;
  private readonly token: string;
  private readonly fetchImpl: typeof fetch;
  private readonly WebSocketImpl?: unknown;
  private readonly handles = new Map<string, SessionHandle>();

  constructor(opts: GovernorOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, "");
    this.token = opts.token;
    this.tenant = opts.tenant;
    this.failMode = opts.failMode ?? "closed";
    this.explicitFailMode = opts.failMode;
    this.fetchImpl = opts.fetch ?? ((...args: Parameters<typeof fetch>) => fetch(...args));
    this.WebSocketImpl = opts.WebSocket;
  }

  private async send(method: string, path: string, body?: Body, signal?: AbortSignal): Promise<Response> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.token}`, accept: "application/json" };
    let payload: string | undefined;
    if (body && "json" in body) {
      headers["content-type"] = "application/json";
      payload = JSON.stringify(body.json);
    } else if (body && "yaml" in body) {
      headers["content-type"] = "application/yaml";
      payload = body.yaml;
    }
    const res = await this.fetchImpl(`${this.baseUrl}${path}`, { method, headers, body: payload, signal });
    if (!res.ok) throw errorFromResponse(res.status, await res.text());
    return res;
  }

  private async call<T>(method: string, path: string, body?: Body, signal?: AbortSignal): Promise<T> {
    const res = await this.send(method, path, body, signal);
    return (await res.json()) as T;
  }

  private sessionPath(id: string, sub = ""): string {
    return `/v1/sessions/${encodeURIComponent(id)}${sub}`;
  }

  /** 201 for a new session, 200 (unchanged) when the id is already open. */
  async openSession(input: OpenSessionInput): Promise<SessionSummary> {
    const { id, policy, agent, user, task } = input;
    if (typeof policy !== "string") return this.call("POST", "/v1/sessions", { json: { id, policy, agent, user, task } });
    return this.call("POST", `/v1/sessions?id=${encodeURIComponent(id)}`, { yaml: withYamlFields(policy, { id, agent, user, task }) });
  }

  /**
   * One page of the tenant's sessions, newest opened first; pass `nextCursor` back as
   * `cursor` for the next. A server from before paging answers every session at once
   * (and ignores the filters): that arrives as a single page.
   */
  async listSessions(opts: ListSessionsOptions = {}): Promise<SessionPage> {
    const q = new URLSearchParams();
    if (opts.limit !== undefined) q.set("limit", String(opts.limit));
    if (opts.cursor) q.set("cursor", opts.cursor);
    if (opts.state !== undefined) q.set("state", Array.isArray(opts.state) ? opts.state.join(",") : opts.state);
    if (opts.agent !== undefined) q.set("agent", opts.agent);
    if (opts.user !== undefined) q.set("user", opts.user);
    for (const k of ["since", "until"] as const) {
      const v = opts[k];
      if (v !== undefined) q.set(k, v instanceof Date ? String(v.getTime()) : String(v));
    }
    const page = await this.call<Partial<SessionPage> & { sessions: SessionSummary[] }>("GET", `/v1/sessions${q.size ? `?${q}` : ""}`);
    return { sessions: page.sessions, nextCursor: page.nextCursor ?? null, total: page.total ?? page.sessions.length };
  }

  /** Every session matching the filters, page by page (`limit` is the page size). */
  async *allSessions(opts: Omit<ListSessionsOptions, "cursor"> = {}): AsyncGenerator<SessionSummary> {
    const seen = new Set<string>();
    let cursor: string | undefined;
    for (;;) {
      const page = await this.listSessions({ ...opts, cursor });
      for (const s of page.sessions) yield s;
      // A cursor that repeats would loop forever; only trust one that moves on.
      if (!page.nextCursor || seen.has(page.nextCursor) || !page.sessions.length) return;
      seen.add(page.nextCursor);
      cursor = page.nextCursor;
    }
  }

  getSession(id: string): Promise<SessionSummary> {
    return this.call("GET", this.sessionPath(id));
  }

  budgetCheck(id: string): Promise<BudgetCheck> {
    return this.call("GET", `/v1/budget-check?session=${encodeURIComponent(id)}`);
  }

  /**
   * `waitSeconds` holds the answer to a review until an operator decides (or the wait ends).
   * A network failure is decided by failMode instead of thrown; a refusal by the server is not.
   */
  async checkAction(id: string, action: ActionRequest, opts: { waitSeconds?: number; failMode?: FailMode; signal?: AbortSignal } = {}): Promise<ActionDecision> {
    const query = opts.waitSeconds ? `?wait=${opts.waitSeconds}` : "";
    const failMode = opts.failMode ?? this.failMode;
    try {
      return await this.call<ActionDecision>("POST", this.sessionPath(id, `/actions${query}`), { json: action }, opts.signal);
    } catch (e) {
      if (e instanceof GovernorApiError || !isNetworkError(e)) throw e;
      return {
        ...(action.id !== undefined && { id: action.id }),
        decision: failMode === "open" ? "allow" : "deny",
        code: UNREACHABLE,
        rule: "fail_mode",
        reason: `Governor could not be reached (${describe(e)}); fail_mode ${failMode}`,
        spentUsd: null,
        remainingUsd: null,
      };
    }
  }

  report(id: string, fact: Fact): Promise<ReportResult> {
    return this.call("POST", this.sessionPath(id, "/events"), { json: fact });
  }

  approve(id: string, approvalId: string, note?: string): Promise<ApprovalResult> {
    return this.call("POST", this.sessionPath(id, `/approvals/${encodeURIComponent(approvalId)}`), { json: { decision: "approve", note } });
  }

  deny(id: string, approvalId: string, note?: string): Promise<ApprovalResult> {
    return this.call("POST", this.sessionPath(id, `/approvals/${encodeURIComponent(approvalId)}`), { json: { decision: "deny", note } });
  }

  kill(id: string, reason?: string): Promise<SessionSummary> {
    return this.call("POST", this.sessionPath(id, "/kill"), { json: reason === undefined ? {} : { reason } });
  }

  /** One page of the log; each event is schema-checked but kept byte-for-byte as stored, so its hash still verifies. */
  async logPage(id: string, opts: { after?: number; limit?: number } = {}): Promise<LogPage> {
    const q = new URLSearchParams();
    if (opts.after !== undefined) q.set("after", String(opts.after));
    if (opts.limit !== undefined) q.set("limit", String(opts.limit));
    const res = await this.send("GET", this.sessionPath(id, `/log${q.size ? `?${q}` : ""}`));
    const text = await res.text();
    let expected = (opts.after ?? 0) + 1;
    const events: GovernorEvent[] = [];
    let checkpoint: SignedCheckpoint | undefined;
    for (const line of text.split("\n")) {
      if (!line.trim()) continue;
      let raw: unknown;
      try {
        raw = JSON.parse(line);
      } catch (e) {
        throw new LogIntegrityError(expected, `line is not valid JSON (${(e as Error).message})`);
      }
      if (isCheckpointLine(raw)) {
        const c = SignedCheckpoint.safeParse(raw);
        if (!c.success) throw new LogIntegrityError(expected, `the checkpoint line is malformed: ${c.error.issues[0]?.message}`);
        checkpoint = c.data;
        continue;
      }
      const event = checkEvent(raw, expected);
      events.push(event);
      expected = event.seq + 1;
    }
    const next = res.headers.get("x-governor-next-after");
    const head = res.headers.get("x-governor-head-seq");
    return { events, ...(checkpoint && { checkpoint }), ...(next !== null && { nextAfter: Number(next) }), ...(head !== null && { headSeq: Number(head) }) };
  }

  async log(id: string, opts: { after?: number; limit?: number } = {}): Promise<GovernorEvent[]> {
    return (await this.logPage(id, opts)).events;
  }

  /**
   * The whole log after `after`, following x-governor-next-after page by page: the events
   * only. A file meant to prove itself later needs the checkpoint too: exportSigned.
   */
  async exportLog(id: string, opts: { after?: number; pageSize?: number } = {}): Promise<GovernorEvent[]> {
    return (await this.exportSigned(id, opts)).events;
  }

  /** The whole log and the checkpoint it ends with: what `governor replay --session` verifies. */
  async exportSigned(id: string, opts: { after?: number; pageSize?: number } = {}): Promise<{ events: GovernorEvent[]; checkpoint?: SignedCheckpoint }> {
    const all: GovernorEvent[] = [];
    let after = opts.after ?? 0;
    for (;;) {
      const page = await this.logPage(id, { after, limit: opts.pageSize ?? 1000 });
      all.push(...page.events);
      // A header that does not move forward would loop forever; trust only progress.
      if (page.nextAfter === undefined || page.nextAfter <= after || !page.events.length) return { events: all, ...(page.checkpoint && { checkpoint: page.checkpoint }) };
      after = page.nextAfter;
    }
  }

  /**
   * A session as seen by one agent run, over HTTP only: what `guard()` and the framework
   * integrations act on. The attribution goes with every check and every proxied call.
   */
  bind(id: string, attribution: Attribution = {}): BoundSession {
    return new BoundSession(this, id, attribution);
  }

  /** Opens the session (or finds it open) and binds it: the one call an agent makes first. */
  async start(input: OpenSessionInput & { run?: string }): Promise<BoundSession> {
    const summary = await this.openSession(input);
    const bound = this.bind(input.id, { agent: input.agent, user: input.user, task: input.task, run: input.run });
    bound.learn(summary);
    return bound;
  }

  /**
   * What a provider SDK needs to go through the proxy: the Governor token as its key (the
   * gateway strips it and sends its own) and the session's headers. `openai` is the
   * OpenAI-style base (…/v1); `anthropic` the Anthropic SDK's (it adds /v1 itself).
   */
  proxyOptions(provider: "openai" | "anthropic", headers: Record<string, string>): { apiKey: string; baseURL: string; defaultHeaders: Record<string, string> } {
    const baseURL = provider === "openai" ? `${this.baseUrl}/v1/proxy/openai/v1` : `${this.baseUrl}/v1/proxy/anthropic`;
    return { apiKey: this.token, baseURL, defaultHeaders: { ...headers } };
  }

  /** Who this client's token is (GET /v1/whoami): its tenant, role and name, never the token. */
  whoami(): Promise<WhoAmI> {
    return this.call("GET", "/v1/whoami");
  }

  /** The deployment's public checkpoint key (GET /v1/checkpoints/key). */
  checkpointKey(): Promise<{ alg: "Ed25519"; kid: string; x: string; jwk: JsonWebKey; pem: string; source: "env" | "generated" }> {
    return this.call("GET", "/v1/checkpoints/key");
  }

  /** A recorded session decided again under another policy (POST /v1/sessions/:id/what-if). */
  whatIf(id: string, policy: string | object, opts: { replace?: boolean } = {}): Promise<import("../lib/replay").ReplayResult> {
    const path = this.sessionPath(id, `/what-if${opts.replace ? "?mode=replace" : ""}`);
    return this.call("POST", path, typeof policy === "string" ? { yaml: policy } : { json: policy });
  }

  /** One socket per session, shared by every caller of this client until closed. */
  session(id: string): SessionHandle {
    const open = this.handles.get(id);
    if (open && !open.closed) return open;
    if (!this.tenant) throw new Error("session(): pass `tenant` to new Governor({...}) (`(await gov.whoami()).tenant` is the token's); the socket room is <tenant>:<session>");
    const handle = new SessionHandle({
      baseUrl: this.baseUrl,
      token: this.token,
      tenant: this.tenant,
      session: id,
      WebSocket: this.WebSocketImpl,
      recover: async (action) => {
        const d = await this.checkAction(id, action, { waitSeconds: 0.05 });
        // fail_mode answers for this call, not for the operator's decision being recovered.
        if (d.code === UNREACHABLE) throw new Error(d.reason);
        return d;
      },
      onClose: () => this.handles.delete(id),
    });
    this.handles.set(id, handle);
    return handle;
  }
}

/**
 * YAML stays YAML (comments and all); the session fields are set on the document itself
 * because the gateway reads them from the body when the body is the policy.
 */
function withYamlFields(text: string, fields: Record<string, string | undefined>): string {
  const doc = parseDocument(text);
  if (doc.contents === null) return stringify(Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)));
  if (doc.errors.length || !isMap(doc.contents)) return text;
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) doc.set(k, v);
  return doc.toString();
}

function isNetworkError(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  // undici throws TypeError("fetch failed") with the socket error as its cause; a bad URL
  // is also a TypeError but is a mistake to report, not an outage to fail open through.
  if (e instanceof TypeError && e.message === "fetch failed") return true;
  const code = (e as { code?: string; cause?: { code?: string } }).cause?.code ?? (e as { code?: string }).code ?? "";
  return /^(ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EPIPE|UND_ERR)/.test(code);
}

function describe(e: unknown): string {
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (e as Error).message;
}
