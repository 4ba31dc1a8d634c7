import PartySocket from "partysocket";
import WS from "ws";
import type { GovernorEvent } from "../schema/events";
import { ServerMessage, type SessionSummary } from "../schema/protocol";
import { MAX_SOCKET_MESSAGE_BYTES } from "../lib/limits";
import { utf8Length } from "../lib/text";
import { GovernorApiError, MessageTooLargeError } from "./errors";
import type { ActionDecision, ActionRequest, Fact, SocketDecision } from "./types";

// One socket per session. Decisions are matched to checks by id, and a check survives a
// reconnect: the server makes a check with a known id idempotent, so resending is safe.

export interface HandleOptions {
  baseUrl: string;
  token: string;
  tenant: string;
  session: string;
  WebSocket?: unknown;
  /** Asks over HTTP for an approval decided while the socket was down (its broadcast is gone). */
  recover: (action: ActionRequest & { id: string }) => Promise<ActionDecision>;
  onClose: () => void;
}

export interface CheckOptions {
  /** Called with the interim `review` decision; the promise resolves only on the final one. */
  onReview?: (d: SocketDecision) => void;
  signal?: AbortSignal;
}

interface Pending {
  request: ActionRequest & { id: string };
  resolve: (d: SocketDecision) => void;
  reject: (e: Error) => void;
  onReview?: (d: SocketDecision) => void;
  review?: SocketDecision;
}

type Listener<T> = (v: T) => void;

function socketUrlParts(baseUrl: string, room: string) {
  const url = new URL(baseUrl);
  const prefix = url.pathname.replace(/^\/+|\/+$/g, "");
  return {
    host: url.host,
    protocol: url.protocol === "https:" ? ("wss" as const) : ("ws" as const),
    basePath: `${prefix ? `${prefix}/` : ""}parties/session/${room}`,
  };
}

export class SessionHandle {
  readonly session: string;
  /** The latest summary the server pushed; undefined until the first `state` arrives. */
  state?: SessionSummary;
  closed = false;

  private socket: PartySocket;
  private readonly recover: HandleOptions["recover"];
  private readonly onClosed: () => void;
  private readonly stateListeners = new Set<Listener<SessionSummary>>();
  private readonly eventListeners = new Set<Listener<GovernorEvent>>();
  private readonly errorListeners = new Set<Listener<GovernorApiError>>();
  private readonly pending = new Map<string, Pending>();
  private subscribed = false;
  private subscribeSent = false;
  private lastEventSeq: number | undefined;
  private opens = 0;

  constructor(opts: HandleOptions) {
    this.session = opts.session;
    this.recover = opts.recover;
    this.onClosed = opts.onClose;
    const room = `${opts.tenant}:${opts.session}`;
    this.socket = new PartySocket({
      ...socketUrlParts(opts.baseUrl, room),
      room,
      party: "session",
      query: { token: opts.token },
      WebSocket: opts.WebSocket ?? (globalThis as { WebSocket?: unknown }).WebSocket ?? WS,
    });
    this.socket.addEventListener("message", (e) => this.onMessage(e.data));
    this.socket.addEventListener("open", () => this.onOpen());
  }

  /** Resolves with the first state the server sends (immediately if one has arrived). */
  ready(): Promise<SessionSummary> {
    if (this.state) return Promise.resolve(this.state);
    return new Promise((resolve) => {
      const off = this.onState((s) => {
        off();
        resolve(s);
      });
    });
  }

  onState(cb: Listener<SessionSummary>): () => void {
    this.stateListeners.add(cb);
    return () => this.stateListeners.delete(cb);
  }

  /**
   * Every event after the first state this handle saw (or after `after`), in order, each once:
   * the subscription asks the server to backfill from there, so events appended while the
   * subscribe was on its way are not lost, and duplicates of live pushes are dropped by seq.
   */
  onEvent(cb: Listener<GovernorEvent>, opts: { after?: number } = {}): () => void {
    this.eventListeners.add(cb);
    if (!this.subscribed) {
      this.subscribed = true;
      if (opts.after !== undefined) this.lastEventSeq = opts.after;
      this.trySubscribe();
    }
    return () => this.eventListeners.delete(cb);
  }

  /** Server errors not tied to a check: a refused report, a session that is not open, a bad message. */
  onError(cb: Listener<GovernorApiError>): () => void {
    this.errorListeners.add(cb);
    return () => this.errorListeners.delete(cb);
  }

