import type * as Party from "partykit/server";
import { ForbiddenError } from "../lib/errors";
import type { SessionSummary, ServerMessage } from "../schema/protocol";
import { can } from "./auth";
import { admitSocket, refuseDirectRequest } from "./admission";
import { errorResponse, json } from "./http";
import { INTERNAL, type TenantOp } from "./ops";
import { SessionIndex } from "./session-index";

// One per tenant: the index of its sessions (pushed by the session actors), the tenant's
// default policy, and the quotas that span sessions (per user, per agent). Quotas are
// decided in one synchronous turn here, so two sessions cannot both take the last slot.

const DEFAULT_POLICY_KEY = "default-policy";
const SUBJECT_KEY = "subject-key";

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
const fromHex = (h: string) => new Uint8Array(h.match(/../g)!.map((x) => parseInt(x, 16)));

export default class TenantActor implements Party.Server {
  readonly options: Party.ServerOptions = { hibernate: true };
  private sessions = new SessionIndex();
  private hits = new Map<string, number[]>();
  /** Per model and profile, the largest billed/estimated input ratio any session saw (see party/session/reservations.ts). */
  private ratios = new Map<string, number>();
  private loaded = false;

  constructor(readonly room: Party.Room) {}

  static onBeforeConnect(req: Party.Request, lobby: Party.Lobby) {
    return admitSocket(req, lobby, (p, roomId) => {
      if (roomId !== p.tenant) throw new ForbiddenError("this token may not watch another tenant");
      if (!can(p, "list")) throw new ForbiddenError(`role "${p.role}" may not watch the tenant index`);
    });
  }

  static onBeforeRequest = refuseDirectRequest;

  private loading?: Promise<void>;

  // One load per instance: two first requests must not each rebuild the index from storage.
  private load(): Promise<void> {
    if (this.loaded) return Promise.resolve();
    this.loading ??= this.loadOnce().catch((e) => {
      this.loading = undefined;
      throw e;
    });
    return this.loading;
  }

  private async loadOnce() {
    const stored = await this.room.storage.list<SessionSummary>({ prefix: "s:" });
    this.sessions = SessionIndex.from(stored.values());
    const hits = await this.room.storage.list<number[]>({ prefix: "r:" });
    for (const [k, v] of hits) this.hits.set(k.slice(2), v);
    const ratios = await this.room.storage.list<number>({ prefix: "ratio:" });
    for (const [k, v] of ratios) this.ratios.set(k.slice(6), v);
    this.loaded = true;
  }

  async onStart() {
    await this.load();
  }

  private list(): SessionSummary[] {
    return [...this.sessions.values()].sort((a, b) => b.lastActivity - a.lastActivity);
  }

  onConnect(conn: Party.Connection, ctx: Party.ConnectionContext) {
    if (ctx.request.headers.get(INTERNAL.tenant) !== this.room.id) {
      conn.close(4003, "forbidden");
      return;
    }
    conn.send(JSON.stringify({ type: "sessions", sessions: this.list() } satisfies ServerMessage));
  }

  onMessage(_raw: string | ArrayBuffer | ArrayBufferView, conn: Party.Connection) {
    conn.send(JSON.stringify({ type: "error", code: "bad_request", message: "the tenant socket only sends; act on a session's socket" } satisfies ServerMessage));
  }

  async onRequest(req: Party.Request): Promise<Response> {
    try {
      if (req.headers.get(INTERNAL.tenant) !== this.room.id) throw new ForbiddenError("wrong tenant");
      await this.load();
      const op = (await req.json()) as TenantOp;
      switch (op.op) {
        case "upsert":
          return await this.upsert(op.summary);
        case "list":
          return json({ sessions: this.list() });
        case "page":
          return json(this.sessions.page(op.query));
        case "hit":
          return await this.hit(op.keys, op.now);
        case "get-default":
          return json({ policy: (await this.room.storage.get(DEFAULT_POLICY_KEY)) ?? null });
        case "set-default":
          await this.room.storage.put(DEFAULT_POLICY_KEY, op.policy);
          return json({ policy: op.policy });
        case "ratios":
          return json({ ratios: Object.fromEntries(this.ratios) });
        case "learn":
          return await this.learn(op.key, op.ratio);
        case "forget-ratios":
          return await this.forgetRatios(op.model, op.profile);
        case "wake-sessions":
          return json({ woken: await this.wakeSessions() });
        case "subject":
          return json(await this.subject(op.user));
      }
    } catch (e) {
      return errorResponse(e);
    }
  }

