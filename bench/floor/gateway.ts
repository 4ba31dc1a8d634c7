import type * as Party from "partykit/server";

// The latency floor of partykit dev (`npm run bench:floor`): the least a proxy on this
// runtime can do per call, layer by layer, with none of Governor's code. Each route reads
// the body whole (as Governor does, to meter it), forwards it to OPENAI_BASE_URL, and
// answers with the provider's answer:
//
//   /fetch        nothing else: HTTP in, one outbound fetch, HTTP out
//   /stub         first one round trip to a Durable Object (answers at once)
//   /put          ... whose turn awaits one storage.put before answering
//   /put-gated    ... whose turn writes without awaiting: the output gate holds the answer until it is stored
//
// A streamed answer is passed through as it comes (the first byte as soon as the provider sends it).

const ROUTES = new Set(["/fetch", "/stub", "/put", "/put-gated"]);

export default class FloorGateway {
  static async onFetch(req: Party.Request, lobby: Party.FetchLobby): Promise<Response> {
    const path = new URL(req.url).pathname;
    if (path === "/healthz") return new Response("ok");
    if (!ROUTES.has(path)) return new Response("not found", { status: 404 });
    const body = await req.arrayBuffer();
    if (path !== "/fetch") {
      // A small op, as the gateway's reserve is: JSON both ways.
      const res = await lobby.parties.actor.get("floor").fetch({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ mode: path.slice(1), bytes: body.byteLength }) });
      await res.json();
    }
    const base = String((lobby.env as Record<string, unknown>).OPENAI_BASE_URL ?? "").replace(/\/+$/, "");
    const up = await fetch(`${base}/chat/completions`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${String((lobby.env as Record<string, unknown>).OPENAI_API_KEY ?? "")}` }, body });
    if ((up.headers.get("content-type") ?? "").includes("text/event-stream")) return new Response(up.body, { status: up.status, headers: { "content-type": "text/event-stream" } });
    return new Response(await up.text(), { status: up.status, headers: { "content-type": up.headers.get("content-type") ?? "application/json" } });
  }
}
