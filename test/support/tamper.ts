import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import WebSocket, { WebSocketServer } from "ws";

// A man in the middle for the audit sync's tests: passes HTTP and sockets through to a
// real Governor, but serves one session's log with one event edited, on both the
// NDJSON route and the session socket, as a log forged after the fact would read; and
// optionally another session's signed checkpoints edited (`checkpoint`).

export interface Tamper {
  url: string;
  close(): Promise<void>;
}

export async function startTamperProxy(
  target: string,
  victim: { session: string; seq: number; edit: (e: Record<string, unknown>) => void },
  checkpoint?: { session: string; edit: (c: Record<string, unknown>) => void },
): Promise<Tamper> {
  const forge = (e: Record<string, unknown>) => {
    if (e.seq === victim.seq) victim.edit(e);
    return e;
  };
  const forgeCheckpoint = (c: Record<string, unknown>) => {
    checkpoint?.edit(c);
    return c;
  };
  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", target);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string" && k !== "host" && k !== "content-length") headers[k] = v;
    const upstream = await fetch(url, { method: req.method, headers, body: chunks.length ? Buffer.concat(chunks) : undefined });
    let body = Buffer.from(await upstream.arrayBuffer());
    if (url.pathname === `/v1/sessions/${victim.session}/log` && upstream.ok) {
      const lines = body.toString("utf8").split("\n").map((l: string) => (l.trim() ? JSON.stringify(forge(JSON.parse(l))) : l));
      body = Buffer.from(lines.join("\n"));
    }
    if (checkpoint && url.pathname === `/v1/sessions/${checkpoint.session}/log` && upstream.ok) {
      const lines = body.toString("utf8").split("\n").map((l: string) => {
        if (!l.trim()) return l;
        const x = JSON.parse(l) as Record<string, unknown>;
        return JSON.stringify("checkpoint" in x && !("type" in x) ? forgeCheckpoint(x) : x);
      });
      body = Buffer.from(lines.join("\n"));
    }
    const out: Record<string, string> = {};
    upstream.headers.forEach((v, k) => {
      if (k !== "content-length" && k !== "content-encoding" && k !== "transfer-encoding") out[k] = v;
    });
    res.writeHead(upstream.status, out);
    res.end(body);
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const path = req.url ?? "/";
    const isVictim = decodeURIComponent(path.split("?")[0]).endsWith(`:${victim.session}`);
    const isCheckpointVictim = checkpoint !== undefined && decodeURIComponent(path.split("?")[0]).endsWith(`:${checkpoint.session}`);
    const up = new WebSocket(`${target.replace(/^http/, "ws")}${path}`);
    up.on("unexpected-response", (_r, resp) => {
      socket.end(`HTTP/1.1 ${resp.statusCode} refused\r\ncontent-length: 0\r\n\r\n`);
    });
    up.on("error", () => socket.destroy());
    up.on("open", () => {
      wss.handleUpgrade(req, socket, head, (client) => {
        up.on("message", (data) => {
          let text = String(data);
          if (isVictim) {
            const m = JSON.parse(text) as { type?: string; event?: Record<string, unknown> };
            if (m.type === "event" && m.event) text = JSON.stringify({ ...m, event: forge(m.event) });
          }
          if (isCheckpointVictim) {
            const m = JSON.parse(text) as Record<string, unknown>;
            if (m.type === "checkpoint") text = JSON.stringify(forgeCheckpoint(m));
          }
          client.send(text);
        });
        client.on("message", (data) => up.send(String(data)));
        up.on("close", () => client.close());
        client.on("close", () => up.close());
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