  private async upsert(summary: SessionSummary): Promise<Response> {
    // One update per session is in flight at a time, so the latest to arrive is the newest.
    this.sessions.upsert(summary);
    await this.room.storage.put(`s:${summary.session}`, summary);
    const msg = JSON.stringify({ type: "session", summary } satisfies ServerMessage);
    for (const c of this.room.getConnections()) c.send(msg);
    return json({ ok: true });
  }

  /** Counts a call against every key, or against none when any key is full. */
  private async hit(keys: Array<{ key: string; max: number; windowMs: number }>, now: number): Promise<Response> {
    const updates: Record<string, number[]> = {};
    for (const k of keys) {
      const recent = (this.hits.get(k.key) ?? []).filter((t) => t > now - k.windowMs);
      if (recent.length >= k.max) {
        const retryAfterMs = Math.max(1, Math.min(...recent) + k.windowMs - now);
        return json({ ok: false, key: k.key, retryAfterMs, count: recent.length });
      }
      updates[k.key] = [...recent, now];
    }
    for (const [k, v] of Object.entries(updates)) this.hits.set(k, v);
    await this.room.storage.put(Object.fromEntries(Object.entries(updates).map(([k, v]) => [`r:${k}`, v])));
    return json({ ok: true });
  }

  /** Only ever raised: a ratio is what estimates of that model must be multiplied by to cover what was billed. */
  private async learn(key: string, ratio: number): Promise<Response> {
    if (!(ratio > (this.ratios.get(key) ?? 0)) || !Number.isFinite(ratio)) return json({ ratio: this.ratios.get(key) ?? null });
    this.ratios.set(key, ratio);
    await this.room.storage.put(`ratio:${key}`, ratio);
    return json({ ratio });
  }

  /**
   * An operator's reset: estimates go back to the local count (times the model's factor)
   * until a settle shows again that the provider bills more. Keys are "<model>|<profile>".
   */
  private async forgetRatios(model?: string, profile?: string): Promise<Response> {
    const gone = [...this.ratios.keys()].filter((k) => {
      const cut = k.lastIndexOf("|");
      return model === undefined || (k.slice(0, cut) === model && (profile === undefined || k.slice(cut + 1) === profile));
    });
    for (const k of gone) this.ratios.delete(k);
    for (let i = 0; i < gone.length; i += 128) await this.room.storage.delete(gone.slice(i, i + 128).map((k) => `ratio:${k}`));
    return json({ removed: gone.length });
  }

  /**
   * An erasure's subject: its keyed digest (HMAC-SHA256 with this tenant's own key, made on
   * first use and kept here), which is what logs and the audit store record instead of the
   * id; and the subject's cross-session rate counts, whose keys hold the id, are dropped.
   */
  private async subject(user: string): Promise<{ subject: string; rateKeys: number }> {
    let raw = await this.room.storage.get<string>(SUBJECT_KEY);
    if (!raw) {
      raw = hex(crypto.getRandomValues(new Uint8Array(32)));
      await this.room.storage.put(SUBJECT_KEY, raw);
    }
    const key = await crypto.subtle.importKey("raw", fromHex(raw), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${this.room.id}\n${user}`)));
    const prefix = `user:${user}:`;
    const gone = [...this.hits.keys()].filter((k) => k.startsWith(prefix));
    for (const k of gone) this.hits.delete(k);
    for (let i = 0; i < gone.length; i += 128) await this.room.storage.delete(gone.slice(i, i + 128).map((k) => `r:${k}`));
    return { subject: `hmac-sha256:${hex(mac)}`, rateKeys: gone.length };
  }

  /**
   * After a restart, sessions with open reservations or pending approvals are woken so
   * their alarms are set again (the local runtime does not fire them on its own).
   */
  private async wakeSessions(): Promise<number> {
    const due = [...this.sessions.values()].filter((s) => s.reservations?.length || s.pendingApprovals?.length);
    await Promise.all(
      due.map((s) =>
        this.room.context.parties.session
          .get(`${this.room.id}:${s.session}`)
          .fetch({ method: "POST", headers: { "content-type": "application/json", [INTERNAL.tenant]: this.room.id, [INTERNAL.role]: "operator", [INTERNAL.name]: "governor" }, body: JSON.stringify({ op: "wake" }) })
          .then((r) => r.body?.cancel())
          .catch((e) => console.error(`session ${s.session} not woken`, e)),
      ),
    );
    return due.length;
  }
}
