import WS from "ws";
import { listeningPorts } from "../scripts/devtools.js";
import { sleep } from "./harness";

// `partykit dev` keeps a DevTools session open on workerd and turns on its Network domain,
// so workerd reports every subrequest (each gateway-to-actor call and each upstream fetch)
// as four inspector events, which partykit's Node process then parses and, with no
// DevTools window attached, buffers. partykit proxies that session on a port of its own;
// through it a client can send DevTools commands to workerd (workerd takes one session).
// startGovernor() and `npm start` turn the events off (scripts/devtools.js); this joins the
// session to count them (profile.ts, with `devtoolsNetwork: true`).

export interface DevtoolsSession {
  /** Inspector events received since `counted()` was last called, by method. */
  counted(): Record<string, number>;
  /** URLs of the subrequests workerd reported (network events on) since this was last called. */
  subrequests(): string[];
  send(method: string, params?: Record<string, unknown>): void;
  close(): void;
}

/** Joins partykit dev's DevTools proxy (the Node process `pid`), or returns null if it has none. */
export async function joinDevtools(pid: number): Promise<DevtoolsSession | null> {
  if (process.platform !== "linux") return null;
  for (const port of listeningPorts(pid)) {
    let targets: unknown;
    try {
      targets = await (await fetch(`http://127.0.0.1:${port}/json`, { signal: AbortSignal.timeout(2_000) })).json();
    } catch {
      continue; // another of its servers (the loopback for workerd's logs)
    }
    if (!Array.isArray(targets) || !targets.length) continue;
    const ws = new WS(`ws://127.0.0.1:${port}/ws`);
    await new Promise((ok, fail) => {
      ws.once("open", ok);
      ws.once("error", fail);
    });
    let counts: Record<string, number> = {};
    let urls: string[] = [];
    ws.on("message", (raw) => {
      const m = JSON.parse(String(raw)) as { id?: number; method?: string; params?: { request?: { url?: string } } };
      // workerd's answer to a command repeats its method; only events (no id) are counted.
      if (!m.method || m.id !== undefined) return;
      counts[m.method] = (counts[m.method] ?? 0) + 1;
      if (m.method === "Network.requestWillBeSent" && m.params?.request?.url) urls.push(m.params.request.url);
    });
    // The proxy wires the two sockets together on its next render.
    await sleep(500);
    let id = 900_000_000;
    return {
      counted() {
        const c = counts;
        counts = {};
        return c;
      },
      subrequests() {
        const u = urls;
        urls = [];
        return u;
      },
      send(method, params = {}) {
        ws.send(JSON.stringify({ id: id++, method, params }));
      },
      close: () => ws.close(),
    };
  }
  return null;
}
