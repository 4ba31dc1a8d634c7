import { ServerMessage } from "../../schema/protocol";
import { config } from "./config";

// A socket that reconnects with jittered exponential backoff. Every message is validated
// with the server's own schema before a view sees it.

export type LinkStatus = { state: "connecting" | "live" | "offline" } | { state: "retrying"; inMs: number };

export interface LiveOptions {
  /** Asked again on every attempt, so a reconnect can resume after the last event seen. */
  path: () => string;
  /** The validated message, and the JSON as sent (hashes are checked on what the server sent). */
  onMessage: (m: ServerMessage, raw: unknown) => void;
  onStatus: (s: LinkStatus) => void;
  /** May answer false to stop retrying (a refused token). */
  onClose?: () => Promise<boolean>;
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
  let stopped = false;
  const open = () => {
    o.onStatus({ state: "connecting" });
    ws = new WebSocket(wsUrl(withToken(o.path())));
    ws.onopen = () => {
      attempt = 0;
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
      if (o.onClose && !(await o.onClose())) return o.onStatus({ state: "offline" });
      if (stopped) return;
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
