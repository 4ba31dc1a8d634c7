import { ServerMessage } from "../../schema/protocol";
import { config } from "./config";
import type { SocketCheck } from "./identity";

// A socket that reconnects with jittered exponential backoff. Every message is validated
// with the server's own schema before a view sees it. A socket refused before it opens is
// not retried forever: the refusal is explained when HTTP can explain it, and after a few
// refusals it cannot explain the socket gives up and says so.

export type LinkStatus = { state: "connecting" | "live" | "offline" } | { state: "retrying"; inMs: number } | { state: "refused"; why: string };

/** Refusals in a row, with the token good and the server answering, before giving up. */
const UNEXPLAINED_LIMIT = 3;

export interface LiveOptions {
  /** What the connection is, for messages: "The tenant's live connection". */
  name: string;
  /** Asked again on every attempt, so a reconnect can resume after the last event seen. */
  path: () => string;
  /** The validated message, and the JSON as sent (hashes are checked on what the server sent). */
  onMessage: (m: ServerMessage, raw: unknown) => void;
  onStatus: (s: LinkStatus) => void;
  /** Why a socket closed before it opened (identity.ts checkSocket). */
  check?: () => Promise<SocketCheck>;
  /** Told once when the socket gives up. */
  onRefused?: (why: string) => void;
  onInvalid?: (why: string) => void;
}

export interface Live {
  close(): void;
}

const wsUrl = (path: string) => `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;

export const withToken = (path: string) => `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(config.token ?? "")}`;

export function live(o: LiveOptions): Live {
  let ws: WebSocket | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let attempt = 0;
  let unexplained = 0;
  let stopped = false;
  const refuse = (why: string) => {
    stopped = true;
    o.onStatus({ state: "refused", why });
    o.onRefused?.(why);
  };
  const open = () => {
    let opened = false;
    o.onStatus({ state: "connecting" });
    ws = new WebSocket(wsUrl(withToken(o.path())));
    ws.onopen = () => {
      opened = true;
      attempt = 0;
      unexplained = 0;
      o.onStatus({ state: "live" });
    };
    ws.onmessage = (e) => {
      let raw: unknown;
      try {
        raw = JSON.parse(String(e.data));
      } catch {
        o.onInvalid?.("a message that is not JSON");
        return;
      }
      const m = ServerMessage.safeParse(raw);
      if (!m.success) {
        const issue = m.error.issues[0];
        o.onInvalid?.(`a message that does not fit the protocol (${issue?.path.join(".")}: ${issue?.message})`);
        return;
      }
      o.onMessage(m.data, raw);
    };
    ws.onclose = async () => {
      if (stopped) return;
      if (!opened && o.check) {
        const c = await o.check();
        if (stopped) return;
        if (c.kind === "refused") return refuse(c.why);
        if (c.kind === "unexplained" && ++unexplained >= UNEXPLAINED_LIMIT) {
          return refuse(`${o.name}: the server refused it ${unexplained} times in a row, although it accepts the token over HTTP`);
        }
      }
      const delay = Math.round(Math.min(30_000, 500 * 2 ** attempt++) * (0.8 + Math.random() * 0.4));
      o.onStatus({ state: "retrying", inMs: delay });
      timer = setTimeout(() => !stopped && open(), delay);
    };
  };
  open();
  return {
    close() {
      stopped = true;
      clearTimeout(timer);
      ws?.close();
    },
  };
}