  check(action: ActionRequest, opts: CheckOptions = {}): Promise<SocketDecision> {
    if (this.closed) return Promise.reject(new Error("the session handle is closed"));
    const request = { ...action, id: action.id ?? crypto.randomUUID() };
    return new Promise<SocketDecision>((resolve, reject) => {
      const settle = () => {
        this.pending.delete(request.id);
        opts.signal?.removeEventListener("abort", abort);
      };
      const abort = () => {
        settle();
        reject(opts.signal?.reason ?? new Error("aborted"));
      };
      if (opts.signal?.aborted) return abort();
      opts.signal?.addEventListener("abort", abort, { once: true });
      this.pending.set(request.id, {
        request,
        onReview: opts.onReview,
        resolve: (d) => {
          settle();
          resolve(d);
        },
        reject: (e) => {
          settle();
          reject(e);
        },
      });
      try {
        this.sendCheck(request);
      } catch (e) {
        this.pending.get(request.id)?.reject(e as Error);
      }
    });
  }

  /**
   * Fire and forget, like the server's answer to it: a refusal comes back through onError.
   * Throws MessageTooLargeError, unsent, when the fact is over the socket's limit.
   */
  report(fact: Fact): void {
    this.sendJson({ type: "report", report: fact });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.close();
    for (const p of this.pending.values()) p.reject(new Error("the session handle was closed before a final decision arrived"));
    this.onClosed();
  }

  /** Refuses, unsent, a message the server would refuse: a typed error naming its size and the limit. */
  private sendJson(m: { type: string; [k: string]: unknown }) {
    const text = JSON.stringify(m);
    // Length in UTF-16 units is at most the UTF-8 size, and a third of it at least: count only when it may matter.
    if (text.length > MAX_SOCKET_MESSAGE_BYTES / 3) {
      const bytes = utf8Length(text);
      if (bytes > MAX_SOCKET_MESSAGE_BYTES) throw new MessageTooLargeError(`this ${m.type}`, bytes);
    }
    this.socket.send(text);
  }

  private sendCheck(request: Pending["request"]) {
    this.sendJson({ type: "check", ...request });
  }

  private trySubscribe() {
    if (!this.subscribed || this.subscribeSent || this.socket.readyState !== PartySocket.OPEN) return;
    // Without a position yet, wait for the state the server sends on connect.
    const after = this.lastEventSeq ?? this.state?.seq;
    if (after === undefined) return;
    this.lastEventSeq = after;
    this.subscribeSent = true;
    this.sendJson({ type: "subscribe", tail: true, after });
  }

  private onOpen() {
    this.opens++;
    this.subscribeSent = false;
    this.trySubscribe();
    if (this.opens === 1) return;
    // Reconnected: answers in flight when the socket dropped are lost, ask again.
    for (const p of this.pending.values()) {
      if (!p.review) this.sendCheck(p.request);
      else void this.recoverReview(p);
    }
  }

  private async recoverReview(p: Pending) {
    try {
      const d = await this.recover(p.request);
      if (d.decision !== "review" && this.pending.get(p.request.id) === p) p.resolve({ ...d, id: p.request.id, spentUsd: d.spentUsd ?? 0, final: true });
    } catch {
      /* the broadcast may still come; the next reconnect tries again */
    }
  }

  private emitError(e: GovernorApiError) {
    for (const cb of this.errorListeners) cb(e);
  }

  private onMessage(data: unknown) {
    let json: unknown;
    try {
      json = JSON.parse(typeof data === "string" ? data : new TextDecoder().decode(data as ArrayBuffer));
    } catch {
      return this.emitError(GovernorApiError.fromSocket({ code: "bad_message", message: "the server sent a message that is not JSON" }));
    }
    const parsed = ServerMessage.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return this.emitError(GovernorApiError.fromSocket({ code: "bad_message", message: `unexpected server message: ${issue?.path.join(".")}: ${issue?.message}` }));
    }
    const m = parsed.data;
    switch (m.type) {
      case "state":
        // Pushes arrive in order on one socket; only a reconnect could hand us an older view.
        if (this.state && m.summary.seq < this.state.seq) return;
        this.state = m.summary;
        for (const cb of this.stateListeners) cb(m.summary);
        this.trySubscribe();
        return;
      case "event": {
        if (this.lastEventSeq !== undefined && m.event.seq <= this.lastEventSeq) return;
        this.lastEventSeq = m.event.seq;
        // The stored JSON, not zod's output, so a subscriber can verify the hash itself.
        const raw = (json as { event: GovernorEvent }).event;
        for (const cb of this.eventListeners) cb(raw);
        return;
      }
      case "decision": {
        const p = this.pending.get(m.id);
        if (!p) return;
        const { type: _t, ...decision } = m;
        if (decision.final) return p.resolve(decision);
        p.review = decision;
        p.onReview?.(decision);
        return;
      }
      case "error": {
        const err = GovernorApiError.fromSocket(m);
        const p = m.id ? this.pending.get(m.id) : undefined;
        if (p) return p.reject(err);
        return this.emitError(err);
      }
    }
  }
}
