import WebSocket from "ws";

// How the sync reads a Governor: only its public doors (the NDJSON log route and the
// sockets), with an operator's or auditor's token, exactly as any other client would.

export interface Source {
  /** http(s) base URL of the gateway. */
  url: string;
  token: string;
  tenant: string;
}

export class SourceError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
  /** 401/403/404 will not change by trying again. */
  get final(): boolean {
    return this.status === 401 || this.status === 403 || this.status === 404;
  }
}

export interface LogPage {
  events: unknown[];
  /** A line that was not JSON: where the readable part of the page ends. */
  unreadable?: { seq: number; reason: string };
  more: boolean;
  headSeq?: number;
}

export async function fetchLog(src: Source, session: string, after: number, limit: number, signal?: AbortSignal): Promise<LogPage> {
  const res = await fetch(`${src.url.replace(/\/+$/, "")}/v1/sessions/${encodeURIComponent(session)}/log?after=${after}&limit=${limit}`, {
    headers: { authorization: `Bearer ${src.token}`, accept: "application/x-ndjson" },
    signal,
  });
  if (!res.ok) {
    const text = await res.text().catch(() => "");
    let message = text.slice(0, 300);
    try {
      message = (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? message;
    } catch {
      /* not JSON */
    }
    throw new SourceError(`log of ${session}: ${res.status} ${message}`, res.status);
  }
  const text = await res.text();
  const events: unknown[] = [];
  let unreadable: LogPage["unreadable"];
  let expected = after + 1;
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      const e = JSON.parse(line) as { seq?: unknown };
      events.push(e);
      if (typeof e?.seq === "number") expected = e.seq + 1;
    } catch (e) {
      const m = /"seq"\s*:\s*(\d+)/.exec(line);
      unreadable = { seq: m ? Number(m[1]) : expected, reason: `line is not valid JSON (${(e as Error).message})` };
      break;
    }
  }
  const head = Number(res.headers.get("x-governor-head-seq"));
  return { events, unreadable, more: res.headers.has("x-governor-next-after"), headSeq: Number.isInteger(head) ? head : undefined };
}

export function socketUrl(src: Source, path: string, query: Record<string, string> = {}): string {
  const base = src.url.replace(/\/+$/, "").replace(/^http/, "ws");
  const q = new URLSearchParams({ token: src.token, ...query });
  return `${base}${path}?${q}`;
}

/**
 * Opens a socket; `onMessage` gets each parsed JSON message. A refused upgrade rejects
 * with the server's status, so "wrong tenant" is told apart from "server not up yet".
 */
export function openSocket(url: string, onMessage: (m: { type?: string; [k: string]: unknown }) => void, onClose: (code: number) => void): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    let open = false;
    ws.on("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d));
      res.on("end", () => {
        let message = body.slice(0, 300);
        try {
          message = (JSON.parse(body) as { error?: { message?: string } }).error?.message ?? message;
        } catch {
          /* not JSON */
        }
        reject(new SourceError(`socket refused: ${res.statusCode} ${message}`, res.statusCode));
        ws.terminate();
      });
    });
    ws.on("open", () => {
      open = true;
      resolve(ws);
    });
    ws.on("message", (data) => {
      let m: unknown;
      try {
        m = JSON.parse(String(data));
      } catch {
        return;
      }
      if (m && typeof m === "object") onMessage(m as { type?: string });
    });
    ws.on("error", (e) => {
      if (!open) reject(new SourceError(`socket: ${e.message}`));
    });
    ws.on("close", (code) => {
      if (open) onClose(code);
    });
  });
}
